package handlers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/identity"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

// AppDeps are what one app of a deployment serving several (config apps:)
// needs beyond the configuration: its provider, sessions and flows, built
// by the caller for the app's client and cookie.
type AppDeps struct {
	Name     string
	Provider *provider.Provider
	Sessions SessionStore
	Flows    *session.FlowStore
	// Bearers verifies the bearer tokens of apps[].authorization.bearer;
	// nil when the app lists none.
	Bearers *provider.Bearers
}

// app is one protected app at run time: the top-level client (name ""),
// or one of config apps:. Every request is served by one app, chosen by
// appFor; nothing of one app reaches another.
type app struct {
	name      string
	oidc      config.OIDC // effective: the app's keys over the top level's
	provider  *provider.Provider
	sessions  SessionStore
	flows     *session.FlowStore
	identity  *identity.Builder
	refresher *refresh.Refresher
	rules     policy.Rules
	// skips are routes that pass without a session; preflight lets CORS
	// preflights pass (apps[].authorization.skip and .preflight).
	skips     *policy.Skips
	preflight bool
	// bearer verifies an "Authorization: Bearer" JWT that stands in for a
	// session; nil when the app accepts none.
	bearer func(ctx context.Context, raw string) (*oidc.IDToken, error)
	// consentLearned: the provider withheld a refresh token from a sign-in
	// without prompt=consent; in oidc.promptConsent auto every sign-in
	// sends it from then on.
	consentLearned atomic.Bool
}

// newApp assembles an app from its configuration and parts.
func (h *handler) newApp(name string, oidc config.OIDC, authz policy.Rules, p *provider.Provider, sessions SessionStore, flows *session.FlowStore) *app {
	d, cfg := h.Deps, h.Config
	// The claims the rules test live in the session: those named by
	// oidc.claims.keep and by the app's claim rules.
	keep := slices.Clone(oidc.Claims.Keep)
	for _, r := range authz.Claims {
		if !slices.Contains(keep, r.Claim) {
			keep = append(keep, r.Claim)
		}
	}
	ids := &identity.Builder{
		Names: identity.Names{User: oidc.Claims.User, Email: oidc.Claims.Email,
			PreferredUsername: oidc.Claims.PreferredUsername, Groups: oidc.Claims.Groups, Keep: keep},
		Keep: identity.Keep{AccessToken: cfg.Session.StoreTokens.AccessToken,
			IDToken: cfg.Session.StoreTokens.IDToken, RefreshToken: cfg.Session.StoreTokens.RefreshToken},
		MaxAge:   cfg.Session.MaxAge.Duration,
		Userinfo: p,
		Groups:   p,
		Log:      d.Log,
	}
	return &app{
		name: name, oidc: oidc, provider: p, sessions: sessions, flows: flows, identity: ids, rules: authz,
		refresher: refresh.NewRefresher(refresh.Config{
			Provider:    p,
			Identity:    ids,
			Store:       sessions,
			Coordinator: d.Coordinator,
			Now:         d.Now,
			Before:      cfg.Session.RefreshBefore.Duration,
			Grace:       cfg.Session.RefreshGrace.Duration,
			ReuseWindow: cfg.Session.RefreshReuseWindow.Duration,
			Timeout:     d.RefreshTimeout,
			Log:         d.Log,
		}),
	}
}

// buildApps makes the top-level app (when the configuration has a client)
// and one app per entry of apps:.
func (h *handler) buildApps(d Deps) error {
	cfg := d.Config
	if d.Provider != nil {
		h.top = h.newApp("", cfg.OIDC, policy.Rules{
			EmailDomains: cfg.Authorization.EmailDomains,
			Emails:       cfg.Authorization.Emails,
			Groups:       cfg.Authorization.Groups,
		}, d.Provider, d.Sessions, d.Flows)
		if cfg.Authorization.BearerTokens {
			h.top.bearer = d.Provider.VerifyBearer
		}
	}
	h.byName = map[string]*app{}
	h.byHost = map[string]*app{}
	for i, ac := range cfg.Apps {
		j := slices.IndexFunc(d.Apps, func(a AppDeps) bool { return a.Name == ac.Name })
		if j < 0 {
			return fmt.Errorf("apps: no provider and sessions built for app %q", ac.Name)
		}
		parts := d.Apps[j]
		a := h.newApp(ac.Name, ac.OIDC, policy.Rules{
			EmailDomains: ac.Authorization.EmailDomains,
			Emails:       ac.Authorization.Emails,
			Groups:       ac.Authorization.Groups,
			Claims:       ac.Authorization.ClaimRules(),
		}, parts.Provider, parts.Sessions, parts.Flows)
		skips, err := policy.NewSkips(ac.Authorization.SkipRules())
		if err != nil {
			return fmt.Errorf("apps[%d].authorization.skip: %w", i, err)
		}
		a.skips, a.preflight = skips, ac.Authorization.Preflight == config.PreflightAllow
		if b := parts.Bearers; b != nil {
			a.bearer = func(ctx context.Context, raw string) (*oidc.IDToken, error) {
				tok, _, err := b.Verify(ctx, raw)
				return tok, err
			}
		} else if len(ac.Authorization.Bearer) > 0 {
			return fmt.Errorf("apps[%d].authorization.bearer: no verifier built for app %q", i, ac.Name)
		}
		h.apps = append(h.apps, a)
		h.byName[a.name] = a
		for _, host := range ac.Hosts {
			if suffix, ok := strings.CutPrefix(host, "*"); ok {
				h.wildcards = append(h.wildcards, wildcardHost{suffix: suffix, app: a})
			} else {
				h.byHost[host] = a
			}
		}
	}
	// The longest suffix first: *.eu.example.com before *.example.com.
	slices.SortStableFunc(h.wildcards, func(x, y wildcardHost) int { return len(y.suffix) - len(x.suffix) })
	if h.top == nil && len(h.apps) == 0 {
		return fmt.Errorf("handlers: no provider")
	}
	return nil
}

// wildcardHost is "*.example.com" as its suffix ".example.com".
type wildcardHost struct {
	suffix string
	app    *app
}

// noApp refuses a request no app serves.
func noApp(reason string) *outcome {
	o := forbidden(reason)
	o.message = "No app is configured for this host."
	return o
}

// appFor is the app that serves a request: the one ?app=NAME names (for
// the endpoints whose query is extauth's own), else the one whose hosts
// match host (an exact host before wildcards, the longest wildcard
// first), else the top-level client. None: a 403 that says why, never
// another app's session.
func (h *handler) appFor(r *http.Request, host string, queryIsOurs bool) (*app, *outcome) {
	if len(h.apps) == 0 {
		return h.top, nil
	}
	if queryIsOurs && r.URL.RawQuery != "" {
		if name := r.URL.Query().Get("app"); name != "" {
			if a := h.byName[name]; a != nil {
				return a, nil
			}
			return nil, noApp("?app= names no configured app")
		}
	}
	if a := h.appOfHost(host); a != nil {
		return a, nil
	}
	if h.top != nil {
		return h.top, nil
	}
	return nil, noApp("no app for this host, and no top-level client")
}

// appOfHost matches a request's host (a port and the case do not count).
func (h *handler) appOfHost(host string) *app {
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if a := h.byHost[host]; a != nil {
		return a
	}
	for _, w := range h.wildcards {
		// One label: "*.example.com" matches a.example.com, not a.b.example.com.
		if label, ok := strings.CutSuffix(host, w.suffix); ok && label != "" && !strings.Contains(label, ".") {
			return w.app
		}
	}
	return nil
}

// appOfState is the app a callback belongs to: its name leads the state
// (beginSignIn), the top-level client's state has none.
func (h *handler) appOfState(state string) (*app, *outcome) {
	name, _, named := strings.Cut(state, ".")
	if !named {
		if h.top == nil {
			return nil, noApp("state names no app, and there is no top-level client")
		}
		return h.top, nil
	}
	if a := h.byName[name]; a != nil {
		return a, nil
	}
	return nil, noApp("state names no configured app")
}

// appOfLogoutToken is the app a back-channel logout is for: ?app=NAME, or
// the one app whose issuer and client ID the (not yet verified) token
// names; that app's provider then verifies it.
func (h *handler) appOfLogoutToken(r *http.Request, raw string) (*app, *outcome) {
	if len(h.apps) == 0 {
		return h.top, nil
	}
	if name := r.URL.Query().Get("app"); name != "" {
		if a := h.byName[name]; a != nil {
			return a, nil
		}
		return nil, logoutRefused("?app= names no configured app", "")
	}
	var claims struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, logoutRefused("logout token not valid", "not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &claims) != nil {
		return nil, logoutRefused("logout token not valid", "unreadable payload")
	}
	var auds []string
	if json.Unmarshal(claims.Aud, &auds) != nil {
		var one string
		_ = json.Unmarshal(claims.Aud, &one)
		auds = []string{one}
	}
	var found *app
	for _, a := range h.allApps() {
		if a.oidc.IssuerURL == claims.Iss && slices.Contains(auds, a.oidc.ClientID) {
			if found != nil {
				return nil, logoutRefused("logout token fits more than one app: add ?app= to the back-channel logout URI", "")
			}
			found = a
		}
	}
	if found == nil {
		return nil, logoutRefused("logout token is for no configured app", "")
	}
	return found, nil
}

// allApps are the top-level client (if any) and every configured app.
func (h *handler) allApps() []*app {
	if h.top == nil {
		return h.apps
	}
	return append([]*app{h.top}, h.apps...)
}

// logoutKey scopes a logout record's key to the app: two providers may
// use the same sub or sid for different people. The top-level client's
// keys are bare, as before apps existed.
func (a *app) logoutKey(key string) string {
	if a.name == "" || key == "" {
		return key
	}
	return a.name + "\x00" + key
}

// asksRefreshToken reports whether sign-ins ask for a refresh token:
// offline_access is in oidc.scopes.
func (a *app) asksRefreshToken() bool {
	return slices.Contains(a.oidc.Scopes, "offline_access")
}

// promptChosen: the operator set a prompt in oidc.extraAuthParams, which
// is sent as it is.
func (a *app) promptChosen() bool {
	_, ok := a.oidc.ExtraAuthParams["prompt"]
	return ok
}

// promptConsent decides whether a sign-in sends prompt=consent
// (oidc.promptConsent): always, never, or in auto once this app has seen
// its provider withhold a refresh token (or for the retry itself).
func (a *app) promptConsent(retry bool) bool {
	if !a.asksRefreshToken() || a.promptChosen() {
		return false
	}
	switch a.oidc.PromptConsent {
	case config.PromptConsentAlways:
		return true
	case config.PromptConsentAuto:
		return retry || a.consentLearned.Load()
	}
	return false
}

// unauthenticated reports whether the original request passes without a
// session: a skip rule's route, or a CORS preflight where the app allows
// them. It then gets a 200 without identity headers. rawPath is the path
// as the client sent it; an unknown one ("") never passes.
func (a *app) passesWithoutSession(method, rawPath string, hdr http.Header) (*outcome, bool) {
	switch {
	case a.preflight && policy.Preflight(method, hdr):
		return &outcome{status: http.StatusOK, result: metrics.AuthSkipped, reason: "CORS preflight (preflight: allow)"}, true
	case rawPath != "" && a.skips.Match(method, rawPath):
		return &outcome{status: http.StatusOK, result: metrics.AuthSkipped, reason: "skip rule"}, true
	}
	return nil, false
}
