package handlers

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/session"
)

// identity is what extauth keeps of a user's claims, named per oidc.claims.
type identity struct {
	user, email, preferredUsername string
	groups                         []string
	// present marks the fields a source stated, even as empty: a refreshed
	// ID token with "groups": [] removes the groups.
	present claimSet
}

// claimSet is a set of identity fields.
type claimSet uint8

const (
	claimUser claimSet = 1 << iota
	claimEmail
	claimPreferredUsername
	claimGroups
	allClaims = claimUser | claimEmail | claimPreferredUsername | claimGroups
)

// identityOf is a session's identity, every field stated.
func identityOf(st *session.State) identity {
	return identity{user: st.User, email: st.Email, preferredUsername: st.PreferredUsername, groups: st.Groups, present: allClaims}
}

// readIdentity reads the configured claims; present says which the
// claims stated, so the callback can ask the userinfo endpoint for the
// others.
func (h *handler) readIdentity(claims map[string]any) identity {
	names := h.Config.OIDC.Claims
	var id identity
	if v, ok := claims[names.User]; ok {
		id.user, id.present = claimString(v), id.present|claimUser
	}
	verified, stated := claims["email_verified"]
	if v, ok := claims[names.Email]; ok || (stated && explicitlyFalse(verified)) {
		// An address the provider says it has not verified proves nothing
		// about who signed in: it is not used for headers or email rules.
		if !explicitlyFalse(verified) {
			id.email = claimString(v)
		}
		id.present |= claimEmail
	}
	if v, ok := claims[names.PreferredUsername]; ok {
		id.preferredUsername, id.present = claimString(v), id.present|claimPreferredUsername
	}
	if v, ok := claims[names.Groups]; ok {
		id.groups, id.present = claimStrings(v), id.present|claimGroups
	}
	return id
}

// missing is the set of fields id has not stated.
func (id identity) missing() claimSet { return allClaims &^ id.present }

// fill takes from other the fields that id lacks and other states.
func (id *identity) fill(other identity) {
	take := other.present &^ id.present
	if take&claimUser != 0 {
		id.user = other.user
	}
	if take&claimEmail != 0 {
		id.email = other.email
	}
	if take&claimPreferredUsername != 0 {
		id.preferredUsername = other.preferredUsername
	}
	if take&claimGroups != 0 {
		id.groups = other.groups
	}
	id.present |= take
}

// apply writes the identity into a state.
func (id identity) apply(st *session.State) {
	st.User, st.Email, st.PreferredUsername, st.Groups = id.user, id.email, id.preferredUsername, id.groups
}

// claimSource is a verified token or a userinfo answer.
type claimSource interface{ Claims(v any) error }

// decodeClaims reads claims with numbers as json.Number: a numeric claim
// (an Okta or Google sub, an employee number) is kept as the provider
// wrote it, where float64 would print 2.48289761001e+11 or round it.
func decodeClaims(src claimSource) (map[string]any, error) {
	var raw json.RawMessage
	if err := src.Claims(&raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	return claims, nil
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
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
	claims, err := decodeClaims(tok)
	if err != nil {
		return nil
	}
	st := &session.State{Subject: tok.Subject}
	h.readIdentity(claims).apply(st)
	return st
}
