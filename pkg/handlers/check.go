package handlers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

// check is /oauth2/auth, nginx's auth_request: 200 when the session is
// valid and the policy allows, 401 when there is no valid session, 403 when
// signed in but not allowed. Nothing else: ingress-nginx turns any other
// status into a 500, and with auth-keepalive accepts only 200. Never a
// redirect, never a body.
func (h *handler) check(c *gin.Context, rl *reqLog) *outcome {
	r := c.Request
	// The original request comes from X-Original-URL and -Method, which
	// nginx sets itself; X-Forwarded-* from the client pass through nginx
	// untouched and are never read here. One that is present but broken
	// fails closed.
	if raw := r.Header.Get("X-Original-Url"); raw != "" && !validOriginalURL(raw) {
		return unauthenticated("unparsable X-Original-URL")
	}
	if m := r.Header.Get("X-Original-Method"); m != "" && !validMethod(m) {
		return unauthenticated("invalid X-Original-Method")
	}
	a, refusal := h.appFor(r, originalHost(r), true)
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	if o, ok := a.passesWithoutSession(r.Header.Get("X-Original-Method"), originalPath(r.Header.Get("X-Original-Url")), r.Header); ok {
		return o
	}
	return h.authorize(a, c.Writer, r, rl, originalHost(r), r.URL.RawQuery)
}

// originalPath is the path of an original request URI as the client sent
// it, without the query: "https://host/a%20b?x" gives "/a%20b"; "" when
// there is none.
func originalPath(uri string) string {
	if uri == "" {
		return ""
	}
	if uri[0] != '/' {
		_, rest, ok := strings.Cut(uri, "://")
		i := strings.IndexByte(rest, '/')
		if !ok || i < 0 {
			return ""
		}
		uri = rest[i:]
	}
	if i := strings.IndexAny(uri, "?#"); i >= 0 {
		uri = uri[:i]
	}
	return uri
}

// originalHost is the host of nginx's X-Original-URL (checked by
// validOriginalURL: scheme://host/...), else the check's own Host
// (nginx's auth_request passes the original one). Cut by hand: the check
// parses that URL once already.
func originalHost(r *http.Request) string {
	if raw := r.Header.Get("X-Original-Url"); raw != "" && raw[0] != '/' {
		if _, rest, ok := strings.Cut(raw, "://"); ok {
			if i := strings.IndexAny(rest, "/?#"); i >= 0 {
				rest = rest[:i]
			}
			return rest
		}
	}
	return r.Host
}

// The check's answers.
var allowed = &outcome{status: http.StatusOK, result: metrics.AuthAuthenticated}

func unauthenticated(reason string) *outcome {
	return &outcome{status: http.StatusUnauthorized, result: metrics.AuthUnauthenticated, reason: reason}
}

func forbidden(reason string) *outcome {
	return &outcome{status: http.StatusForbidden, result: metrics.AuthForbidden, reason: reason}
}

func validMethod(m string) bool { return len(m) <= 32 && isToken(m) }

// authorize is the check core every gateway shares: the session (or a
// bearer token), logout records, refresh, then the policy, narrowed by the
// allowed_* parameters in policyQuery: 200, 401 or 403. host is the
// original request's, the assertion's audience unless the app has a name.
func (h *handler) authorize(a *app, w http.ResponseWriter, r *http.Request, rl *reqLog, host, policyQuery string) *outcome {
	st, refusal := h.currentSession(a, w, r, rl)
	if refusal == nil {
		return h.allow(a, w.Header(), rl, st, host, policyQuery)
	}
	if refusal == errNoCookie && a.bearer != nil {
		if st, reason := h.bearerSession(a, r); st != nil {
			return h.allow(a, w.Header(), rl, st, host, policyQuery)
		} else if reason != "" {
			return unauthenticated(reason)
		}
	}
	return refusal
}

// errNoCookie is currentSession's answer to a request without a session.
var errNoCookie = unauthenticated(sessionErrReason(session.ErrNoSession))

// currentSession is the one answer to "is this browser signed in?", for
// the check and /oauth2/userinfo alike: the session from the store, not
// ended by a logout record, its access token refreshed when due (which
// may set a new cookie). Otherwise a 401 outcome that says why (a session
// that is over has its cookies cleared).
func (h *handler) currentSession(a *app, w http.ResponseWriter, r *http.Request, rl *reqLog) (*session.State, *outcome) {
	st, err := a.sessions.Load(r)
	switch {
	case errors.Is(err, session.ErrNoSession):
		return nil, errNoCookie
	case errors.Is(err, session.ErrUnavailable):
		// 401, never a 5xx storm; the cookie stays for when Redis is back.
		// Counted as an error: the check could not decide.
		h.Log.Warn("session store unavailable", "error", err)
		return nil, &outcome{status: http.StatusUnauthorized, result: metrics.AuthError, reason: sessionErrReason(err)}
	case err != nil:
		return nil, unauthenticated(sessionErrReason(err))
	}
	rl.sub = st.Subject
	if h.ended(a, r.Context(), st) {
		a.sessions.Clear(w, r)
		return nil, unauthenticated("session ended by logout")
	}
	res, err := a.refresher.Refresh(r.Context(), st)
	if err == nil && res.Status == refresh.NotDue {
		return st, nil
	}
	return h.refreshed(a, w, r, rl, st, res, err)
}

// refreshed answers a refresh that ran: the one place its outcomes
// become cookies, metrics and log reasons.
func (h *handler) refreshed(a *app, w http.ResponseWriter, r *http.Request, rl *reqLog, st *session.State, res refresh.Result, err error) (*session.State, *outcome) {
	if err != nil {
		return h.refreshFailed(a, w, r, rl, st, res, err)
	}
	result := metrics.RefreshSuccess
	if res.Status == refresh.Shared {
		result = metrics.RefreshShared
	}
	h.Metrics.TokenRefreshes.WithLabelValues(a.name, result).Inc()
	if res.CookieBytes > 0 {
		h.Metrics.SessionCookieBytes.Observe(float64(res.CookieBytes))
	}
	if res.Sealed != nil {
		a.sessions.WriteSealed(w, r, res.Sealed)
	}
	rl.reason = "refreshed (" + result + ")"
	rl.newCookie = res.NewCookie
	return res.State, nil
}

// refreshFailed answers Refresh's typed errors. (Apart from refreshed:
// errors.As makes its targets escape, which would cost every refresh
// three allocations.)
func (h *handler) refreshFailed(a *app, w http.ResponseWriter, r *http.Request, rl *reqLog, st *session.State, res refresh.Result, err error) (*session.State, *outcome) {
	var over *refresh.SessionOver
	var down *refresh.ProviderDown
	var unstored *refresh.StoreFailed
	switch {
	case errors.As(err, &over):
		if over.Rejected {
			h.Metrics.TokenRefreshes.WithLabelValues(a.name, metrics.RefreshInvalidGrant).Inc()
			h.Log.Info("refresh rejected; session over", "sub", st.Subject, "error", over.Err)
		}
		a.sessions.Clear(w, r)
		return nil, unauthenticated(over.Reason)
	case errors.As(err, &down):
		// The provider is down, slow or broken: the session passes for
		// refreshGrace past the access token's expiry; a later check tries again.
		h.Metrics.TokenRefreshes.WithLabelValues(a.name, metrics.RefreshIdPUnavailable).Inc()
		h.Log.Warn("refresh failed; provider unavailable", "sub", st.Subject, "error", down.Err)
		if !down.InGrace {
			return nil, unauthenticated("refresh failed, grace over")
		}
		rl.reason = "refresh failed, within grace"
		return res.State, nil
	case errors.As(err, &unstored):
		// This check passes on the new tokens; a later one stores them.
		h.Metrics.TokenRefreshes.WithLabelValues(a.name, metrics.RefreshStoreError).Inc()
		h.Log.Error("refreshed session could not be stored; the next check retries", "sub", st.Subject, "error", unstored.Err)
		rl.reason = "refreshed, but the session could not be stored"
		return res.State, nil
	}
	return nil, unauthenticated("refresh: " + err.Error())
}

// ended reports whether a logout record covers the session: its provider
// session (sid), its user (sub), or the session itself (a sign-out here).
func (h *handler) ended(a *app, ctx context.Context, st *session.State) bool {
	for _, k := range [...]struct {
		kind logout.Kind
		key  string
	}{{logout.Session, st.ID}, {logout.SID, a.logoutKey(st.SID)}, {logout.Subject, a.logoutKey(st.Subject)}} {
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
func (h *handler) allow(a *app, hdr http.Header, rl *reqLog, st *session.State, host, policyQuery string) *outcome {
	rl.sub = st.Subject
	id := policy.Identity{Email: st.Email, Groups: st.Groups, Claims: st.Claims}
	if ok, reason := a.rules.Decide(id); !ok {
		return forbidden(string(reason))
	}
	if policyQuery != "" {
		rules, err := policy.ParseQuery(policyQuery)
		if err != nil {
			// A broken annotation must not open the door: deny.
			return forbidden("malformed allowed_* query")
		}
		if ok, reason := rules.DecideQuery(id); !ok {
			return forbidden(string(reason) + " (query)")
		}
	}
	var signed string
	if h.Assertions != nil {
		var err error
		signed, err = h.Assertions.Token(assertion.Identity{Session: st.ID, Subject: st.Subject, Email: st.Email,
			PreferredUsername: st.PreferredUsername, Groups: st.Groups, SID: st.SID}, audience(a, host))
		if err != nil {
			// Only the randomness source can fail here; no 5xx on a check.
			h.Log.Error("assertion not signed", "error", err)
			return unauthenticated("assertion could not be signed")
		}
	}
	h.identityHeaders(hdr, st, signed)
	return allowed
}

// audience is an assertion's aud: the app's name, else the original
// request's host without its port, in lower case.
func audience(a *app, host string) string {
	if a.name != "" {
		return a.name
	}
	if strings.IndexByte(host, ':') >= 0 { // SplitHostPort's error for no port allocates
		if hp, _, err := net.SplitHostPort(host); err == nil {
			host = hp
		}
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// bearerSession checks Authorization: Bearer <JWT> when the app accepts
// bearer tokens (authorization.bearerTokens for the top-level client,
// apps[].authorization.bearer for an app): a token with an accepted
// issuer, signature, expiry and audience stands in for a session for this
// one check. A token that is refused comes with the reason.
func (h *handler) bearerSession(a *app, r *http.Request) (*session.State, string) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" || strings.Count(raw, ".") != 2 {
		return nil, ""
	}
	tok, err := a.bearer(r.Context(), raw)
	if err != nil {
		h.Log.Debug("bearer token rejected", "app", a.name, "error", err)
		return nil, bearerReason(err)
	}
	st, err := a.identity.Bearer(tok)
	if err != nil {
		return nil, "bearer token claims unreadable"
	}
	return st, ""
}

// bearerReason is the log reason of a refused bearer token: one of a few
// fixed strings, never the token or what it claims.
func bearerReason(err error) string {
	for _, reason := range []error{provider.ErrBearerIssuerUnknown, provider.ErrBearerAudience,
		provider.ErrBearerExpired, provider.ErrBearerIssuerUnavailable, provider.ErrBearerMalformed} {
		if errors.Is(err, reason) {
			return reason.Error()
		}
	}
	return "bearer token rejected"
}

// identityHeaders sets the identity headers the gateway copies upstream.
// Every enabled header is present, empty when the session has no value: a
// gateway that copies only the headers an answer carries (Envoy's
// allowed_upstream_headers, Envoy Gateway's headersToBackend) would
// otherwise let a client's own X-Auth-Request-Groups through. signed is
// the assertion, set under assertion.header when it is on.
func (h *handler) identityHeaders(hdr http.Header, st *session.State, signed string) {
	cfg := h.Config.Headers
	// One backing array for every header value: this runs on every check.
	vals := make([]string, 0, 7)
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
	if h.Assertions != nil {
		set(h.assertionHeader, signed)
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
