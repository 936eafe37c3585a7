package handlers

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/redisstore"
	"github.com/extauth/extauth/pkg/session"
)

// replica is one extauth process of several sharing a Redis: its own
// provider client, refresh group, logout memory and metrics; the same
// fake provider, clock and session secret as e.
func (e *testEnv) replica(redisAddr, store string) *testEnv {
	t := e.t
	t.Helper()
	cfg := *e.cfg
	cfg.Session.Store = store
	cfg.Session.Redis.Enabled = true
	cfg.Session.Redis.Address = redisAddr
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	log := discardLogger()
	p, err := provider.New(provider.Config{
		IssuerURL: cfg.OIDC.IssuerURL, ClientID: cfg.OIDC.ClientID, ClientSecret: cfg.OIDC.ClientSecret,
		Scopes: cfg.OIDC.Scopes, PKCE: cfg.OIDC.PKCE, RequestTimeout: 2 * testRefreshTimeout,
	}, e.clock.Now, log, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Discover(t.Context()); err != nil {
		t.Fatal(err)
	}
	rs, err := redisstore.New(redisstore.Options{Address: redisAddr, KeyPrefix: cfg.Session.Redis.KeyPrefix}, m, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	logouts := redisstore.NewLogouts(rs, e.clock.Now)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go logouts.Run(ctx)
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts := session.Options{Name: cfg.Session.CookieName, Path: "/", Secure: true, SameSite: http.SameSiteLaxMode, AccessTokenOptional: true}
	var sessions SessionStore = session.NewStore(codec, opts, e.clock.Now)
	if store == config.StoreRedis {
		sessions = session.NewTicketStore(codec, opts, redisstore.Sessions{Store: rs}, cfg.Session.Redis.KeyPrefix, rand.Reader, e.clock.Now)
	}
	router, err := NewRouter(Deps{
		Config: &cfg, Provider: p, Sessions: sessions, Flows: session.NewFlowStore(codec, opts, e.clock.Now),
		Logouts: logouts, Metrics: m, Log: log, Now: e.clock.Now, Rand: rand.Reader,
		RefreshTimeout: 3 * testRefreshTimeout, Coordinator: redisstore.NewCoordinator(rs, cfg.Session.RefreshReuseWindow.Duration),
		Redis: rs,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-logouts.Synced()
	return &testEnv{t: t, cfg: &cfg, idp: e.idp, provider: p, router: router, clock: e.clock, metrics: m, reg: reg, logs: e.logs}
}

func sumRefreshes(rs []*testEnv, result string) float64 {
	n := 0.0
	for _, r := range rs {
		n += refreshes(r, result)
	}
	return n
}

// TestReplicasShareOneRefresh: three replicas sharing Redis, 60 concurrent
// checks of one expired session spread over them: all 200, one token
// request, the family intact — in both store modes.
func TestReplicasShareOneRefresh(t *testing.T) {
	for _, store := range []string{config.StoreCookie, config.StoreRedis} {
		t.Run(store, func(t *testing.T) {
			r := testenv.StartRedis(t)
			base := newTestEnv(t, nil).discover()
			rs := []*testEnv{base.replica(r.Addr, store), base.replica(r.Addr, store), base.replica(r.Addr, store)}
			j := rs[0].signIn("/")
			old := j.list()
			if store == config.StoreRedis {
				if c := j[base.cfg.Session.CookieName]; c == nil || len(c.Name)+1+len(c.Value) >= 200 {
					t.Fatalf("ticket cookie: %v", c)
				}
			}
			base.clock.Advance(time.Hour)

			const n = 60
			recs := make([]*httptest.ResponseRecorder, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { recs[i] = rs[i%3].check(old, "", nil) })
			}
			wg.Wait()
			for i, rec := range recs {
				if rec.Code != http.StatusOK {
					t.Fatalf("check %d on replica %d: %d", i, i%3, rec.Code)
				}
				if store == config.StoreRedis && len(rec.Header().Values("Set-Cookie")) != 0 {
					t.Errorf("check %d: a redis-store refresh wrote a cookie", i)
				}
				if store == config.StoreCookie && sessionCookie(rec) == nil {
					t.Errorf("check %d: no refreshed cookie", i)
				}
			}
			if got := base.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
				t.Errorf("token requests = %d, want 1", got)
			}
			// With the session in Redis, a check that loads it after the
			// refresh stored it has fresh tokens and needs no refresh at all.
			s, sh := sumRefreshes(rs, metrics.RefreshSuccess), sumRefreshes(rs, metrics.RefreshShared)
			if s != 1 || sh > n-1 || (store == config.StoreCookie && sh != n-1) {
				t.Errorf("refreshes: success %v shared %v", s, sh)
			}
			// A late check with the old cookie on another replica: shared, no replay.
			base.clock.Advance(5 * time.Second)
			if rec := rs[2].check(old, "", nil); rec.Code != http.StatusOK {
				t.Errorf("late old cookie: %d", rec.Code)
			}
			if got := base.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
				t.Errorf("token requests after the late check = %d", got)
			}
		})
	}
}

// TestReplicasRedisDown: Redis dies. Cookie-store checks keep passing from
// the cookie and a refresh falls back to the process's own single flight
// (counted as a store error); Redis-store checks get 401, never a 5xx, and
// keep their cookie.
func TestReplicasRedisDown(t *testing.T) {
	t.Run("cookie", func(t *testing.T) {
		r := testenv.StartRedis(t)
		base := newTestEnv(t, nil).discover()
		rep := base.replica(r.Addr, config.StoreCookie)
		old := rep.signIn("/").list()
		r.Kill()
		if rec := rep.check(old, "", nil); rec.Code != http.StatusOK {
			t.Fatalf("fresh session, redis down: %d", rec.Code)
		}
		base.clock.Advance(time.Hour)
		var wg sync.WaitGroup
		codes := make([]int, 10)
		for i := range codes {
			wg.Go(func() { codes[i] = rep.check(old, "", nil).Code })
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusOK {
				t.Errorf("check %d: %d", i, c)
			}
		}
		if got := base.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
			t.Errorf("token requests = %d, want 1 (local single flight)", got)
		}
		if n := testutil.ToFloat64(rep.metrics.StoreOperations.WithLabelValues(metrics.StoreRefreshLock, metrics.StoreError)); n < 1 {
			t.Error("the fallback was not counted as a store error")
		}
		rec := rep.do(http.MethodGet, "/readyz", nil, nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "redis: unavailable") {
			t.Errorf("readyz: %d %q", rec.Code, rec.Body.String())
		}
	})
	t.Run("redis", func(t *testing.T) {
		r := testenv.StartRedis(t)
		base := newTestEnv(t, nil).discover()
		rep := base.replica(r.Addr, config.StoreRedis)
		old := rep.signIn("/").list()
		if rec := rep.check(old, "", nil); rec.Code != http.StatusOK {
			t.Fatalf("redis up: %d", rec.Code)
		}
		r.Kill()
		rec := rep.check(old, "", nil)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("redis down: %d, want 401", rec.Code)
		}
		if h := rec.Header().Values("Set-Cookie"); len(h) != 0 {
			t.Errorf("redis down cleared the cookie: %v", h)
		}
	})
}

// TestReplicasSignOutDeletesRedisSession: sign-out on one replica ends a
// Redis-store session on all, the stored value included.
func TestReplicasSignOutDeletesRedisSession(t *testing.T) {
	r := testenv.StartRedis(t)
	base := newTestEnv(t, nil).discover()
	a, b := base.replica(r.Addr, config.StoreRedis), base.replica(r.Addr, config.StoreRedis)
	old := a.signIn("/").list()
	if rec := b.check(old, "", nil); rec.Code != http.StatusOK {
		t.Fatalf("replica b before sign-out: %d", rec.Code)
	}
	if rec := a.do(http.MethodGet, "/oauth2/sign_out", old, nil); rec.Code != http.StatusFound {
		t.Fatalf("sign-out: %d", rec.Code)
	}
	if rec := b.check(old, "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("replica b after sign-out: %d", rec.Code)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	if keys := c.Keys(context.Background(), "extauth:session:*").Val(); len(keys) != 0 {
		t.Errorf("session keys left after sign-out: %v", keys)
	}
}

// TestReplicasShareInvalidGrant: the provider rejects the refresh token.
// Concurrent checks over three replicas ask it once, and all answer 401 —
// the other replicas take the published verdict; with the Redis store the
// session is deleted from Redis.
func TestReplicasShareInvalidGrant(t *testing.T) {
	for _, store := range []string{config.StoreCookie, config.StoreRedis} {
		t.Run(store, func(t *testing.T) {
			r := testenv.StartRedis(t)
			base := newTestEnv(t, nil).discover()
			rs := []*testEnv{base.replica(r.Addr, store), base.replica(r.Addr, store), base.replica(r.Addr, store)}
			old := rs[0].signIn("/").list()
			base.clock.Advance(time.Hour)
			base.idp.SetFault(providertest.EndpointToken, providertest.FaultInvalidGrant)
			const n = 30
			codes := make([]int, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { codes[i] = rs[i%3].check(old, "", nil).Code })
			}
			wg.Wait()
			for i, c := range codes {
				if c != http.StatusUnauthorized {
					t.Errorf("check %d: %d, want 401", i, c)
				}
			}
			if got := base.idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
				t.Errorf("the rejected refresh token was presented %d times, want once", got)
			}
			if store == config.StoreRedis {
				c := redis.NewClient(&redis.Options{Addr: r.Addr})
				defer c.Close()
				if keys := c.Keys(context.Background(), "extauth:session:*").Val(); len(keys) != 0 {
					t.Errorf("the session outlived invalid_grant in redis: %v", keys)
				}
			}
		})
	}
}

// BenchmarkCheckRedisStore is BenchmarkCheckOkta with the session in Redis:
// the check reads it with one GET from a real redis-server on loopback.
func BenchmarkCheckRedisStore(b *testing.B) {
	r := testenv.StartRedis(b)
	base := newTestEnv(b, nil).discover()
	ts := testenv.LoadTokenSet(b, "okta")
	base.idp.ServeTokens(ts.AccessToken, ts.RefreshToken)
	rep := base.replica(r.Addr, config.StoreRedis)
	benchmarkCheck(b, rep.router, rep.signIn("/").list())
}
