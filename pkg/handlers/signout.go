package handlers

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// signOut is /oauth2/sign_out (GET and POST): it revokes the refresh token,
// then the access token, at the provider (RFC 7009), records the session as
// ended (so a copy of the cookie stops passing too), clears every session
// cookie, and ends the provider's session (OpenID Connect RP-Initiated
// Logout) or returns to a valid rd. A revocation failure is logged and
// counted and never stops the sign-out.
func (h *handler) signOut(c *gin.Context, rl *reqLog) *outcome {
	r := c.Request
	form, refusal := readForm(c.Writer, r, maxSignOutBody)
	if refusal != nil {
		return refusal
	}
	a, refusal := h.appFor(r, h.requestHost(r), true)
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	if why := h.crossSite(r); why != "" {
		// Another site must not end the session (and the provider's) with a
		// link or a form: a cross-site GET gets a page asking to confirm, a
		// cross-site POST is refused. Same-site links keep working.
		if r.Method == http.MethodGet {
			return h.signOutConfirmation(r, form.Get("rd"), why+": asked to confirm")
		}
		return &outcome{status: http.StatusForbidden, reason: why + ": refused",
			message: "Sign-out was requested by another site. Use the sign-out button of this site."}
	}
	h.Metrics.SignOuts.Inc()
	reason := ""
	st, err := a.sessions.Load(r)
	switch {
	case err != nil:
		reason = "no valid session: " + sessionErrReason(err)
	case h.ended(a, r.Context(), st):
		rl.sub, reason = st.Subject, "session already ended"
	default:
		rl.sub = st.Subject
		if h.revokeTokens(a, r.Context(), st.Tokens()) {
			reason = "revocation failed"
		}
		h.endSession(a, r, st)
	}
	a.sessions.Clear(c.Writer, r)

	returnURL, rdGiven := h.signOutReturnURL(r, form.Get("rd"))
	target := returnURL
	if end, ok := h.endSessionURL(a, r, st, returnURL, rdGiven); ok {
		target = end
	}
	o := redirectTo(http.StatusFound, target, "signed_out")
	o.reason = reason
	return o
}

// sessionDeleter is a store that keeps sessions server-side: deleting one
// ends it for every copy of its cookie.
type sessionDeleter interface {
	Delete(ctx context.Context, r *http.Request) error
}

// endSession makes sure a copy of the cookie stops passing: the session
// deleted where it lives, else a logout record of its ID (which every
// replica then holds until the cookie could expire).
func (h *handler) endSession(a *app, r *http.Request, st *session.State) {
	ctx := context.WithoutCancel(r.Context())
	if d, ok := a.sessions.(sessionDeleter); ok {
		err := d.Delete(ctx, r)
		if err == nil {
			return
		}
		h.Log.Warn("could not delete the session from the store; recording the sign-out instead", "sub", st.Subject, "error", err)
	}
	// The session ID is unique, so the record covers it whatever its
	// creation time (at = its expiry), and lasts as long as the cookie could.
	if err := h.Logouts.End(ctx, logout.Session, st.ID, st.ExpiresAt, st.ExpiresAt); err != nil {
		h.Log.Warn("could not record the sign-out", "sub", st.Subject, "error", err)
	}
}

// revokeTokens revokes the refresh token first (revoking it usually
// revokes its access tokens too), then the access token; failed says one
// of them failed.
func (h *handler) revokeTokens(a *app, ctx context.Context, tokens session.Tokens) (failed bool) {
	// The browser may leave; the provider should still hear of it.
	ctx = context.WithoutCancel(ctx)
	for _, t := range []struct{ token, hint string }{
		{tokens.RefreshToken, "refresh_token"},
		{tokens.AccessToken, "access_token"},
	} {
		if t.token == "" {
			continue
		}
		err := a.provider.Revoke(ctx, t.token, t.hint)
		result := metrics.RevocationSuccess
		switch {
		case err == nil:
		case errors.Is(err, provider.ErrUnsupported):
			result = metrics.RevocationUnsupported
		default:
			result = metrics.RevocationFailure
			failed = true
			h.Log.Warn("token revocation failed; signing out anyway", "token_type", t.hint, "error", err)
		}
		h.Metrics.TokenRevocations.WithLabelValues(t.hint, result).Inc()
	}
	return failed
}

// signOutReturnURL is a valid rd, or "/" when rd is absent or invalid.
// rdGiven says whether a valid rd came.
func (h *handler) signOutReturnURL(r *http.Request, raw string) (string, bool) {
	if raw == "" {
		return "/", false
	}
	rd, ok := h.redirects.Sanitize(raw, h.requestHost(r))
	return rd, ok
}

// maxSignOutBody bounds a sign-out form: it holds rd at most.
const maxSignOutBody = 8 << 10

// readForm returns the query parameters and, for a POST, the
// url-encoded body, read through a limit of max bytes. Multipart (which
// net/http would buffer up to 32 MiB, then spill to files) and other body
// types are refused with 415, a larger body with 413.
func readForm(w http.ResponseWriter, r *http.Request, max int64) (url.Values, *outcome) {
	if r.Method == http.MethodPost && r.ContentLength != 0 {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/x-www-form-urlencoded" {
			return nil, badRequest(http.StatusUnsupportedMediaType,
				"The request body must be application/x-www-form-urlencoded.", "body type "+bounded(mt, 64)+" refused")
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, badRequest(http.StatusRequestEntityTooLarge,
				fmt.Sprintf("The request body is larger than %d bytes.", max), "body over "+strconv.FormatInt(max, 10)+" bytes")
		}
		return nil, badRequest(http.StatusBadRequest, "The request is not a valid form.", "unparsable form")
	}
	return r.Form, nil
}

// badRequest is a request refused as malformed: an error page for a
// browser, an invalid_request for a program.
func badRequest(status int, message, reason string) *outcome {
	return &outcome{status: status, code: "invalid_request", message: message, reason: reason}
}

// bounded cuts a client's value for a log line.
func bounded(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// crossSite names why a sign-out request comes from another site, or "":
// the browser says so (Sec-Fetch-Site: cross-site), or the Origin it sends
// is neither this host nor one of authorization.redirectDomains. A request
// with neither header (a direct navigation in an older browser, curl)
// passes.
func (h *handler) crossSite(r *http.Request) string {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return "cross-site request (Sec-Fetch-Site)"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return ""
	}
	if origin == "null" || !h.redirects.Valid(origin+"/", h.requestHost(r)) {
		return "foreign Origin"
	}
	return ""
}

var confirmTemplate = template.Must(template.New("confirm").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign out</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em">
<h1>Sign out?</h1>
<p>Another site sent you here to sign out.</p>
<form method="post" action="{{.Action}}">{{if .RD}}<input type="hidden" name="rd" value="{{.RD}}">{{end}}
<button type="submit">Sign out</button></form>
</body></html>
`))

// signOutConfirmation asks the user to confirm a sign-out that another
// site asked for, with a one-button form that posts it from this site.
func (h *handler) signOutConfirmation(r *http.Request, rd, reason string) *outcome {
	if rd != "" {
		var ok bool
		if rd, ok = h.redirects.Sanitize(rd, h.requestHost(r)); !ok {
			rd = ""
		}
	}
	data := struct{ Action, RD string }{h.prefix + "/sign_out", rd}
	return &outcome{status: http.StatusOK, result: "confirm", reason: reason, render: func(c *gin.Context) {
		writePage(c, http.StatusOK, confirmTemplate, data)
	}}
}

// endSessionURL builds the provider's end_session_endpoint redirect with
// id_token_hint, client_id and post_logout_redirect_uri (the configured
// oidc.postLogoutRedirectURL, else a valid rd made absolute).
func (h *handler) endSessionURL(a *app, r *http.Request, st *session.State, returnURL string, rdGiven bool) (string, bool) {
	eps, err := a.provider.Endpoints()
	if err != nil || eps.EndSession == "" {
		return "", false
	}
	u, err := url.Parse(eps.EndSession)
	if err != nil {
		return "", false
	}
	q := u.Query()
	q.Set("client_id", a.oidc.ClientID)
	if st != nil {
		if id := a.sessions.IDToken(r, st); id != "" {
			q.Set("id_token_hint", id)
		}
	}
	postLogout := a.oidc.PostLogoutRedirectURL
	if postLogout == "" && rdGiven {
		postLogout = returnURL
		if strings.HasPrefix(postLogout, "/") {
			postLogout = h.requestScheme(r) + "://" + h.requestHost(r) + postLogout
		}
	}
	if postLogout != "" {
		q.Set("post_logout_redirect_uri", postLogout)
		if strings.HasSuffix(u.Path, "/v2/logout") {
			// Auth0's own logout endpoint (oidc.endSessionURL: its OIDC
			// one is off by default) reads returnTo instead.
			q.Set("returnTo", postLogout)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), true
}
