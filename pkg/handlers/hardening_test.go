package handlers

// Tests that pin the defects of the outside review (issue 12): each failed
// on the code before its fix.

import (
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// identityHeaderNames are every header a 200 may carry with everything on.
var identityHeaderNames = []string{
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username",
	"X-Auth-Request-Groups", "X-Auth-Request-Access-Token", "Authorization",
}

// gatewayCheck asks each gateway endpoint about GET https://app.example.com/app
// with the given cookies and extra (client) headers.
func gatewayChecks(e *testEnv, cookies []*http.Cookie, extra http.Header) map[string]*httptest.ResponseRecorder {
	return map[string]*httptest.ResponseRecorder{
		"auth":         e.check(cookies, "", extra),
		"forward-auth": e.do(http.MethodGet, "/oauth2/forward-auth", cookies, forwarded("/app", extra)),
		"ext-authz":    e.do(http.MethodGet, "/oauth2/ext-authz/app", cookies, extra),
	}
}

// TestIdentityHeadersAlwaysPresent (item 1): a user without groups, with an
// unverified email and no preferred_username gets every enabled identity
// header on every 200, empty, so that a gateway that copies only what the
// answer carries (Envoy) overwrites a forged one.
func TestIdentityHeadersAlwaysPresent(t *testing.T) {
	u := providertest.DefaultUser()
	u.Groups, u.EmailVerified, u.PreferredUsername = nil, false, ""
	e := newTestEnv(t, func(c *config.Config) {
		trusted(c)
		c.Headers.AccessToken, c.Headers.Authorization = true, true
	}, providertest.WithUser(u)).discover()
	j := e.signIn("/")
	forged := http.Header{}
	for _, name := range identityHeaderNames {
		forged[name] = []string{"forged"}
	}
	for endpoint, rec := range gatewayChecks(e, j.list(), forged) {
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d", endpoint, rec.Code)
		}
		for _, name := range identityHeaderNames {
			if _, ok := rec.Header()[name]; !ok {
				t.Errorf("%s: %s absent from the 200", endpoint, name)
			}
		}
		for _, name := range []string{"X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups"} {
			if v := rec.Header().Get(name); v != "" {
				t.Errorf("%s: %s = %q, want empty", endpoint, name, v)
			}
		}
		if v := rec.Header().Get("X-Auth-Request-User"); v != u.Subject {
			t.Errorf("%s: user %q", endpoint, v)
		}
		if at := rec.Header().Get("X-Auth-Request-Access-Token"); at == "" || rec.Header().Get("Authorization") != "Bearer "+at {
			t.Errorf("%s: token headers %q %q", endpoint, at, rec.Header().Get("Authorization"))
		}
	}

	// Switched-off headers stay absent.
	off := newTestEnv(t, func(c *config.Config) { c.Headers.Groups = false }).discover()
	if rec := off.check(off.signIn("/").list(), "", nil); rec.Code != http.StatusOK || rec.Header()["X-Auth-Request-Groups"] != nil {
		t.Errorf("headers.groups false: %d %v", rec.Code, rec.Header())
	}
}

// TestMethodLabelBounded (item 2): 2,000 made-up methods make no more
// than one extra series.
func TestMethodLabelBounded(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	before := testutil.CollectAndCount(e.metrics.HTTPRequests)
	for i := range 2000 {
		e.do(fmt.Sprintf("M%04d", i), "/oauth2/auth", nil, nil)
	}
	e.do(http.MethodGet, "/oauth2/auth", nil, nil)
	e.do(http.MethodPost, "/oauth2/auth", nil, nil)
	if n := testutil.CollectAndCount(e.metrics.HTTPRequests) - before; n > 3 {
		t.Errorf("%d new series of extauth_http_requests_total after 2,000 methods", n)
	}
	if v := testutil.ToFloat64(e.metrics.HTTPRequests.WithLabelValues("unmatched", "other", "405")); v != 2000 {
		t.Errorf(`{route="unmatched",method="other",code="405"} = %v, want 2000`, v)
	}
	if strings.Contains(e.logs.String(), "M1999") {
		t.Error("the log line carries the made-up method")
	}
}

// TestSignOutBodyBounded (item 3): sign-out reads a few KiB of
// url-encoded form at most and refuses multipart.
func TestSignOutBodyBounded(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	post := func(contentType, body string) *httptest.ResponseRecorder {
		return e.doBody(http.MethodPost, "/oauth2/sign_out", body, http.Header{"Content-Type": {contentType}}, j.list()...)
	}
	var mp strings.Builder
	w := multipart.NewWriter(&mp)
	_ = w.WriteField("rd", "/bye")
	_ = w.WriteField("pad", strings.Repeat("x", 1<<20))
	_ = w.Close()
	cases := []struct {
		name, contentType, body string
		status                  int
		message                 string
	}{
		{"multipart", w.FormDataContentType(), mp.String(), http.StatusUnsupportedMediaType, "application/x-www-form-urlencoded"},
		{"1 MiB url-encoded", "application/x-www-form-urlencoded", "rd=%2Fbye&pad=" + strings.Repeat("x", 1<<20), http.StatusRequestEntityTooLarge, "larger than 8192 bytes"},
		{"json", "application/json", `{"rd":"/bye"}`, http.StatusUnsupportedMediaType, "application/x-www-form-urlencoded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := post(tc.contentType, tc.body)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.message) {
				t.Errorf("status %d, body %q; want %d naming %q", rec.Code, rec.Body.String(), tc.status, tc.message)
			}
		})
	}
	if n := len(e.idp.Revocations()); n != 0 {
		t.Errorf("a refused sign-out revoked %d tokens", n)
	}
	if rec := post("application/x-www-form-urlencoded", "rd=%2Fbye"); rec.Code != http.StatusFound {
		t.Errorf("a small form: %d", rec.Code)
	}
}

// TestSignOutCrossSite: another site's link or form does not end the
// session; the user gets a page with one button that posts from here.
func TestSignOutCrossSite(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")

	rec := e.do(http.MethodGet, "/oauth2/sign_out?rd=%2Fbye", j.list(), http.Header{"Sec-Fetch-Site": {"cross-site"}})
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, `<form method="post" action="/oauth2/sign_out">`) ||
		!strings.Contains(body, `name="rd" value="/bye"`) || rec.Header().Get("Set-Cookie") != "" ||
		!strings.Contains(rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("cross-site GET: %d %v %s", rec.Code, rec.Header(), body)
	}
	for name, h := range map[string]http.Header{
		"cross-site POST":     {"Sec-Fetch-Site": {"cross-site"}, "Content-Type": {"application/x-www-form-urlencoded"}},
		"foreign Origin POST": {"Origin": {"https://evil.example.net"}, "Content-Type": {"application/x-www-form-urlencoded"}},
		"null Origin POST":    {"Origin": {"null"}, "Content-Type": {"application/x-www-form-urlencoded"}},
	} {
		if rec := e.doBody(http.MethodPost, "/oauth2/sign_out", "rd=%2Fbye", h, j.list()...); rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d", name, rec.Code)
		}
	}
	if n := len(e.idp.Revocations()); n != 0 {
		t.Fatalf("cross-site requests revoked %d tokens", n)
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
		t.Fatalf("session ended by a cross-site request: %d", rec.Code)
	}

	// The confirm button's POST (same origin), a same-site link and a
	// direct navigation sign out.
	for name, h := range map[string]http.Header{
		"confirmed": {"Sec-Fetch-Site": {"same-origin"}, "Origin": {"https://" + testHost}, "Content-Type": {"application/x-www-form-urlencoded"}},
		"same-site": {"Sec-Fetch-Site": {"same-site"}, "Origin": {"https://other.example.com"}, "Content-Type": {"application/x-www-form-urlencoded"}},
	} {
		j := e.signIn("/")
		if rec := e.doBody(http.MethodPost, "/oauth2/sign_out", "rd=%2Fbye", h, j.list()...); rec.Code != http.StatusFound {
			t.Errorf("%s: %d %s", name, rec.Code, rec.Body.String())
		}
		if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: still signed in", name)
		}
	}
	j = e.signIn("/")
	if rec := e.do(http.MethodGet, "/oauth2/sign_out", j.list(), http.Header{"Sec-Fetch-Site": {"none"}}); rec.Code != http.StatusFound {
		t.Errorf("direct navigation: %d", rec.Code)
	}
}

// TestNonOKAnswersCarryNoIdentity (item 6): Caddy's 307 after a refresh,
// and every other non-200 answer of a check, carry Location, Set-Cookie
// and Cache-Control only, never an identity or token header.
func TestNonOKAnswersCarryNoIdentity(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) {
		trusted(c)
		c.Headers.AccessToken, c.Headers.Authorization = true, true
		c.Authorization.Groups = []string{"staff"}
	}).discover()
	j := e.signIn("/")
	allowed := map[string]bool{"Location": true, "Set-Cookie": true, "Cache-Control": true}
	only := func(name string, rec *httptest.ResponseRecorder, status int) {
		t.Helper()
		if rec.Code != status {
			t.Fatalf("%s: status %d, want %d", name, rec.Code, status)
		}
		for k := range rec.Header() {
			if !allowed[k] {
				t.Errorf("%s (%d) carries %s: %q", name, rec.Code, k, rec.Header().Get(k))
			}
		}
		if rec.Body.Len() != 0 {
			t.Errorf("%s has a body: %q", name, rec.Body.String())
		}
	}
	e.clock.Advance(time.Hour) // the access token expired
	only("307 after a refresh", e.do(http.MethodGet, "/oauth2/forward-auth?refresh=redirect", j.list(), forwarded("/app", nil)), http.StatusTemporaryRedirect)
	only("403 by query", e.check(j.list(), "allowed_groups=nobody", nil), http.StatusForbidden)
	only("403 by forward-auth", e.do(http.MethodGet, "/oauth2/forward-auth?allowed_groups=nobody", j.list(), forwarded("/app", nil)), http.StatusForbidden)
	only("302 to sign in", e.do(http.MethodGet, "/oauth2/ext-authz/app", nil, browserAccept), http.StatusFound)
	only("401", e.check(nil, "", nil), http.StatusUnauthorized)
}

// TestUserinfoFollowsTheCheck (item 9): userinfo refuses what the check
// refuses: a session ended by back-channel logout, and an expired access
// token without a refresh token.
func TestUserinfoFollowsTheCheck(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	st := e.backchannelSession(j)
	if rec := e.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil); rec.Code != http.StatusOK {
		t.Fatalf("before: %d", rec.Code)
	}
	e.clock.Advance(time.Second) // the logout ends sessions created before it
	if err := e.logouts.End(t.Context(), logout.SID, st.SID, e.clock.Now(), e.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("check after the logout: %d", rec.Code)
	}
	if rec := e.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("userinfo after the logout: %d %s", rec.Code, rec.Body.String())
	}

	noRT := newTestEnv(t, func(c *config.Config) { c.Session.StoreTokens.RefreshToken = false }).discover()
	j = noRT.signIn("/")
	noRT.clock.Advance(time.Hour)
	if rec := noRT.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("userinfo with an expired access token and no refresh token: %d", rec.Code)
	}

	// A session due for a refresh is refreshed here too (one cookie).
	e2 := newTestEnv(t, nil).discover()
	j = e2.signIn("/")
	e2.clock.Advance(time.Hour)
	rec := e2.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil)
	if rec.Code != http.StatusOK || len(rec.Header().Values("Set-Cookie")) != 1 || e2.idp.TokenRequests("refresh_token") != 1 {
		t.Errorf("userinfo of an expired access token: %d %v, %d refreshes", rec.Code, rec.Header().Values("Set-Cookie"), e2.idp.TokenRequests("refresh_token"))
	}
}
