package handlers

// Tests that pin the defects of the outside review (issue 12): each failed
// on the code before its fix.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
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

// randomPad is incompressible text of n bytes.
func randomPad(n int) string {
	b := make([]byte, n*3/4)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestRefreshKeptWhenTheCookieCannotHoldIt (item 4, cookie store): the
// refreshed ID token no longer fits the cookie parts. The check passes on
// the new tokens, counted as store_error, and a check with the old cookie
// within the reuse window gets them instead of replaying the rotated
// refresh token (which would revoke the family).
func TestRefreshKeptWhenTheCookieCannotHoldIt(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	old := j.list()
	e.clock.Advance(time.Hour)
	rt := mustLoad(t, e, old).Tokens().RefreshToken
	e.idp.SetIDTokenMutator(func(c map[string]any) { c["pad"] = randomPad(40 << 10) })

	rec := e.check(old, "", nil)
	if rec.Code != http.StatusOK || len(rec.Header().Values("Set-Cookie")) != 0 {
		t.Fatalf("first check: %d %v", rec.Code, rec.Header().Values("Set-Cookie"))
	}
	if refreshes(e, metrics.RefreshStoreError) != 1 || refreshes(e, metrics.RefreshIdPUnavailable) != 0 {
		t.Errorf("counted store_error %v, idp_unavailable %v", refreshes(e, metrics.RefreshStoreError), refreshes(e, metrics.RefreshIdPUnavailable))
	}
	e.clock.Advance(5 * time.Second)
	if rec := e.check(old, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("old cookie within the window: %d", rec.Code)
	}
	if n := e.idp.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Errorf("token requests = %d, want 1 (the rotated token was replayed)", n)
	}
	if e.idp.FamilyRevoked(rt) {
		t.Error("the provider revoked the family")
	}
	if !strings.Contains(e.logs.String(), "refreshed session could not be stored") {
		t.Error("no log line says so")
	}
}

// TestRefreshKeptWhenRedisRefusesTheWrite (item 4, redis store): a failed
// SET is retried; when it keeps failing the new tokens stay in the reuse
// window, a later check stores them, and the family survives.
func TestRefreshKeptWhenRedisRefusesTheWrite(t *testing.T) {
	backend := newMemoryBackend()
	e := newTestEnv(t, nil).discover().withSessions(func(codec *session.Codec, opts session.Options, now func() time.Time) SessionStore {
		return session.NewTicketStore(codec, opts, backend, "extauth:", rand.Reader, now)
	})
	ticket := e.signIn("/").list()

	// One failed SET: retried within the check.
	e.clock.Advance(time.Hour)
	backend.failNext(1)
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("check with one failed SET: %d", rec.Code)
	}
	if refreshes(e, metrics.RefreshSuccess) != 1 || refreshes(e, metrics.RefreshStoreError) != 0 {
		t.Errorf("success %v store_error %v", refreshes(e, metrics.RefreshSuccess), refreshes(e, metrics.RefreshStoreError))
	}
	e.clock.Advance(time.Minute) // past the reuse window: the store decides
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusOK || e.idp.TokenRequests(providertest.GrantRefreshToken) != 1 {
		t.Fatalf("after the retried SET: %d, %d token requests", rec.Code, e.idp.TokenRequests(providertest.GrantRefreshToken))
	}

	// Redis refuses every attempt of the check.
	e.clock.Advance(time.Hour)
	backend.failNext(refresh.StoreAttempts)
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("check with Redis refusing: %d\n%s", rec.Code, e.logs.String())
	}
	if refreshes(e, metrics.RefreshStoreError) != 1 {
		t.Errorf("store_error = %v, want 1", refreshes(e, metrics.RefreshStoreError))
	}
	// The next check (old state in Redis, within the window) gets the
	// kept tokens and stores them; after the window the stored state
	// needs no refresh.
	e.clock.Advance(5 * time.Second)
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("check after Redis is back: %d", rec.Code)
	}
	e.clock.Advance(time.Minute)
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("check after the window: %d", rec.Code)
	}
	if n := e.idp.TokenRequests(providertest.GrantRefreshToken); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
	if refreshes(e, metrics.RefreshInvalidGrant) != 0 {
		t.Error("a rotated refresh token was replayed")
	}
}

// TestRefreshedClaimsWin (item 5): a refreshed ID token that states a
// claim sets it, even empty; claims that sign-in took from userinfo are
// read there again.
func TestRefreshedClaimsWin(t *testing.T) {
	t.Run("id token", func(t *testing.T) {
		e := newTestEnv(t, nil).discover()
		j := e.signIn("/")
		if rec := e.check(j.list(), "allowed_groups=admins", nil); rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-Email") == "" {
			t.Fatalf("before: %d %v", rec.Code, rec.Header())
		}
		e.clock.Advance(time.Hour)
		e.idp.SetIDTokenMutator(func(c map[string]any) { c["groups"] = []any{}; c["email_verified"] = false })
		rec := e.check(j.list(), "allowed_groups=admins", nil)
		if rec.Code != http.StatusForbidden {
			t.Errorf("removed from every group, allowed_groups=admins: %d", rec.Code)
		}
		j.update(rec)
		rec = e.check(j.list(), "", nil)
		if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-Groups") != "" || rec.Header().Get("X-Auth-Request-Email") != "" {
			t.Errorf("after the refresh: %d groups %q email %q", rec.Code, rec.Header().Get("X-Auth-Request-Groups"), rec.Header().Get("X-Auth-Request-Email"))
		}
		if rec.Header().Get("X-Auth-Request-Preferred-Username") != "jane" {
			t.Error("a claim the token still states was lost")
		}
	})
	t.Run("userinfo", func(t *testing.T) {
		e := newTestEnv(t, nil, providertest.WithClaimsOnlyInUserinfo()).discover()
		j := e.signIn("/")
		if rec := e.check(j.list(), "allowed_groups=admins", nil); rec.Code != http.StatusOK {
			t.Fatalf("before: %d", rec.Code)
		}
		u := e.idp.User()
		u.Groups = []string{"staff"}
		e.idp.SetUser(u)
		e.clock.Advance(time.Hour)
		calls := e.idp.Calls(providertest.EndpointUserinfo)
		rec := e.check(j.list(), "allowed_groups=admins", nil)
		if rec.Code != http.StatusForbidden || e.idp.Calls(providertest.EndpointUserinfo) != calls+1 {
			t.Errorf("removed from admins at the provider: %d, %d userinfo calls", rec.Code, e.idp.Calls(providertest.EndpointUserinfo)-calls)
		}
	})
	t.Run("userinfo down", func(t *testing.T) {
		e := newTestEnv(t, nil, providertest.WithClaimsOnlyInUserinfo()).discover()
		j := e.signIn("/")
		e.clock.Advance(time.Hour)
		e.idp.SetFault(providertest.EndpointUserinfo, providertest.Fault503)
		rec := e.check(j.list(), "", nil)
		if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-Groups") != "staff,admins" {
			t.Errorf("userinfo down during a refresh: %d %q", rec.Code, rec.Header().Get("X-Auth-Request-Groups"))
		}
	})
}

// TestNumericClaimsExact: a numeric claim is the provider's digits, not
// a float.
func TestNumericClaimsExact(t *testing.T) {
	u := providertest.DefaultUser()
	u.Extra = map[string]any{"employee_id": 248289761001, "big": json.Number("12345678901234567890")}
	e := newTestEnv(t, func(c *config.Config) { c.OIDC.Claims.User = "employee_id"; c.OIDC.Claims.PreferredUsername = "big" }, providertest.WithUser(u)).discover()
	rec := e.check(e.signIn("/").list(), "", nil)
	if got := rec.Header().Get("X-Auth-Request-User"); got != "248289761001" {
		t.Errorf("user = %q", got)
	}
	if got := rec.Header().Get("X-Auth-Request-Preferred-Username"); got != "12345678901234567890" {
		t.Errorf("preferred username = %q", got)
	}
}

// TestShortTokensRefreshOnce (item 8): a 60-second token with the default
// 60-second refreshBefore is refreshed once per half lifetime, not on every
// check, and Caddy's refresh=redirect never answers 307 to a state that
// would refresh again.
func TestShortTokensRefreshOnce(t *testing.T) {
	e := newTestEnv(t, trusted, providertest.WithAccessTokenTTL(time.Minute)).discover()
	j := e.signIn("/")
	for i := range 10 {
		e.clock.Advance(5 * time.Second)
		rec := e.check(j.list(), "", nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("check %d: %d", i, rec.Code)
		}
		j.update(rec)
	}
	if n := e.idp.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Errorf("10 checks over 50 s of a 60 s token: %d refreshes, want 1", n)
	}

	// The provider's access token is expired on arrival (its clock is
	// ahead): no 307, whose target would refresh again, forever.
	e.clock.Advance(time.Hour)
	e.idp.SetTokenResponse(func(grant string) map[string]any {
		return map[string]any{"access_token": e.idp.SignJWT(map[string]any{"exp": e.clock.Now().Add(-time.Minute).Unix()}), "expires_in": nil}
	})
	rec := e.do(http.MethodGet, "/oauth2/forward-auth?refresh=redirect", j.list(), forwarded("/app", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("refresh=redirect to a state due for refresh: %d %v", rec.Code, rec.Header())
	}
}

// TestSharedRefreshIsRaceFree (item 10): checks sharing another replica's
// refresh read its state concurrently, with headers.authorization
// decoding the tokens (under -race, this failed while State.Tokens cached).
func TestSharedRefreshIsRaceFree(t *testing.T) {
	r := testenv.StartRedis(t)
	base := newTestEnv(t, func(c *config.Config) { c.Headers.Authorization = true }).discover()
	a, b := base.replica(r.Addr, config.StoreCookie), base.replica(r.Addr, config.StoreCookie)
	old := a.signIn("/").list()
	base.clock.Advance(time.Hour)
	if rec := a.check(old, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("replica a: %d", rec.Code)
	}
	recs := make([]*httptest.ResponseRecorder, 20)
	var wg sync.WaitGroup
	for i := range recs {
		wg.Go(func() { recs[i] = b.check(old, "", nil) })
	}
	wg.Wait()
	for i, rec := range recs {
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Authorization"), "Bearer ") {
			t.Errorf("check %d: %d %q", i, rec.Code, rec.Header().Get("Authorization"))
		}
	}
	if n := base.idp.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Errorf("token requests = %d", n)
	}
}

// TestForgedTokensDoNotRefetchKeys (item 7): 50 forged bearer tokens and
// 50 forged logout tokens, under unknown kids or with bad signatures, make
// at most one JWKS request; a real key rotation is still picked up.
func TestForgedTokensDoNotRefetchKeys(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) { c.Authorization.BearerTokens = true }).discover()
	now := e.clock.Now()
	claims := map[string]any{"iss": e.idp.Issuer, "sub": "svc-1", "aud": e.idp.ClientID, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	keyFetches := func() int { return e.idp.Calls(providertest.EndpointKeys) }
	refetches := func(result string) float64 {
		return testutil.ToFloat64(e.metrics.KeyRefetches.WithLabelValues(result))
	}
	start := keyFetches()

	// Past the discovery's own fetch: a refetch may happen now.
	e.clock.Advance(time.Minute)
	for i := range 50 {
		bad := e.idp.SignJWTWithOtherKey(claims) // the published kid, a bad signature
		unknown := e.idp.SignJWTWithKeyID(claims, fmt.Sprintf("forged-%d", i))
		for _, tok := range []string{bad, unknown} {
			if rec := e.check(nil, "", http.Header{"Authorization": {"Bearer " + tok}}); rec.Code != http.StatusUnauthorized {
				t.Fatalf("forged bearer token: %d", rec.Code)
			}
		}
		logoutClaims := e.idp.LogoutTokenClaims("someone", "")
		if rec := e.backchannelPost(e.idp.SignJWTWithKeyID(logoutClaims, fmt.Sprintf("forged-logout-%d", i))); rec.Code != http.StatusBadRequest {
			t.Fatalf("forged logout token: %d", rec.Code)
		}
	}
	if n := keyFetches() - start; n != 1 {
		t.Errorf("150 forged tokens made %d JWKS requests, want 1", n)
	}
	if refetches(metrics.KeyRefetchFetched) != 1 || refetches(metrics.KeyRefetchThrottled) != 99 {
		t.Errorf("refetches: fetched %v throttled %v", refetches(metrics.KeyRefetchFetched), refetches(metrics.KeyRefetchThrottled))
	}

	// The provider rotates its key: within 30 s of the last fetch the new
	// kid waits, after it one fetch finds it.
	e.idp.RotateKey("rotated-1")
	rotated := e.idp.SignJWTWithKeyID(claims, "rotated-1")
	if rec := e.check(nil, "", http.Header{"Authorization": {"Bearer " + rotated}}); rec.Code != http.StatusUnauthorized {
		t.Errorf("rotated key within the throttle: %d", rec.Code)
	}
	e.clock.Advance(provider.MinKeyRefetch)
	for range 3 {
		if rec := e.check(nil, "", http.Header{"Authorization": {"Bearer " + rotated}}); rec.Code != http.StatusOK {
			t.Errorf("rotated key after the throttle: %d", rec.Code)
		}
	}
	if n := keyFetches() - start; n != 2 {
		t.Errorf("JWKS requests = %d, want 2", n)
	}
	// The old key still verifies.
	if rec := e.check(nil, "", http.Header{"Authorization": {"Bearer " + e.idp.SignJWT(claims)}}); rec.Code != http.StatusOK {
		t.Errorf("the old key after the rotation: %d", rec.Code)
	}
}

// flakyLogouts fails its next record write, then works.
type flakyLogouts struct {
	*logout.Memory
	fail atomic.Bool
}

func (f *flakyLogouts) End(ctx context.Context, kind logout.Kind, key string, at, until time.Time) error {
	if f.fail.Swap(false) {
		return errors.New("redis down")
	}
	return f.Memory.End(ctx, kind, key, at, until)
}

func (f *flakyLogouts) EndOnce(ctx context.Context, jti string, jtiUntil time.Time, kind logout.Kind, key string, at, until time.Time) (bool, error) {
	if f.fail.Swap(false) {
		return false, errors.New("redis down")
	}
	return f.Memory.EndOnce(ctx, jti, jtiUntil, kind, key, at, until)
}

// TestBackchannelRetryAfterAFailedWrite: the record cannot be written, the
// provider is told to retry (503), and its retry of the same token ends the
// session instead of being refused as a replay.
func TestBackchannelRetryAfterAFailedWrite(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	st := e.backchannelSession(j)
	logouts := &flakyLogouts{Memory: logout.NewMemory(e.clock.Now)}
	router, err := NewRouter(Deps{Config: e.cfg, Provider: e.provider, Sessions: e.sessions, Flows: session.NewFlowStore(nil, session.Options{}, e.clock.Now),
		Logouts: logouts, Metrics: e.metrics, Log: discardLogger(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.router = router
	e.clock.Advance(time.Second)
	token := e.idp.LogoutToken(st.Subject, st.SID)
	logouts.fail.Store(true)
	if rec := e.backchannelPost(token); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("failed write: %d %s", rec.Code, rec.Body.String())
	}
	if rec := e.backchannelPost(token); rec.Code != http.StatusOK {
		t.Fatalf("the provider's retry: %d %s", rec.Code, rec.Body.String())
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("session after the retried logout: %d", rec.Code)
	}
	if rec := e.backchannelPost(token); rec.Code != http.StatusBadRequest {
		t.Errorf("a third post of the token: %d, want 400 (replay)", rec.Code)
	}
}

// TestTicketSignOutWritesNoRecord: with sessions in Redis, deleting the
// session ends every copy of its cookie; no logout record is written (each
// would live in every replica until the session's absolute expiry).
func TestTicketSignOutWritesNoRecord(t *testing.T) {
	backend := newMemoryBackend()
	e := newTestEnv(t, nil).discover().withSessions(func(codec *session.Codec, opts session.Options, now func() time.Time) SessionStore {
		return session.NewTicketStore(codec, opts, backend, "extauth:", rand.Reader, now)
	})
	ticket := e.signIn("/").list()
	if rec := e.do(http.MethodGet, "/oauth2/sign_out", ticket, nil); rec.Code != http.StatusFound {
		t.Fatalf("sign-out: %d", rec.Code)
	}
	if n := e.logouts.Len(); n != 0 {
		t.Errorf("%d logout records written", n)
	}
	if rec := e.check(ticket, "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("a copy of the ticket after sign-out: %d", rec.Code)
	}
	// The cookie store still needs the record.
	c := newTestEnv(t, nil).discover()
	j := c.signIn("/")
	c.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
	if c.logouts.Len() != 1 || c.check(j.list(), "", nil).Code != http.StatusUnauthorized {
		t.Errorf("cookie store: %d records", c.logouts.Len())
	}
}
