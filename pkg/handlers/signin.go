package handlers

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// start is /oauth2/start: it binds a new sign-in to this browser with the
// flow cookie and sends the browser to the provider.
func (h *handler) start(c *gin.Context, rl *reqLog) *outcome {
	a, refusal := h.appFor(c.Request, h.requestHost(c.Request), true)
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	if !a.provider.Ready() {
		return providerNotReady
	}
	returnURL, ok := h.returnURL(c.Request)
	authURL, result, refusal := h.beginSignIn(a, c.Writer, a.flows.Load(c.Request), returnURL, ok, h.redirectURL(a, c.Request), false)
	if refusal != nil {
		return refusal
	}
	o := redirectTo(http.StatusFound, authURL, result)
	if !ok {
		o.reason = "return URL rejected, using /"
	}
	return o
}

var providerNotReady = &outcome{status: http.StatusServiceUnavailable, reason: "provider not ready",
	message: "The sign-in provider is not reachable yet. Try again in a moment."}

// beginSignIn starts a sign-in: a new flow (state, nonce, PKCE verifier,
// return URL) added to the browser's flows in the flow cookie it sets, and
// the provider's authorization URL to send the browser to. returnOK says
// whether the return URL passed the rules (else it is "/" already); it is
// counted, and result is the count's label. retry is the callback asking
// again with prompt=consent. On failure nothing is set.
func (h *handler) beginSignIn(a *app, w http.ResponseWriter, flows session.Flows, returnURL string, returnOK bool, redirectURL string, retry bool) (authURL, result string, refusal *outcome) {
	result = metrics.SigninRedirected
	if !returnOK {
		result = metrics.SigninInvalidRedirect
	}
	flow := session.Flow{ReturnURL: returnURL, RedirectURL: redirectURL, Expires: h.Now().Add(session.FlowTTL),
		Consent: a.promptConsent(retry)}
	var err error
	if flow.State, err = h.random(32); err == nil {
		if a.name != "" {
			// The callback finds the app by its name in the state.
			flow.State = a.name + "." + flow.State
		}
		if flow.Nonce, err = h.random(32); err == nil && a.provider.PKCE() {
			// 32 random bytes, base64url: a 43-character verifier (RFC 7636 §4.1).
			flow.Verifier, err = h.random(32)
		}
	}
	if err != nil {
		return "", "", &outcome{status: http.StatusInternalServerError, reason: "random source failed", message: "Could not start the sign-in."}
	}
	var extra map[string]string
	if flow.Consent {
		extra = consentPrompt
	}
	authURL, err = a.provider.AuthCodeURLWith(redirectURL, flow.State, flow.Nonce, flow.Verifier, extra)
	if errors.Is(err, provider.ErrNotReady) {
		return "", "", providerNotReady
	} else if err != nil {
		return "", "", &outcome{status: http.StatusInternalServerError, reason: "authorization URL: " + err.Error(), message: "Could not start the sign-in."}
	}
	if err := a.flows.Add(w, flows, flow); err != nil {
		return "", "", &outcome{status: http.StatusInternalServerError, reason: "flow cookie: " + err.Error(), message: "Could not start the sign-in."}
	}
	h.Metrics.Signins.WithLabelValues(a.name, result).Inc()
	return authURL, result, nil
}

// consentPrompt asks the provider to show its consent page, which OpenID
// Connect Core §11 requires before it grants offline_access.
var consentPrompt = map[string]string{"prompt": "consent"}

// returnURL is rd, else X-Auth-Request-Redirect (ingress-nginx sends it),
// else "/"; a value that fails the return-URL rules becomes "/" and false.
func (h *handler) returnURL(r *http.Request) (string, bool) {
	raw := r.URL.Query().Get("rd")
	if raw == "" {
		raw = r.Header.Get("X-Auth-Request-Redirect")
	}
	if raw == "" {
		return "/", true
	}
	return h.redirects.Sanitize(raw, h.requestHost(r))
}

// newSessionID is a random UUID (version 4): 122 random bits, and stored in
// 16 bytes by the session encoding.
func (h *handler) newSessionID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(h.Rand, b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out), nil
}

func (h *handler) random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(h.Rand, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
