package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
)

// trusted makes the harness's peer (10.1.2.3) a trusted proxy.
func trusted(c *config.Config) { c.Server.TrustedProxies = []string{"10.0.0.0/8"} }

func forwarded(uri string, extra http.Header) http.Header {
	h := http.Header{
		"X-Forwarded-Method": {"GET"},
		"X-Forwarded-Proto":  {"https"},
		"X-Forwarded-Host":   {testHost},
		"X-Forwarded-Uri":    {uri},
	}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

var browserAccept = http.Header{"Accept": {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}}

func merge(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = v
		}
	}
	return out
}

// completeSignIn follows a gateway's 302 to the provider back through the
// callback and returns where the browser lands.
func completeSignIn(t *testing.T, e *testEnv, rec interface{ Header() http.Header }, j jar) string {
	t.Helper()
	auth, err := url.Parse(rec.Header().Get("Location"))
	if err != nil || !strings.HasPrefix(auth.String(), e.idp.Issuer) {
		t.Fatalf("not a redirect to the provider: %q", rec.Header().Get("Location"))
	}
	cb := e.idp.Login(t, t.Context(), auth.String())
	done := e.callback(j, cb)
	if done.Code != http.StatusFound {
		t.Fatalf("callback: %d %s", done.Code, done.Body.String())
	}
	return done.Header().Get("Location")
}

func TestForwardAuthContract(t *testing.T) {
	e := newTestEnv(t, trusted).discover()
	session := e.signIn("/")

	t.Run("signed in", func(t *testing.T) {
		rec := e.do(http.MethodGet, "/oauth2/forward-auth", session.list(), forwarded("/app?x=1", nil))
		if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-User") == "" {
			t.Errorf("%d %v", rec.Code, rec.Header())
		}
	})
	t.Run("untrusted peer is ignored, even with a session", func(t *testing.T) {
		untrusted := newTestEnv(t, nil).discover()
		j := untrusted.signIn("/")
		rec := untrusted.do(http.MethodGet, "/oauth2/forward-auth", j.list(), merge(forwarded("/", nil), browserAccept))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Location") != "" {
			t.Errorf("untrusted peer: %d %q", rec.Code, rec.Header().Get("Location"))
		}
		if !strings.Contains(untrusted.logs.String(), "trustedProxies") {
			t.Error("no log line says why")
		}
	})
	t.Run("non-browser gets 401", func(t *testing.T) {
		rec := e.do(http.MethodGet, "/oauth2/forward-auth", nil, forwarded("/api", http.Header{"Accept": {"application/json"}}))
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Location") != "" {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("Location"))
		}
	})
	t.Run("a POST from a browser gets 401", func(t *testing.T) {
		rec := e.do(http.MethodGet, "/oauth2/forward-auth", nil, merge(forwarded("/form", http.Header{"X-Forwarded-Method": {"POST"}}), browserAccept))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%d", rec.Code)
		}
	})
	t.Run("browser gets 302 to the provider and lands on the original URL", func(t *testing.T) {
		j := jar{}
		rec := e.do(http.MethodGet, "/oauth2/forward-auth", nil, merge(forwarded("/app/page?x=1&y=two%20words", nil), browserAccept))
		if rec.Code != http.StatusFound {
			t.Fatalf("%d", rec.Code)
		}
		j.update(rec)
		if got := completeSignIn(t, e, rec, j); got != "https://"+testHost+"/app/page?x=1&y=two%20words" {
			t.Errorf("landed on %q", got)
		}
		q, _ := url.Parse(rec.Header().Get("Location"))
		if q.Query().Get("redirect_uri") != "https://"+testHost+"/oauth2/callback" {
			t.Errorf("redirect_uri = %q", q.Query().Get("redirect_uri"))
		}
	})
	t.Run("aliases of forwarded headers are never read", func(t *testing.T) {
		j := jar{}
		h := merge(forwarded("/real", nil), browserAccept, http.Header{
			"X_forwarded_host": {"evil.com"}, "X.forwarded.host": {"evil.com"}, "X_forwarded_uri": {"//evil.com"},
		})
		rec := e.do(http.MethodGet, "/oauth2/forward-auth", nil, h)
		j.update(rec)
		if got := completeSignIn(t, e, rec, j); got != "https://"+testHost+"/real" {
			t.Errorf("landed on %q", got)
		}
	})
	for _, tc := range []struct {
		name string
		h    http.Header
	}{
		{"fragment", forwarded("/a#b", nil)},
		{"absolute URI", forwarded("https://evil.com/x", nil)},
		{"scheme-relative URI", forwarded("//evil.com/x", nil)},
		{"backslash", forwarded("/\\evil.com", nil)},
		{"control character", forwarded("/a\tb", nil)},
		{"host with a path", forwarded("/", http.Header{"X-Forwarded-Host": {"evil.com/x"}})},
		{"host with userinfo", forwarded("/", http.Header{"X-Forwarded-Host": {"app.example.com@evil.com"}})},
		{"bad scheme", forwarded("/", http.Header{"X-Forwarded-Proto": {"javascript"}})},
		{"bad method", forwarded("/", http.Header{"X-Forwarded-Method": {"GET /"}})},
		{"repeated host", forwarded("/", http.Header{"X-Forwarded-Host": {testHost, "evil.com"}})},
	} {
		t.Run("fails closed: "+tc.name, func(t *testing.T) {
			// Even with a valid session: the original request is unknowable.
			rec := e.do(http.MethodGet, "/oauth2/forward-auth", session.list(), merge(tc.h, browserAccept))
			if rec.Code != http.StatusUnauthorized || rec.Header().Get("Location") != "" {
				t.Errorf("%d %q", rec.Code, rec.Header().Get("Location"))
			}
		})
	}
	t.Run("encoded fragment and dot segments stay on this host", func(t *testing.T) {
		for _, uri := range []string{"/a%23b", "/a/../b", "/%2e%2e/x"} {
			j := jar{}
			rec := e.do(http.MethodGet, "/oauth2/forward-auth", nil, merge(forwarded(uri, nil), browserAccept))
			j.update(rec)
			got := completeSignIn(t, e, rec, j)
			if !strings.HasPrefix(got, "https://"+testHost+"/") {
				t.Errorf("%s: landed on %q", uri, got)
			}
		}
	})
	t.Run("forbidden is 403, never a redirect", func(t *testing.T) {
		rec := e.do(http.MethodGet, "/oauth2/forward-auth?allowed_groups=payroll", session.list(), merge(forwarded("/", nil), browserAccept))
		if rec.Code != http.StatusForbidden {
			t.Errorf("%d", rec.Code)
		}
	})
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckForwardAuth, metrics.AuthAuthenticated)); v != 1 {
		t.Errorf("forward_auth authenticated = %v", v)
	}
}

func TestForwardAuthRefresh(t *testing.T) {
	e := newTestEnv(t, trusted).discover()
	j := e.signIn("/")
	e.clock.Advance(time.Hour)
	// Traefik: 200 with the Set-Cookie (addAuthCookiesToResponse).
	rec := e.do(http.MethodGet, "/oauth2/forward-auth", j.list(), forwarded("/x", nil))
	if rec.Code != http.StatusOK || sessionCookie(rec) == nil {
		t.Fatalf("%d, cookie %v", rec.Code, sessionCookie(rec))
	}
	// Caddy: refresh=redirect brings the cookie in a 307 to the same URL.
	e.clock.Advance(time.Hour)
	j.update(rec)
	rec = e.do(http.MethodGet, "/oauth2/forward-auth?refresh=redirect", j.list(), forwarded("/x?y=1", nil))
	if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "https://"+testHost+"/x?y=1" || sessionCookie(rec) == nil {
		t.Errorf("%d %q %v", rec.Code, rec.Header().Get("Location"), sessionCookie(rec))
	}
	// Without a refresh, refresh=redirect changes nothing.
	j.update(rec)
	if rec := e.do(http.MethodGet, "/oauth2/forward-auth?refresh=redirect", j.list(), forwarded("/x", nil)); rec.Code != http.StatusOK {
		t.Errorf("%d", rec.Code)
	}
}

func TestExtAuthzContract(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	session := e.signIn("/")
	envoy := func(method, path string, cookies []*http.Cookie, h http.Header) int {
		rec := e.do(method, "/oauth2/ext-authz"+path, cookies, h)
		return rec.Code
	}
	if code := envoy(http.MethodGet, "/app?x=1", session.list(), nil); code != http.StatusOK {
		t.Errorf("signed in: %d", code)
	}
	if code := envoy(http.MethodPost, "/api/items", session.list(), nil); code != http.StatusOK {
		t.Errorf("signed-in POST: %d", code)
	}
	if code := envoy(http.MethodDelete, "/api/items/1", nil, browserAccept); code != http.StatusUnauthorized {
		t.Errorf("DELETE without a session: %d", code)
	}
	if code := envoy(http.MethodGet, "/api", nil, http.Header{"Accept": {"application/json"}}); code != http.StatusUnauthorized {
		t.Errorf("API call without a session: %d", code)
	}
	// Client-sent X-Forwarded-* change nothing: Envoy's check request is the original.
	if code := envoy(http.MethodGet, "/app", nil, http.Header{"X-Forwarded-Uri": {"/healthz"}, "X-Forwarded-Host": {"evil.com"}}); code != http.StatusUnauthorized {
		t.Errorf("forwarded headers: %d", code)
	}

	// A browser is sent to the provider; the path-prefix form keeps the query.
	j := jar{}
	rec := e.do(http.MethodGet, "/oauth2/ext-authz/app/page?x=1&y=2", nil, browserAccept)
	if rec.Code != http.StatusFound {
		t.Fatalf("browser without a session: %d", rec.Code)
	}
	j.update(rec)
	if got := completeSignIn(t, e, rec, j); got != "https://"+testHost+"/app/page?x=1&y=2" {
		t.Errorf("landed on %q", got)
	}
	// The app's own query is not a policy.
	if code := envoy(http.MethodGet, "/app?allowed_groups=payroll", session.list(), nil); code != http.StatusOK {
		t.Errorf("the original query was read as a rule: %d", code)
	}
	if code := envoy(http.MethodGet, "//evil.com/x", nil, browserAccept); code != http.StatusUnauthorized {
		t.Errorf("scheme-relative path: %d", code)
	}
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckExtAuthz, metrics.AuthAuthenticated)); v != 3 {
		t.Errorf("ext_authz authenticated = %v, want 3", v)
	}
}
