package handlers

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
	"github.com/extauth/extauth/pkg/session"
)

// noStore is shared by every answer of the check; net/http only reads it.
var noStore = []string{"no-store"}

// check is /oauth2/auth, nginx's auth_request: 200 when the session is
// valid and the policy allows, 401 when there is no valid session, 403 when
// signed in but not allowed. Nothing else: ingress-nginx turns any other
// status into a 500, and with auth-keepalive accepts only 200. Never a
// redirect, never a body.
func (h *handler) check(c *gin.Context, rl *reqLog) {
	h.serveCheck(c, rl, metrics.CheckNginx, func() (string, int) {
		r := c.Request
		// The original request comes from X-Original-URL and -Method, which
		// nginx sets itself; X-Forwarded-* from the client pass through nginx
		// untouched and are never read here. One that is present but broken
		// fails closed.
		if raw := r.Header.Get("X-Original-Url"); raw != "" && !validOriginalURL(raw) {
			rl.reason = "unparsable X-Original-URL"
			return metrics.AuthUnauthenticated, http.StatusUnauthorized
		}
		if m := r.Header.Get("X-Original-Method"); m != "" && !validMethod(m) {
			rl.reason = "invalid X-Original-Method"
			return metrics.AuthUnauthenticated, http.StatusUnauthorized
		}
		return h.authorize(c, rl, r.URL.RawQuery)
	})
}

// serveCheck answers a check of any gateway: it runs decide, writes the
// status with Cache-Control: no-store and no body, and counts the result.
// Only a 200 carries identity or token headers: every other answer (401,
// 403, a sign-in 302, Caddy's 307) goes to the browser as it is, so it
// keeps Location, Set-Cookie and Cache-Control and nothing else.
func (h *handler) serveCheck(c *gin.Context, rl *reqLog, endpoint string, decide func() (string, int)) {
	start := time.Now()
	defer func() {
		// A panic is answered (500) and logged by wrap; it is counted here.
		if v := recover(); v != nil {
			h.Metrics.ObserveAuth(endpoint, metrics.AuthError, time.Since(start).Seconds())
			panic(v)
		}
	}()
	result, status := decide()
	rl.result = result
	hdr := c.Writer.Header()
	if status != http.StatusOK {
		for name := range hdr {
			if name != "Location" && name != "Set-Cookie" {
				delete(hdr, name)
			}
		}
	}
	hdr["Cache-Control"] = noStore
	c.Status(status)
	c.Writer.WriteHeaderNow()
	h.Metrics.ObserveAuth(endpoint, result, time.Since(start).Seconds())
}

func validMethod(m string) bool { return len(m) <= 32 && isToken(m) }

// authorize is the check core every gateway shares: the session (or a
// bearer token), logout records, refresh, then the policy, narrowed by the
// allowed_* parameters in policyQuery. It returns the metric result and
// 200, 401 or 403.
func (h *handler) authorize(c *gin.Context, rl *reqLog, policyQuery string) (string, int) {
	st, err := h.currentSession(c, rl)
	switch {
	case err == nil:
		return h.allow(c, rl, st, policyQuery)
	case errors.Is(err, session.ErrNoSession) && h.Config.Authorization.BearerTokens:
		if st = h.bearerSession(c, rl); st != nil {
			return h.allow(c, rl, st, policyQuery)
		}
	case errors.Is(err, session.ErrUnavailable):
		// 401, never a 5xx storm; the cookie stays for when Redis is back.
		// Counted as an error: the check could not decide.
		return metrics.AuthError, http.StatusUnauthorized
	}
	return metrics.AuthUnauthenticated, http.StatusUnauthorized
}

// errSessionOver: the session loaded but is over (a logout record, an
// expired access token without a refresh token, a refused refresh).
var errSessionOver = errors.New("session over")

// currentSession is the one answer to "is this browser signed in?", for
// the check and /oauth2/userinfo alike: the session from the store, not
// ended by a logout record, its access token refreshed when due (which
// may set a new cookie). An error means no: the store's (ErrNoSession,
// ErrUnavailable, ...) or errSessionOver; rl.reason says why, and a
// session that is over has its cookies cleared.
func (h *handler) currentSession(c *gin.Context, rl *reqLog) (*session.State, error) {
	r := c.Request
	st, err := h.Sessions.Load(r)
	if err != nil {
		rl.reason = sessionErrReason(err)
		if errors.Is(err, session.ErrUnavailable) {
			h.Log.Warn("session store unavailable", "error", err)
		}
		return nil, err
	}
	rl.sub = st.Subject
	if h.ended(c, st) {
		rl.reason = "session ended by logout"
		h.Sessions.Clear(c.Writer, r)
		return nil, errSessionOver
	}
	if h.needsRefresh(st, h.Now()) {
		if st = h.refreshSession(c, rl, st); st == nil {
			return nil, errSessionOver
		}
	}
	return st, nil
}

// ended reports whether a logout record covers the session: its provider
// session (sid), its user (sub), or the session itself (a sign-out here).
func (h *handler) ended(c *gin.Context, st *session.State) bool {
	ctx := c.Request.Context()
	for _, k := range [...]struct {
		kind logout.Kind
		key  string
	}{{logout.Session, st.ID}, {logout.SID, st.SID}, {logout.Subject, st.Subject}} {
		ended, err := h.Logouts.Ended(ctx, k.kind, k.key, st.CreatedAt)
		if err != nil {
			// The record cannot be read: let the cookie decide rather than
			// sign everybody out; the error is logged once per check.
			h.Log.Warn("logout record lookup failed", "error", err)
			return false
		}
		if ended {
			return true
		}
	}
	return false
}

// allow applies the policy to a valid session and sets the identity headers.
func (h *handler) allow(c *gin.Context, rl *reqLog, st *session.State, policyQuery string) (string, int) {
	rl.sub = st.Subject
	id := policy.Identity{Email: st.Email, Groups: st.Groups}
	if ok, reason := h.rules.Decide(id); !ok {
		rl.reason = string(reason)
		return metrics.AuthForbidden, http.StatusForbidden
	}
	if policyQuery != "" {
		rules, err := policy.ParseQuery(policyQuery)
		if err != nil {
			// A broken annotation must not open the door: deny.
			rl.reason = "malformed allowed_* query"
			return metrics.AuthForbidden, http.StatusForbidden
		}
		if ok, reason := rules.DecideQuery(id); !ok {
			rl.reason = string(reason) + " (query)"
			return metrics.AuthForbidden, http.StatusForbidden
		}
	}
	h.identityHeaders(c.Writer.Header(), st)
	return metrics.AuthAuthenticated, http.StatusOK
}

// identityHeaders sets the identity headers the gateway copies upstream.
// Every enabled header is present, empty when the session has no value: a
// gateway that copies only the headers an answer carries (Envoy's
// allowed_upstream_headers, Envoy Gateway's headersToBackend) would
// otherwise let a client's own X-Auth-Request-Groups through.
func (h *handler) identityHeaders(hdr http.Header, st *session.State) {
	cfg := h.Config.Headers
	// One backing array for every header value: this runs on every check.
	vals := make([]string, 0, 6)
	set := func(name, value string) {
		vals = append(vals, value)
		hdr[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if cfg.User {
		set("X-Auth-Request-User", st.User)
	}
	if cfg.Email {
		set("X-Auth-Request-Email", st.Email)
	}
	if cfg.PreferredUsername {
		set("X-Auth-Request-Preferred-Username", st.PreferredUsername)
	}
	if cfg.Groups {
		set("X-Auth-Request-Groups", strings.Join(st.Groups, ","))
	}
	if cfg.AccessToken || cfg.Authorization {
		at := st.Tokens().AccessToken
		if cfg.AccessToken {
			set("X-Auth-Request-Access-Token", at)
		}
		if cfg.Authorization {
			if at != "" {
				at = "Bearer " + at
			}
			set("Authorization", at)
		}
	}
}

// validOriginalURL accepts what nginx sends ($scheme://$http_host$request_uri)
// and plain request URIs; anything else is a broken or forged header.
func validOriginalURL(raw string) bool {
	if len(raw) > 8192 {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x21 || raw[i] == 0x7f {
			return false
		}
	}
	if raw[0] == '/' {
		_, err := url.ParseRequestURI(raw)
		return err == nil
	}
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func sessionErrReason(err error) string {
	switch {
	case errors.Is(err, session.ErrNoSession):
		return "no session cookie"
	case errors.Is(err, session.ErrExpired):
		return "session expired"
	case errors.Is(err, session.ErrNotFound):
		return "session not in the store (signed out or expired)"
	case errors.Is(err, session.ErrUnavailable):
		return "session store unavailable"
	default:
		return "invalid session cookie"
	}
}
