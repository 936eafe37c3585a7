package handlers

import (
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
)

const (
	// backchannelEvent is the events member that makes a JWT a logout token
	// (Back-Channel Logout 1.0 §2.4).
	backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"
	// maxLogoutBody bounds the form: a logout token is one or two KB.
	maxLogoutBody = 32 << 10
	// A logout token is accepted from iatSkew in the future (clocks differ)
	// to iatMaxAge in the past; its jti is remembered for jtiTTL, which
	// outlasts that whole window, so a replay is always caught.
	iatSkew   = 5 * time.Minute
	iatMaxAge = 10 * time.Minute
	jtiTTL    = iatSkew + iatMaxAge
)

// backchannelLogout is /oauth2/backchannel_logout (OpenID Connect
// Back-Channel Logout 1.0): the provider POSTs a signed logout_token and the
// sessions it names (by sid, else by sub) stop passing the check, which reads
// the logout records (see ended in check.go). 200 with an empty body when
// accepted (§2.8); 400 invalid_request, changing nothing, when the token is
// not valid; 503 when we cannot decide now, so that the provider retries.
func (h *handler) backchannelLogout(c *gin.Context, rl *reqLog) *outcome {
	if o := h.endByLogoutToken(c.Writer, c.Request, rl); o != nil {
		o.result = metrics.BackchannelRejected
		return o
	}
	return &outcome{status: http.StatusOK, result: metrics.BackchannelAccepted}
}

// logoutRefused is a logout token refused (§2.8): 400 invalid_request
// with our reason, never the token or a claim value; detail goes to the
// log line only.
func logoutRefused(reason, detail string) *outcome {
	o := badRequest(http.StatusBadRequest, reason, reason)
	if detail != "" {
		o.reason += ": " + detail
	}
	return o
}

// logoutUnavailable: we cannot decide now; the provider retries.
func logoutUnavailable(reason, detail string) *outcome {
	o := &outcome{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", reason: reason}
	if detail != "" {
		o.reason += ": " + detail
	}
	return o
}

// endByLogoutToken validates the logout token (§2.6) and records the
// logout; nil when it did, else why not.
func (h *handler) endByLogoutToken(w http.ResponseWriter, r *http.Request, rl *reqLog) *outcome {
	if _, refusal := readForm(w, r, maxLogoutBody); refusal != nil {
		return refusal
	}
	// The body only: a token in the query string would end up in access logs.
	raws := r.PostForm["logout_token"]
	switch {
	case len(raws) == 0 || raws[0] == "":
		return logoutRefused("missing logout_token", "")
	case len(raws) > 1:
		return logoutRefused("more than one logout_token", "")
	}

	ctx := r.Context()
	// §2.6 steps 2-3: signature with the provider's keys (alg none is
	// refused), iss, aud. exp and iat are checked below with our clock.
	a, refusal := h.appOfLogoutToken(r, raws[0])
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	tok, err := a.provider.VerifyLogoutToken(ctx, raws[0])
	if errors.Is(err, provider.ErrNotReady) {
		return logoutUnavailable("provider not discovered yet", "")
	}
	if err != nil {
		// go-oidc's errors name what failed, never the token itself.
		return logoutRefused("logout token not valid", err.Error())
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return logoutRefused("logout token claims unreadable", "")
	}

	now := h.Now()
	iat, ok := numericDate(claims["iat"])
	switch {
	case !ok:
		return logoutRefused("iat missing or not a number", "")
	case iat.After(now.Add(iatSkew)):
		return logoutRefused("iat in the future", "")
	case iat.Before(now.Add(-iatMaxAge)):
		return logoutRefused("iat too old", "")
	}
	// exp is REQUIRED since the 2022 errata but absent from older providers'
	// tokens: checked when present.
	if v, present := claims["exp"]; present {
		exp, ok := numericDate(v)
		if !ok || !now.Before(exp) {
			return logoutRefused("logout token expired", "")
		}
	}
	// §2.6 step 5: events holds the back-channel member, a JSON object.
	events, _ := claims["events"].(map[string]any)
	if _, ok := events[backchannelEvent].(map[string]any); !ok {
		return logoutRefused("events claim lacks the back-channel logout event", "")
	}
	// §2.6 step 4: sid, sub or both; a malformed one is refused rather
	// than ignored, lest a bad sid widen the logout to the whole user.
	sid, sidOK := optionalString(claims, "sid")
	sub, subOK := optionalString(claims, "sub")
	switch {
	case !sidOK || !subOK:
		return logoutRefused("sid or sub is not a non-empty string", "")
	case sid == "" && sub == "":
		return logoutRefused("neither sid nor sub", "")
	}
	rl.sub = sub
	// §2.6 step 6: a nonce marks an ID token, which must never pass as a
	// logout token.
	if _, present := claims["nonce"]; present {
		return logoutRefused("nonce present", "")
	}
	jti, _ := claims["jti"].(string)
	if jti == "" {
		return logoutRefused("jti missing", "")
	}
	// §2.6 step 7, last of all so that an invalid token never uses up a jti.
	// A replay would otherwise end sessions signed in since the logout.
	// The record ends sessions created before now only (the same user
	// signing in again passes) and lives as long as the longest of them.
	// Taking the jti and writing the record are one operation: when it
	// fails (503), the provider's retry is not refused as a replay.
	kind, key := logout.SID, sid
	if sid == "" {
		kind, key = logout.Subject, sub
	}
	first, err := h.Logouts.EndOnce(ctx, a.logoutKey(jti), now.Add(jtiTTL), kind, a.logoutKey(key), now, now.Add(h.Config.Session.MaxAge.Duration))
	if err != nil {
		return logoutUnavailable("logout store unavailable", err.Error())
	}
	if !first {
		return logoutRefused("jti already used", "")
	}
	return nil
}

// numericDate reads a JWT NumericDate (seconds since the epoch, possibly
// fractional) as decoded by encoding/json.
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok || f < 0 || f > 1e12 { // 1e12 s is year 33658: nonsense, not a date
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// optionalString returns claim name when it is a non-empty string, "" when
// absent; ok is false when it is present but something else.
func optionalString(claims map[string]any, name string) (s string, ok bool) {
	v, present := claims[name]
	if !present {
		return "", true
	}
	s, _ = v.(string)
	return s, s != ""
}
