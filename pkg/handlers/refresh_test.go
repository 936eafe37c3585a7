package handlers

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// sessionCookie returns the session cookie a check answer set, if any.
func sessionCookie(rec *httptest.ResponseRecorder) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == "_extauth" {
			return c
		}
	}
	return nil
}

func refreshes(e *testEnv, result string) float64 {
	return testutil.ToFloat64(e.metrics.TokenRefreshes.WithLabelValues("", result))
}

// TestConcurrentChecksShareOneRefresh: 50 parallel checks with one expired
// cookie are all 200 with exactly one token request; a check with the old
// cookie 5 s later is 200 without a second redemption (the provider
// revokes the family on a replay); the new cookie then passes without
// another refresh until the next expiry.
func TestConcurrentChecksShareOneRefresh(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	old := j.list()
	oldRT := mustLoad(t, e, old).Tokens().RefreshToken
	e.clock.Advance(time.Hour) // the access token (1h) has expired

	const n = 50
	recs := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i] = e.check(old, "", nil)
		}()
	}
	wg.Wait()
	var newCookie *http.Cookie
	for i, rec := range recs {
		if rec.Code != http.StatusOK {
			t.Fatalf("check %d: status %d", i, rec.Code)
		}
		c := sessionCookie(rec)
		if c == nil || c.MaxAge <= 0 {
			t.Fatalf("check %d: no refreshed session cookie", i)
		}
		if got := len(rec.Header().Values("Set-Cookie")); got != 1 {
			t.Errorf("check %d: %d Set-Cookie headers; nginx keeps only the first", i, got)
		}
		if newCookie != nil && c.Value != newCookie.Value {
			t.Errorf("check %d got a different session than the others", i)
		}
		newCookie = c
	}
	if got := e.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Fatalf("token requests = %d, want exactly 1", got)
	}
	if refreshes(e, metrics.RefreshSuccess) != 1 || refreshes(e, metrics.RefreshShared) != n-1 {
		t.Errorf("refreshes: success %v, shared %v", refreshes(e, metrics.RefreshSuccess), refreshes(e, metrics.RefreshShared))
	}

	// A request still in flight with the old cookie, 5 s later.
	e.clock.Advance(5 * time.Second)
	if rec := e.check(old, "", nil); rec.Code != http.StatusOK || sessionCookie(rec) == nil || sessionCookie(rec).Value != newCookie.Value {
		t.Fatalf("old cookie after the refresh: %d", rec.Code)
	}
	if got := e.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("the old refresh token was redeemed again: %d token requests", got)
	}
	if e.idp.FamilyRevoked(oldRT) {
		t.Error("the provider revoked the token family")
	}

	// The new cookie passes with no refresh until its access token expires.
	fresh := []*http.Cookie{newCookie}
	if rec := e.check(fresh, "", nil); rec.Code != http.StatusOK || sessionCookie(rec) != nil {
		t.Errorf("new cookie: %d, Set-Cookie %v", rec.Code, rec.Header().Values("Set-Cookie"))
	}
	e.clock.Advance(58 * time.Minute) // 1h lifetime from the refresh, 60s refreshBefore
	if rec := e.check(fresh, "", nil); rec.Code != http.StatusOK || sessionCookie(rec) != nil {
		t.Errorf("before refreshBefore: %d", rec.Code)
	}
	if got := e.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("refreshed early: %d", got)
	}
	e.clock.Advance(time.Minute)
	rec := e.check(fresh, "", nil)
	if rec.Code != http.StatusOK || sessionCookie(rec) == nil {
		t.Errorf("next expiry: %d, no new cookie", rec.Code)
	}
	if got := e.idp.TokenRequests(providertest.GrantRefreshToken); got != 2 {
		t.Errorf("token requests = %d, want 2 after the next expiry", got)
	}
	// The refreshed session keeps the identity.
	if rec.Header().Get("X-Auth-Request-User") != providertest.DefaultUser().Subject {
		t.Errorf("identity lost across refresh: %v", rec.Header())
	}
}

func mustLoad(t *testing.T, e *testEnv, cookies []*http.Cookie) interface {
	Tokens() session.Tokens
} {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	st, err := e.sessions.Load(r)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRefreshInvalidGrantEndsSession(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	e.clock.Advance(time.Hour)
	e.idp.SetFault(providertest.EndpointToken, providertest.FaultInvalidGrant)
	rec := e.check(j.list(), "", nil)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", rec.Code)
	}
	if c := sessionCookie(rec); c == nil || c.MaxAge >= 0 {
		t.Errorf("session cookie not cleared: %v", rec.Header().Values("Set-Cookie"))
	}
	if refreshes(e, metrics.RefreshInvalidGrant) != 1 {
		t.Error("invalid_grant not counted")
	}
	// The same old cookie again: still 401, without asking the provider again.
	e.idp.SetFault(providertest.EndpointToken, providertest.FaultNone)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("second check: %d", rec.Code)
	}
	if got := e.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("a rejected refresh token was presented again: %d requests", got)
	}
}

func TestRefreshReplayDetectedByProvider(t *testing.T) {
	// Without the reuse window (0), a late check with the old cookie replays
	// the rotated token: the provider answers invalid_grant and revokes the
	// family. This is the failure the window exists to prevent.
	e := newTestEnv(t, func(c *config.Config) { c.Session.RefreshReuseWindow = config.Duration{} }).discover()
	j := e.signIn("/")
	old := j.list()
	e.clock.Advance(time.Hour)
	if rec := e.check(old, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("first refresh: %d", rec.Code)
	}
	if rec := e.check(old, "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("replay without a window: %d, want 401", rec.Code)
	}
}

func TestRefreshProviderDown(t *testing.T) {
	for _, fault := range []providertest.Fault{providertest.Fault503, providertest.FaultHang} {
		t.Run(fault.String(), func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			j := e.signIn("/")
			e.idp.SetFault(providertest.EndpointToken, fault)
			e.clock.Advance(time.Hour) // expired now; grace is 5m
			rec := e.check(j.list(), "", nil)
			if rec.Code != http.StatusOK || sessionCookie(rec) != nil {
				t.Fatalf("within grace: %d %v", rec.Code, rec.Header().Values("Set-Cookie"))
			}
			e.clock.Advance(4 * time.Minute)
			if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
				t.Errorf("still within grace: %d", rec.Code)
			}
			e.clock.Advance(time.Minute)
			rec = e.check(j.list(), "", nil)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("after grace: %d, want 401", rec.Code)
			}
			if refreshes(e, metrics.RefreshIdPUnavailable) != 3 {
				t.Errorf("idp_unavailable = %v, want 3 (one per check)", refreshes(e, metrics.RefreshIdPUnavailable))
			}
			// The provider comes back: a retry within grace would have refreshed.
			e.idp.SetFault(providertest.EndpointToken, providertest.FaultNone)
		})
	}
}

func TestRefreshRecoversWithinGrace(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	e.idp.SetFault(providertest.EndpointToken, providertest.Fault503)
	e.clock.Advance(time.Hour)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
		t.Fatalf("within grace: %d", rec.Code)
	}
	e.idp.SetFault(providertest.EndpointToken, providertest.FaultNone)
	e.clock.Advance(time.Minute)
	rec := e.check(j.list(), "", nil)
	if rec.Code != http.StatusOK || sessionCookie(rec) == nil {
		t.Errorf("retry after the provider came back: %d, cookie %v", rec.Code, sessionCookie(rec))
	}
}

func TestRefreshedIDTokenForAnotherUser(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	e.clock.Advance(time.Hour)
	e.idp.SetIDTokenMutator(func(c map[string]any) { c["sub"] = "mallory" })
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("status %d, want 401", rec.Code)
	}
}

func TestRefreshUpdatesGroupsAndKeepsIDToken(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithRefreshIDToken(false)).discover()
	j := e.signIn("/")
	before := mustLoad(t, e, j.list()).Tokens()
	e.clock.Advance(time.Hour)
	rec := e.check(j.list(), "", nil)
	after := mustLoad(t, e, []*http.Cookie{sessionCookie(rec)}).Tokens()
	if after.IDToken != before.IDToken || after.IDToken == "" {
		t.Error("the ID token was not kept when the refresh returned none")
	}
	if after.RefreshToken == before.RefreshToken || after.AccessToken == before.AccessToken {
		t.Error("tokens not replaced")
	}

	// With an ID token in the refresh answer, changed groups take effect.
	e2 := newTestEnv(t, nil).discover()
	j2 := e2.signIn("/")
	u := providertest.DefaultUser()
	u.Groups = []string{"payroll"}
	e2.idp.SetUser(u)
	e2.clock.Advance(time.Hour)
	if rec := e2.check(j2.list(), "", nil); rec.Header().Get("X-Auth-Request-Groups") != "payroll" {
		t.Errorf("groups after refresh: %q", rec.Header().Get("X-Auth-Request-Groups"))
	}
}

func TestNoRotationKeepsRefreshToken(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithRotation(false)).discover()
	j := e.signIn("/")
	rt := mustLoad(t, e, j.list()).Tokens().RefreshToken
	e.clock.Advance(time.Hour)
	rec := e.check(j.list(), "", nil)
	if got := mustLoad(t, e, []*http.Cookie{sessionCookie(rec)}).Tokens().RefreshToken; got != rt {
		t.Error("the refresh token changed although the provider returned none")
	}
}

func TestNoRefreshTokenEndsWithAccessToken(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) { c.Session.StoreTokens.RefreshToken = false }).discover()
	j := e.signIn("/")
	e.clock.Advance(59*time.Minute + 30*time.Second) // within refreshBefore, not expired
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
		t.Errorf("before expiry: %d", rec.Code)
	}
	e.clock.Advance(30 * time.Second)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("after expiry: %d", rec.Code)
	}
	if e.idp.TokenRequests(providertest.GrantRefreshToken) != 0 {
		t.Error("refreshed without a refresh token")
	}
}

// BenchmarkCheckSharedRefresh is a check with an old cookie whose refresh
// another check already did: it must cost no more than twice a plain check
// (BenchmarkCheckOkta).
func BenchmarkCheckSharedRefresh(b *testing.B) {
	e := newTestEnv(b, nil).discover()
	j := e.signIn("/")
	e.router = mustRouterWithLog(b, e)
	e.clock.Advance(time.Hour)
	req := httptest.NewRequest(http.MethodGet, "/oauth2/auth", nil)
	req.Header.Set("X-Original-URL", "https://app.example.com/dashboard?tab=1")
	req.Header.Set("X-Original-Method", "GET")
	req.Header.Set("X-Request-ID", "5f0c1a2b3c4d5e6f")
	req.AddCookie(j["_extauth"])
	w := &discardWriter{h: http.Header{}}
	e.router.ServeHTTP(w, req) // the one real refresh
	if w.code != http.StatusOK || e.idp.TokenRequests(providertest.GrantRefreshToken) != 1 {
		b.Fatalf("setup refresh: %d", w.code)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.code = 0
		e.router.ServeHTTP(w, req)
		if w.code != http.StatusOK || len(w.h["Set-Cookie"]) != 1 {
			b.Fatalf("status %d", w.code)
		}
	}
	if e.idp.TokenRequests(providertest.GrantRefreshToken) != 1 {
		b.Fatal("the benchmark redeemed again")
	}
}
