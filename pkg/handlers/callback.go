package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// callbackError is a failed callback: its metric result, status and the
// message the browser sees. reason goes to the log only.
type callbackError struct {
	result  string
	status  int
	message string
	reason  string
}

// callback is /oauth2/callback, the provider's redirect back: it checks
// state against the flow cookie, exchanges the code, verifies the ID token,
// applies the policy, writes the session and returns the browser to where
// it was going. Every failure is a 4xx page (5xx only when the provider
// cannot be reached), a labelled metric, and no session.
func (h *handler) callback(c *gin.Context, rl *reqLog) {
	st, returnURL, cerr := h.completeSignIn(c)
	if cerr != nil {
		rl.result, rl.reason = cerr.result, cerr.reason
		h.Metrics.Callbacks.WithLabelValues(cerr.result).Inc()
		h.errorPageRetry(c, cerr.status, cerr.message, h.prefix+"/start")
		return
	}
	n, err := h.Sessions.Save(c.Writer, c.Request, st)
	if err != nil {
		rl.result, rl.reason = metrics.CallbackExchangeFailed, "save session: "+err.Error()
		h.Metrics.Callbacks.WithLabelValues(metrics.CallbackExchangeFailed).Inc()
		if errors.Is(err, session.ErrUnavailable) {
			h.errorPageRetry(c, http.StatusServiceUnavailable, "The session store is unavailable. Please try again in a moment.", h.prefix+"/start")
			return
		}
		h.errorPage(c, http.StatusInternalServerError, "The session is too large to store. Ask the operator to reduce session.storeTokens or use the redis store.")
		return
	}
	h.Metrics.SessionCookieBytes.Observe(float64(n))
	h.Metrics.Callbacks.WithLabelValues(metrics.CallbackSuccess).Inc()
	rl.result, rl.sub = metrics.CallbackSuccess, st.Subject
	c.Header("Cache-Control", "no-store")
	c.Redirect(http.StatusFound, returnURL)
}

func (h *handler) completeSignIn(c *gin.Context) (*session.State, string, *callbackError) {
	r := c.Request
	q := r.URL.Query()
	flows := h.Flows.Load(r)
	// Take the flow first: whatever happens next, this state is used up.
	flow, found := h.Flows.Take(c.Writer, flows, q.Get("state"))

	if e := q.Get("error"); e != "" {
		status := http.StatusBadRequest
		if e == "access_denied" {
			status = http.StatusForbidden
		}
		return nil, "", &callbackError{metrics.CallbackIdPError, status,
			"The sign-in provider refused the sign-in (" + safeErrorCode(e) + ").", "provider error " + safeErrorCode(e)}
	}
	if !found {
		reason := "state does not match a sign-in of this browser"
		if len(flows) == 0 {
			reason = "no flow cookie"
		}
		return nil, "", &callbackError{metrics.CallbackInvalidState, http.StatusBadRequest,
			"This sign-in link is not valid for this browser, or it has expired. Start the sign-in again.", reason}
	}
	code := q.Get("code")
	if code == "" {
		return nil, "", &callbackError{metrics.CallbackExchangeFailed, http.StatusBadRequest,
			"The provider's answer carries no authorization code.", "no code"}
	}

	ctx := r.Context()
	tokens, err := h.Provider.Exchange(ctx, code, flow.Verifier, flow.RedirectURL)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return nil, "", &callbackError{metrics.CallbackExchangeFailed, http.StatusBadRequest,
				"The sign-in provider did not accept the authorization code. Start the sign-in again.",
				"code exchange refused: " + safeErrorCode(re.ErrorCode)}
		}
		return nil, "", &callbackError{metrics.CallbackExchangeFailed, http.StatusBadGateway,
			"The sign-in provider could not be reached. Try again in a moment.", "code exchange failed: " + err.Error()}
	}
	if tokens.IDToken == "" {
		return nil, "", &callbackError{metrics.CallbackInvalidIDToken, http.StatusBadRequest,
			"The sign-in provider sent no ID token.", "no id_token in token response"}
	}
	idTok, err := h.Provider.VerifyIDToken(ctx, tokens.IDToken)
	if err != nil {
		return nil, "", &callbackError{metrics.CallbackInvalidIDToken, http.StatusBadRequest,
			"The sign-in provider's ID token is not valid.", err.Error()}
	}
	if subtle.ConstantTimeCompare([]byte(idTok.Nonce), []byte(flow.Nonce)) != 1 {
		return nil, "", &callbackError{metrics.CallbackInvalidIDToken, http.StatusBadRequest,
			"The sign-in provider's ID token is not valid.", "id token nonce mismatch"}
	}
	claims, err := decodeClaims(idTok)
	if err != nil {
		return nil, "", &callbackError{metrics.CallbackInvalidIDToken, http.StatusBadRequest,
			"The sign-in provider's ID token is not valid.", "id token claims: " + err.Error()}
	}
	id := h.readIdentity(claims)
	fromUserinfo := false
	if id.missing() != 0 && tokens.AccessToken != "" {
		// Some providers put email, groups or names only in userinfo: one
		// call at sign-in (and one per refresh), never on the check.
		extra, err := h.userinfoIdentity(ctx, idTok.Subject, tokens.AccessToken)
		switch {
		case errors.Is(err, errUserinfoSubject):
			return nil, "", &callbackError{metrics.CallbackInvalidIDToken, http.StatusBadRequest,
				"The sign-in provider's answers do not agree.", err.Error()}
		case err != nil:
			// Sign-in goes on with what the ID token had: the policy decides.
			h.Log.Warn("userinfo failed; continuing with the ID token's claims", "error", err)
		default:
			id.fill(extra)
			fromUserinfo = true
		}
	}
	if ok, reason := h.rules.Decide(policy.Identity{Email: id.email, Groups: id.groups}); !ok {
		return nil, "", &callbackError{metrics.CallbackForbidden, http.StatusForbidden,
			"You are signed in at the provider, but this account is not allowed here.", string(reason)}
	}

	now := h.Now()
	sid, _ := claims["sid"].(string)
	sessionID, err := h.newSessionID()
	if err != nil {
		return nil, "", &callbackError{metrics.CallbackExchangeFailed, http.StatusInternalServerError,
			"Could not create the session.", "random source failed"}
	}
	st := &session.State{
		ID:                 sessionID,
		Subject:            idTok.Subject,
		SID:                sid,
		ClaimsFromUserinfo: fromUserinfo,
		CreatedAt:          now,
		ExpiresAt:          now.Add(h.Config.Session.MaxAge.Duration),
	}
	id.apply(st)
	setAccessToken(st, tokens)
	st.SetTokens(h.keptTokens(tokens))
	return st, flow.ReturnURL, nil
}

// errUserinfoSubject: the userinfo endpoint answered for another user.
var errUserinfoSubject = errors.New("userinfo sub differs from the id token's")

// userinfoIdentity reads the identity claims of the userinfo endpoint,
// whose sub must be the ID token's.
func (h *handler) userinfoIdentity(ctx context.Context, sub, accessToken string) (identity, error) {
	info, err := h.Provider.Userinfo(ctx, accessToken)
	if err != nil {
		return identity{}, err
	}
	if info.Subject != sub {
		return identity{}, errUserinfoSubject
	}
	claims, err := decodeClaims(info)
	if err != nil {
		return identity{}, fmt.Errorf("userinfo claims: %w", err)
	}
	return h.readIdentity(claims), nil
}

// setAccessToken records when the access token expires and how long it
// was issued for.
func setAccessToken(st *session.State, tokens *provider.Tokens) {
	st.AccessExpiry, st.AccessLifetime = tokens.Expiry, tokens.Lifetime
}

// keptTokens are the tokens session.storeTokens keeps.
func (h *handler) keptTokens(tokens *provider.Tokens) session.Tokens {
	keep := h.Config.Session.StoreTokens
	var kept session.Tokens
	if keep.AccessToken {
		kept.AccessToken = tokens.AccessToken
	}
	if keep.IDToken {
		kept.IDToken = tokens.IDToken
	}
	if keep.RefreshToken {
		kept.RefreshToken = tokens.RefreshToken
	}
	return kept
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
