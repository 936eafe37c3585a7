package handlers

import (
	"context"
	"errors"
	"net/http"
	"net/url"
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
func (h *handler) signOut(c *gin.Context, rl *reqLog) {
	r := c.Request
	h.Metrics.SignOuts.Inc()
	st, err := h.Sessions.Load(r)
	switch {
	case err != nil:
		rl.reason = "no valid session: " + sessionErrReason(err)
	case h.ended(c, st):
		rl.sub, rl.reason = st.Subject, "session already ended"
	default:
		rl.sub = st.Subject
		h.revokeTokens(r.Context(), st.Tokens(), rl)
		// The session ID is unique, so the record covers it whatever its
		// creation time (at = its expiry), and lasts as long as the cookie could.
		if err := h.Logouts.End(r.Context(), logout.Session, st.ID, st.ExpiresAt, st.ExpiresAt); err != nil {
			h.Log.Warn("could not record the sign-out", "sub", st.Subject, "error", err)
		}
	}
	h.Sessions.Clear(c.Writer, r)
	c.Header("Cache-Control", "no-store")

	returnURL, rdGiven := h.signOutReturnURL(r)
	target := returnURL
	if end, ok := h.endSessionURL(r, st, returnURL, rdGiven); ok {
		target = end
	}
	rl.result = "signed_out"
	c.Redirect(http.StatusFound, target)
}

// revokeTokens revokes the refresh token first (revoking it usually
// revokes its access tokens too), then the access token.
func (h *handler) revokeTokens(ctx context.Context, tokens session.Tokens, rl *reqLog) {
	// The browser may leave; the provider should still hear of it.
	ctx = context.WithoutCancel(ctx)
	for _, t := range []struct{ token, hint string }{
		{tokens.RefreshToken, "refresh_token"},
		{tokens.AccessToken, "access_token"},
	} {
		if t.token == "" {
			continue
		}
		err := h.Provider.Revoke(ctx, t.token, t.hint)
		result := metrics.RevocationSuccess
		switch {
		case err == nil:
		case errors.Is(err, provider.ErrUnsupported):
			result = metrics.RevocationUnsupported
		default:
			result = metrics.RevocationFailure
			rl.reason = "revocation failed"
			h.Log.Warn("token revocation failed; signing out anyway", "token_type", t.hint, "error", err)
		}
		h.Metrics.TokenRevocations.WithLabelValues(t.hint, result).Inc()
	}
}

// signOutReturnURL is a valid rd (made absolute, as the provider needs), or
// "/" when rd is absent or invalid. rdGiven says whether a valid rd came.
func (h *handler) signOutReturnURL(r *http.Request) (string, bool) {
	raw := r.URL.Query().Get("rd")
	if raw == "" && r.Method == http.MethodPost {
		raw = r.PostFormValue("rd")
	}
	if raw == "" {
		return "/", false
	}
	rd, ok := h.redirects.Sanitize(raw, h.requestHost(r))
	return rd, ok
}

// endSessionURL builds the provider's end_session_endpoint redirect with
// id_token_hint, client_id and post_logout_redirect_uri (the configured
// oidc.postLogoutRedirectURL, else a valid rd made absolute).
func (h *handler) endSessionURL(r *http.Request, st *session.State, returnURL string, rdGiven bool) (string, bool) {
	eps, err := h.Provider.Endpoints()
	if err != nil || eps.EndSession == "" {
		return "", false
	}
	u, err := url.Parse(eps.EndSession)
	if err != nil {
		return "", false
	}
	q := u.Query()
	q.Set("client_id", h.Config.OIDC.ClientID)
	if st != nil {
		if id := h.Sessions.IDToken(r, st); id != "" {
			q.Set("id_token_hint", id)
		}
	}
	postLogout := h.Config.OIDC.PostLogoutRedirectURL
	if postLogout == "" && rdGiven {
		postLogout = returnURL
		if strings.HasPrefix(postLogout, "/") {
			postLogout = h.requestScheme(r) + "://" + h.requestHost(r) + postLogout
		}
	}
	if postLogout != "" {
		q.Set("post_logout_redirect_uri", postLogout)
	}
	u.RawQuery = q.Encode()
	return u.String(), true
}
