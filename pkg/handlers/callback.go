package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/identity"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// callback is /oauth2/callback, the provider's redirect back: it checks
// state against the flow cookie, exchanges the code, verifies the ID token,
// applies the policy, writes the session and returns the browser to where
// it was going. Every failure is a 4xx page (5xx only when the provider
// cannot be reached), a labelled metric, and no session.
func (h *handler) callback(c *gin.Context, rl *reqLog) *outcome {
	a, refusal := h.appOfState(c.Request.URL.Query().Get("state"))
	if refusal != nil {
		return signInFailed(metrics.CallbackInvalidState, http.StatusBadRequest,
			"This sign-in link is not valid for this browser, or it has expired. Start the sign-in again.", refusal.reason)
	}
	rl.app = a.name
	st, returnURL, refusal := h.completeSignIn(a, c.Writer, c.Request)
	if refusal != nil {
		return refusal
	}
	n, err := a.sessions.Save(c.Writer, c.Request, st)
	if errors.Is(err, session.ErrUnavailable) {
		return signInFailed(metrics.CallbackExchangeFailed, http.StatusServiceUnavailable,
			"The session store is unavailable. Please try again in a moment.", "save session: "+err.Error())
	} else if err != nil {
		o := signInFailed(metrics.CallbackExchangeFailed, http.StatusInternalServerError,
			"The session is too large to store. Ask the operator to reduce session.storeTokens or use the redis store.", "save session: "+err.Error())
		o.retry = false
		return o
	}
	h.Metrics.SessionCookieBytes.Observe(float64(n))
	rl.sub = st.Subject
	return redirectTo(http.StatusFound, returnURL, metrics.CallbackSuccess)
}

// signInFailed is a failed callback: its metric result, status and the
// message the browser sees, with a link to sign in again; reason goes to
// the log only.
func signInFailed(result string, status int, message, reason string) *outcome {
	return &outcome{status: status, result: result, message: message, reason: reason, retry: true}
}

func invalidIDToken(message, reason string) *outcome {
	return signInFailed(metrics.CallbackInvalidIDToken, http.StatusBadRequest, message, reason)
}

func (h *handler) completeSignIn(a *app, w http.ResponseWriter, r *http.Request) (*session.State, string, *outcome) {
	q := r.URL.Query()
	flows := a.flows.Load(r)
	// Take the flow first: whatever happens next, this state is used up.
	flow, found := a.flows.Take(w, flows, q.Get("state"))

	if e := q.Get("error"); e != "" {
		status := http.StatusBadRequest
		if e == "access_denied" {
			status = http.StatusForbidden
		}
		return nil, "", signInFailed(metrics.CallbackIdPError, status,
			"The sign-in provider refused the sign-in ("+safeErrorCode(e)+").", "provider error "+safeErrorCode(e))
	}
	if !found {
		reason := "state does not match a sign-in of this browser"
		if len(flows) == 0 {
			reason = "no flow cookie"
		}
		return nil, "", signInFailed(metrics.CallbackInvalidState, http.StatusBadRequest,
			"This sign-in link is not valid for this browser, or it has expired. Start the sign-in again.", reason)
	}
	code := q.Get("code")
	if code == "" {
		return nil, "", signInFailed(metrics.CallbackExchangeFailed, http.StatusBadRequest,
			"The provider's answer carries no authorization code.", "no code")
	}

	ctx := r.Context()
	tokens, err := a.provider.Exchange(ctx, code, flow.Verifier, flow.RedirectURL)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, "", signInFailed(metrics.CallbackExchangeFailed, http.StatusBadRequest,
				"The sign-in provider did not accept the authorization code. Start the sign-in again.",
				"code exchange refused: "+safeErrorCode(re.ErrorCode))
		}
		return nil, "", signInFailed(metrics.CallbackExchangeFailed, http.StatusBadGateway,
			"The sign-in provider could not be reached. Try again in a moment.", "code exchange failed: "+err.Error())
	}
	if tokens.RefreshToken == "" && a.asksRefreshToken() && h.Config.Session.StoreTokens.RefreshToken {
		if retry := h.noRefreshToken(a, r.Context(), w, flows, flow, tokens); retry != nil {
			return nil, "", retry
		}
	}
	if tokens.IDToken == "" {
		return nil, "", invalidIDToken("The sign-in provider sent no ID token.", "no id_token in token response")
	}
	idTok, err := a.provider.VerifyIDToken(ctx, tokens.IDToken)
	if err != nil {
		return nil, "", invalidIDToken("The sign-in provider's ID token is not valid.", err.Error())
	}
	if subtle.ConstantTimeCompare([]byte(idTok.Nonce), []byte(flow.Nonce)) != 1 {
		return nil, "", invalidIDToken("The sign-in provider's ID token is not valid.", "id token nonce mismatch")
	}
	sessionID, err := h.newSessionID()
	if err != nil {
		return nil, "", signInFailed(metrics.CallbackExchangeFailed, http.StatusInternalServerError,
			"Could not create the session.", "random source failed")
	}
	st, err := a.identity.SignIn(ctx, idTok, tokens, sessionID, h.Now())
	switch {
	case errors.Is(err, identity.ErrUserinfoSubject):
		return nil, "", invalidIDToken("The sign-in provider's answers do not agree.", err.Error())
	case err != nil:
		return nil, "", invalidIDToken("The sign-in provider's ID token is not valid.", err.Error())
	}
	if ok, reason := a.rules.Decide(policy.Identity{Email: st.Email, Groups: st.Groups, Claims: st.Claims}); !ok {
		return nil, "", signInFailed(metrics.CallbackForbidden, http.StatusForbidden,
			"You are signed in at the provider, but this account is not allowed here.", string(reason))
	}
	return st, flow.ReturnURL, nil
}

// noRefreshToken handles a sign-in that asked for offline_access and got
// no refresh token: without one the session ends with the access token,
// silently, at the first expiry. Providers that follow OpenID Connect Core
// §11 (node oidc-provider, Google) grant offline_access only with
// prompt=consent: in oidc.promptConsent auto the sign-in is restarted once
// with it (and later sign-ins send it); otherwise it goes on, warned and
// counted. A non-nil outcome is the restart; the access token of the
// sign-in it replaces is revoked, so that nothing of it stays live.
func (h *handler) noRefreshToken(a *app, ctx context.Context, w http.ResponseWriter, flows session.Flows, flow session.Flow, tokens *provider.Tokens) *outcome {
	h.Metrics.SigninWarnings.WithLabelValues(metrics.WarningNoRefreshToken).Inc()
	if flow.Consent || a.promptChosen() || a.oidc.PromptConsent != config.PromptConsentAuto {
		h.Log.Warn("the provider issued no refresh token although offline_access was asked for: this session ends when its access token expires; "+
			"allow offline_access (refresh tokens) for this client at the provider, or set oidc.promptConsent: always if it grants offline_access only with prompt=consent",
			"prompt_consent_sent", flow.Consent)
		return nil
	}
	a.consentLearned.Store(true)
	h.Log.Warn("the provider issued no refresh token although offline_access was asked for; restarting the sign-in with prompt=consent " +
		"(OpenID Connect Core §11), which this process sends with every sign-in from now on; set oidc.promptConsent: always to send it from the start")
	h.revokeTokens(a, ctx, session.Tokens{AccessToken: tokens.AccessToken})
	rest := slices.DeleteFunc(slices.Clone(flows), func(f session.Flow) bool { return f.State == flow.State })
	authURL, _, refusal := h.beginSignIn(a, w, rest, flow.ReturnURL, true, flow.RedirectURL, true)
	if refusal != nil {
		return refusal
	}
	return &outcome{status: http.StatusFound, location: authURL, reason: "no refresh token: sign-in restarted with prompt=consent"}
}

// safeErrorCode keeps an OAuth error code fit for a page and a log line: the
// codes are short ASCII words; anything else is not echoed.
func safeErrorCode(s string) string {
	if s == "" {
		return "unknown"
	}
	if len(s) > 64 || !isToken(s) {
		return "invalid error code"
	}
	return s
}
