package handlers

import (
	"fmt"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/session"
)

// identity is what extauth keeps of a user's claims, named per oidc.claims.
type identity struct {
	user, email, preferredUsername string
	groups                         []string
}

// readIdentity reads the configured claims and lists the ones absent, so
// the callback can ask the userinfo endpoint for exactly those.
func (h *handler) readIdentity(claims map[string]any) (identity, []string) {
	names := h.Config.OIDC.Claims
	var id identity
	var missing []string
	if v, ok := claims[names.User]; ok {
		id.user = claimString(v)
	} else {
		missing = append(missing, names.User)
	}
	if v, ok := claims[names.Email]; ok {
		// An address the provider says it has not verified proves nothing
		// about who signed in: it is not used for headers or email rules.
		if !explicitlyFalse(claims["email_verified"]) {
			id.email = claimString(v)
		}
	} else {
		missing = append(missing, names.Email)
	}
	if v, ok := claims[names.PreferredUsername]; ok {
		id.preferredUsername = claimString(v)
	} else {
		missing = append(missing, names.PreferredUsername)
	}
	if v, ok := claims[names.Groups]; ok {
		id.groups = claimStrings(v)
	} else {
		missing = append(missing, names.Groups)
	}
	return id, missing
}

// merge fills the fields of id that are empty from other.
func (id *identity) merge(other identity) {
	if id.user == "" {
		id.user = other.user
	}
	if id.email == "" {
		id.email = other.email
	}
	if id.preferredUsername == "" {
		id.preferredUsername = other.preferredUsername
	}
	if len(id.groups) == 0 {
		id.groups = other.groups
	}
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64, bool:
		return fmt.Sprint(v)
	default:
		return ""
	}
}

// claimStrings reads a list claim; some providers send a lone string.
func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return nil
		}
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s := claimString(e); s != "" {
				out = append(out, s)
			}
		}
		return out
	default:
		return nil
	}
}

func explicitlyFalse(v any) bool {
	switch v := v.(type) {
	case bool:
		return !v
	case string:
		return strings.EqualFold(v, "false")
	default:
		return false
	}
}

// bearerSession checks Authorization: Bearer <JWT> when bearer tokens are
// on: a token signed by the provider, with the accepted issuer, expiry and
// audience, stands in for a session for this one check.
func (h *handler) bearerSession(c *gin.Context, rl *reqLog) *session.State {
	raw, ok := strings.CutPrefix(c.Request.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" || strings.Count(raw, ".") != 2 {
		return nil
	}
	tok, err := h.Provider.VerifyBearer(c.Request.Context(), raw)
	if err != nil {
		rl.reason = "bearer token rejected"
		h.Log.Debug("bearer token rejected", "error", err)
		return nil
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil
	}
	id, _ := h.readIdentity(claims)
	return &session.State{
		Subject: tok.Subject, User: id.user, Email: id.email,
		PreferredUsername: id.preferredUsername, Groups: id.groups,
	}
}
