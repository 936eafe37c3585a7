package handlers

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
)

// assertionKeyFile writes a new signing key for a test.
func assertionKeyFile(t testing.TB) string {
	t.Helper()
	key, err := assertion.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "assertion.pem")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// withAssertion turns the assertion on with a new key.
func withAssertion(t testing.TB) func(*config.Config) {
	path := assertionKeyFile(t)
	return func(c *config.Config) {
		c.Assertion.Enabled, c.Assertion.KeyFile, c.Assertion.Issuer = true, path, "https://auth.example.com"
	}
}

// testAssertions is the signer server.New would build; nil when off.
func testAssertions(t testing.TB, cfg *config.Config, now func() time.Time) *assertion.Signer {
	t.Helper()
	if !cfg.Assertion.Enabled {
		return nil
	}
	k, err := assertion.LoadKeyFile(cfg.Assertion.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := assertion.NewSigner(k, nil, assertion.Options{Issuer: cfg.Assertion.Issuer, Lifetime: cfg.Assertion.Lifetime.Duration, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertionVerifier verifies as an app would: go-oidc's remote key set on
// the JWKS extauth serves, on the test's clock.
func assertionVerifier(t *testing.T, router http.Handler, audience string, now func() time.Time) *oidc.IDTokenVerifier {
	t.Helper()
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return oidc.NewVerifier("https://auth.example.com", oidc.NewRemoteKeySet(t.Context(), srv.URL+"/.well-known/jwks.json"),
		&oidc.Config{ClientID: audience, Now: now, SupportedSigningAlgs: []string{"ES256"}})
}

// TestAssertionOnAllowedChecks: every 200 of every check endpoint carries
// a JWT that verifies against the served JWKS for the original host, with
// the session's identity; a client's own header never survives; 401 and
// 403 carry none.
func TestAssertionOnAllowedChecks(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) { withAssertion(t)(c); trusted(c) }).discover()
	j := e.signIn("/")
	v := assertionVerifier(t, e.router, testHost, e.clock.Now)
	forged := "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
	for name, rec := range map[string]*httptest.ResponseRecorder{
		"auth":         e.check(j.list(), "", http.Header{"X-Auth-Request-Jwt": {forged}}),
		"forward-auth": e.do(http.MethodGet, "/oauth2/forward-auth", j.list(), forwarded("/app", http.Header{"X-Auth-Request-Jwt": {forged}})),
		"ext-authz":    e.do(http.MethodGet, "/oauth2/ext-authz/app", j.list(), http.Header{"X-Auth-Request-Jwt": {forged}}),
	} {
		raw := rec.Header().Get("X-Auth-Request-Jwt")
		if rec.Code != http.StatusOK || raw == "" || raw == forged || len(rec.Header().Values("X-Auth-Request-Jwt")) != 1 {
			t.Fatalf("%s: %d, assertion %q", name, rec.Code, raw)
		}
		tok, err := v.Verify(t.Context(), raw)
		if err != nil {
			t.Fatalf("%s: the assertion does not verify: %v", name, err)
		}
		var c struct {
			Email  string   `json:"email"`
			Groups []string `json:"groups"`
		}
		_ = tok.Claims(&c)
		u := e.idp.User()
		if tok.Subject != u.Subject || c.Email != u.Email || strings.Join(c.Groups, ",") != strings.Join(u.Groups, ",") {
			t.Errorf("%s: sub %q email %q groups %v, want the user's %+v", name, tok.Subject, c.Email, c.Groups, u)
		}
	}
	// One signature serves the session's checks of one host.
	a, b := e.check(j.list(), "", nil), e.check(j.list(), "", nil)
	if a.Header().Get("X-Auth-Request-Jwt") != b.Header().Get("X-Auth-Request-Jwt") {
		t.Error("two checks of one session signed twice")
	}
	// Another host is another audience: grafana's token is not wiki's.
	other := e.check(j.list(), "", http.Header{"X-Original-Url": {"https://wiki.example.com/"}})
	if _, err := v.Verify(t.Context(), other.Header().Get("X-Auth-Request-Jwt")); err == nil {
		t.Error("the assertion for wiki.example.com verifies for " + testHost)
	}
	if _, err := assertionVerifier(t, e.router, "wiki.example.com", e.clock.Now).Verify(t.Context(), other.Header().Get("X-Auth-Request-Jwt")); err != nil {
		t.Errorf("wiki's assertion for wiki: %v", err)
	}
	for name, rec := range map[string]*httptest.ResponseRecorder{
		"401": e.check(nil, "", http.Header{"X-Auth-Request-Jwt": {forged}}),
		"403": e.check(j.list(), "allowed_groups=nobody", http.Header{"X-Auth-Request-Jwt": {forged}}),
	} {
		if rec.Code == http.StatusOK || rec.Header().Values("X-Auth-Request-Jwt") != nil {
			t.Errorf("%s: %d with assertion %q", name, rec.Code, rec.Header().Get("X-Auth-Request-Jwt"))
		}
	}
	// Expired by the app's clock once its lifetime has passed.
	raw := a.Header().Get("X-Auth-Request-Jwt")
	late := func() time.Time { return e.clock.Now().Add(6 * time.Minute) }
	if _, err := assertionVerifier(t, e.router, testHost, late).Verify(t.Context(), raw); err == nil {
		t.Error("an assertion verifies after its lifetime")
	}
}

// TestJWKSEndpoints: the public keys at both paths, cacheable, no private
// part; 404 with the assertion off.
func TestJWKSEndpoints(t *testing.T) {
	e := newTestEnv(t, withAssertion(t))
	for _, path := range []string{"/.well-known/jwks.json", "/oauth2/jwks"} {
		rec := e.do(http.MethodGet, path, nil, nil)
		body := rec.Body.String()
		if rec.Code != http.StatusOK || rec.Header().Get("Cache-Control") != "max-age=300" ||
			rec.Header().Get("Content-Type") != "application/json" || !strings.Contains(body, `"kty":"EC"`) ||
			strings.Contains(body, `"d"`) {
			t.Errorf("%s: %d %v %s", path, rec.Code, rec.Header(), body)
		}
	}
	off := newTestEnv(t, nil)
	if rec := off.do(http.MethodGet, "/.well-known/jwks.json", nil, nil); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "assertion") {
		t.Errorf("JWKS with the assertion off: %d %s", rec.Code, rec.Body.String())
	}
}

// TestAssertionApps: with apps, the audience is the app's name, and a
// skipped route carries no assertion.
func TestAssertionApps(t *testing.T) {
	key := assertionKeyFile(t)
	e := newAppsEnvWith(t, func(y string) string {
		return y + "assertion: {enabled: true, issuer: https://auth.example.com, keyFile: " + key + "}\n"
	})
	j := e.signIn("grafana.example.com", e.a)
	rec := e.check("eu.grafana.example.com", "", j.list())
	if _, err := assertionVerifier(t, e.router, "grafana", e.clock.Now).Verify(t.Context(), rec.Header().Get("X-Auth-Request-Jwt")); rec.Code != http.StatusOK || err != nil {
		t.Errorf("grafana's check: %d, assertion for aud grafana: %v", rec.Code, err)
	}
	skipped := e.checkPath("grafana.example.com", http.MethodGet, "/api/health", "", j.list(), nil)
	if skipped.Code != http.StatusOK || skipped.Header().Values("X-Auth-Request-Jwt") != nil {
		t.Errorf("skipped route: %d, assertion %q", skipped.Code, skipped.Header().Get("X-Auth-Request-Jwt"))
	}
}
