package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// consentProvider behaves as node oidc-provider and Google do (OpenID
// Connect Core §11): offline_access, and with it a refresh token, only for
// an authorization request with prompt=consent.
var consentProvider = []providertest.Option{providertest.WithRefreshTokens(false), providertest.WithOfflineAccessOnlyWithConsent()}

func noRefreshTokenWarnings(e *testEnv) float64 {
	return testutil.ToFloat64(e.metrics.SigninWarnings.WithLabelValues(metrics.WarningNoRefreshToken))
}

func prompts(e *testEnv) []string {
	var out []string
	for _, q := range e.idp.Authorizations() {
		out = append(out, q.Get("prompt"))
	}
	return out
}

// TestNoRefreshTokenRestartsWithConsent: in oidc.promptConsent auto, a
// callback without the refresh token that offline_access asked for sends
// the browser back to the provider once with prompt=consent, warns and
// counts; the session then has a refresh token, and later sign-ins ask
// with prompt=consent from the start.
func TestNoRefreshTokenRestartsWithConsent(t *testing.T) {
	e := newTestEnv(t, nil, consentProvider...).discover()
	j := jar{}
	authURL := e.startSignIn(j, "https://app.example.com/page")
	rec := e.callback(j, e.idp.Login(t, t.Context(), authURL.String()))
	retry, err := url.Parse(rec.Header().Get("Location"))
	if rec.Code != http.StatusFound || err != nil || !strings.HasPrefix(retry.String(), e.idp.Issuer) || retry.Query().Get("prompt") != "consent" {
		t.Fatalf("callback without a refresh token: %d to %q, want a new sign-in with prompt=consent", rec.Code, rec.Header().Get("Location"))
	}
	if noRefreshTokenWarnings(e) != 1 || !strings.Contains(e.logs.String(), "restarting the sign-in with prompt=consent") {
		t.Errorf("warnings = %v; logs:\n%s", noRefreshTokenWarnings(e), e.logs.String())
	}
	rec = e.callback(j, e.idp.Login(t, t.Context(), retry.String()))
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://app.example.com/page" {
		t.Fatalf("callback after consent: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	if rt := mustLoad(t, e, j.list()).Tokens().RefreshToken; rt == "" {
		t.Error("the session after prompt=consent has no refresh token")
	}

	// Another browser's sign-in asks with prompt=consent at once.
	e.signIn("")
	if got := prompts(e); len(got) != 3 || got[0] != "" || got[1] != "consent" || got[2] != "consent" {
		t.Errorf("prompts sent = %q, want none, then consent for the retry and every later sign-in", got)
	}
	if noRefreshTokenWarnings(e) != 1 {
		t.Errorf("warnings = %v, want 1", noRefreshTokenWarnings(e))
	}
}

// TestNoRefreshTokenModes: never and an explicit prompt never restart (the
// sign-in goes on, warned and counted); always sends prompt=consent from
// the first sign-in; a client that asks no offline_access is not warned.
func TestNoRefreshTokenModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		update   func(*config.Config)
		prompt   string  // sent with the first authorization request
		warnings float64 // after one sign-in
	}{
		{"never", func(c *config.Config) { c.OIDC.PromptConsent = config.PromptConsentNever }, "", 1},
		{"extraAuthParams prompt", func(c *config.Config) { c.OIDC.ExtraAuthParams = map[string]string{"prompt": "login"} }, "login", 1},
		{"always", func(c *config.Config) { c.OIDC.PromptConsent = config.PromptConsentAlways }, "consent", 0},
		{"no offline_access", func(c *config.Config) { c.OIDC.Scopes = []string{"openid", "email"} }, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.update, consentProvider...).discover()
			j := e.signIn("")
			if got := prompts(e); len(got) != 1 || got[0] != tc.prompt {
				t.Errorf("prompts sent = %q, want one sign-in with %q", got, tc.prompt)
			}
			if got := noRefreshTokenWarnings(e); got != tc.warnings {
				t.Errorf("no_refresh_token warnings = %v, want %v", got, tc.warnings)
			}
			hasRT := mustLoad(t, e, j.list()).Tokens().RefreshToken != ""
			if hasRT != (tc.prompt == "consent") {
				t.Errorf("refresh token in the session: %v", hasRT)
			}
			if tc.warnings > 0 && !strings.Contains(e.logs.String(), "this session ends when its access token expires") {
				t.Errorf("no warning naming the consequence:\n%s", e.logs.String())
			}
		})
	}
}
