package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// redisStack is three extauth replicas behind one nginx (upstream round
// robin) sharing a real redis-server, against the in-process provider with
// rotation and reuse detection. Access tokens live 5 s; refreshBefore is
// 10 s, which extauth caps at half the lifetime: a check 2.5 s after the
// last refresh refreshes.
func redisStack(t *testing.T, store string, opts ...providertest.Option) (*stack.Stack, *providertest.Provider, *testenv.Redis) {
	return redisStackTTL(t, store, 5*time.Second, 10*time.Second, opts...)
}

func redisStackTTL(t *testing.T, store string, accessTTL, refreshBefore time.Duration, opts ...providertest.Option) (*stack.Stack, *providertest.Provider, *testenv.Redis) {
	t.Helper()
	r := testenv.StartRedis(t)
	idp := providertest.New(t, append([]providertest.Option{providertest.WithClock(time.Now),
		providertest.WithAccessTokenTTL(accessTTL)}, opts...)...)
	s := startStack(t, stack.Options{
		Provider:      &stack.ExternalProvider{Issuer: idp.Issuer, ClientID: idp.ClientID, ClientSecret: idp.ClientSecret},
		RefreshBefore: refreshBefore,
		Replicas:      3,
		Redis:         r.Addr,
		Store:         store,
	})
	return s, idp, r
}

// signInHTTP signs in through nginx with a plain HTTP client (the fake
// provider approves at once) and returns the session's cookies.
func signInHTTP(t *testing.T, s *stack.Stack) []*http.Cookie {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(s.URL)
	// Stop at the callback's redirect back to the app: loading the page
	// would be the session's first check, and the test's to make.
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == u.Host && !strings.HasPrefix(req.URL.Path, "/oauth2/") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := client.Get(s.URL + "/oauth2/start?rd=" + url.QueryEscape("/app/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/app/" {
		t.Fatalf("sign-in ended at %s with %d (Location %q)", resp.Request.URL, resp.StatusCode, resp.Header.Get("Location"))
	}
	var out []*http.Cookie
	for _, c := range jar.Cookies(u) {
		if strings.HasPrefix(c.Name, s.Config.Session.CookieName) && !strings.HasSuffix(c.Name, "_csrf") {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		t.Fatal("no session cookie after sign-in")
	}
	return out
}

// httpGet sends one request with these cookies and no redirects followed.
func httpGet(t *testing.T, target string, cookies []*http.Cookie) *http.Response {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, target, nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", target, err)
		return &http.Response{StatusCode: 0}
	}
	resp.Body.Close()
	return resp
}

// check asks one replica directly, as nginx would.
func check(t *testing.T, replica string, cookies []*http.Cookie) int {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+replica+"/oauth2/auth", nil)
	req.Header.Set("X-Original-URL", "http://127.0.0.1/app/")
	req.Header.Set("X-Original-Method", "GET")
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("check on %s: %v", replica, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReplicasShareRefreshThroughNginx: 60 concurrent page loads with one
// expired session, spread by nginx over three replicas: all 200, exactly
// one token request, the token family intact (the next refresh works) —
// with the session in the cookie and with the session in Redis.
func TestReplicasShareRefreshThroughNginx(t *testing.T) {
	for _, store := range []string{config.StoreCookie, config.StoreRedis} {
		t.Run(store, func(t *testing.T) {
			const ttl, before = 3 * time.Second, time.Second
			s, idp, _ := redisStackTTL(t, store, ttl, before)
			old := signInHTTP(t, s)
			time.Sleep(ttl - before + 100*time.Millisecond) // into the refresh window
			const n = 60
			codes := make([]int, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { codes[i] = httpGet(t, s.URL+"/app/page", old).StatusCode })
			}
			wg.Wait()
			for i, c := range codes {
				if c != http.StatusOK {
					t.Errorf("request %d: %d", i, c)
				}
			}
			if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
				t.Errorf("token requests = %d, want exactly 1 across the replicas", got)
			}
			// Late checks with the cookie of before the refresh, on each replica.
			for _, rep := range s.Replicas {
				if c := check(t, rep, old); c != http.StatusOK {
					t.Errorf("replica %s: %d after the storm", rep, c)
				}
			}
			if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
				t.Errorf("token requests = %d after the late checks", got)
			}
			// The family is intact: the rotated token refreshes the session
			// again when its access token nears expiry.
			jar := httpGet(t, s.URL+"/app/page", old).Cookies()
			latest := old
			if store == config.StoreCookie && len(jar) > 0 {
				latest = jar
			}
			time.Sleep(ttl - before + 100*time.Millisecond)
			if c := httpGet(t, s.URL+"/app/page", latest).StatusCode; c != http.StatusOK {
				t.Errorf("the next refresh: %d (family revoked?)", c)
			}
			if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 2 {
				t.Errorf("token requests = %d, want 2 after the next refresh", got)
			}
		})
	}
}

// TestBackchannelLogoutReachesEveryReplica: the provider posts a logout
// token to replica 1; the session stops passing on replicas 2 and 3.
func TestBackchannelLogoutReachesEveryReplica(t *testing.T) {
	s, idp, _ := redisStack(t, config.StoreCookie)
	cookies := signInHTTP(t, s)
	for _, rep := range s.Replicas {
		if c := check(t, rep, cookies); c != http.StatusOK {
			t.Fatalf("replica %s before the logout: %d", rep, c)
		}
	}
	form := url.Values{"logout_token": {idp.LogoutToken(providertest.DefaultUser().Subject, "")}}
	resp, err := http.PostForm("http://"+s.Replicas[0]+"/oauth2/backchannel_logout", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("back-channel logout on replica 1: %d", resp.StatusCode)
	}
	start := time.Now()
	for _, rep := range s.Replicas[1:] {
		for check(t, rep, cookies) != http.StatusUnauthorized {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("replica %s still passes the session 5 s after the logout", rep)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Logf("the logout reached replicas 2 and 3 within %v", time.Since(start))
	if c := httpGet(t, s.URL+"/app/", cookies).StatusCode; c != http.StatusFound {
		t.Errorf("through nginx after the logout: %d, want 302 to sign-in", c)
	}
}

// TestEntraSizedSessionInRedis: Entra ID's token set (8.5 KB of tokens, 40
// groups) in Redis mode: one cookie under 200 bytes, and a refresh through
// nginx that needs no new cookie at all.
func TestEntraSizedSessionInRedis(t *testing.T) {
	entra := testenv.LoadTokenSet(t, "entra")
	user := providertest.DefaultUser()
	user.Groups = testenv.EntraGroups()
	s, idp, _ := redisStackTTL(t, config.StoreRedis, 2*time.Second, 10*time.Second, providertest.WithUser(user))
	idp.ServeTokens(entra.AccessToken, entra.RefreshToken)
	cookies := signInHTTP(t, s)
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	size := len(cookies[0].Name) + 1 + len(cookies[0].Value)
	t.Logf("Entra-sized session in Redis: one cookie of %d bytes", size)
	if size >= 200 {
		t.Errorf("cookie %d bytes, want under 200", size)
	}
	// Past half the access token's life the next page load refreshes; the
	// app behind nginx sees the 40 groups.
	time.Sleep(1500 * time.Millisecond)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/app/groups", nil)
	req.AddCookie(cookies[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the refresh: %d", resp.StatusCode)
	}
	if got := idp.TokenRequests(providertest.GrantRefreshToken); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if h := resp.Header.Values("Set-Cookie"); len(h) != 0 {
		t.Errorf("the refresh sent cookies: %v", h)
	}
	m := regexp.MustCompile(`data-header="X-Auth-Request-Groups">([^<]*)<`).FindSubmatch(body)
	if m == nil || len(splitComma(string(m[1]))) != 40 {
		t.Errorf("the app did not see the 40 groups: %q", m)
	}
}

// TestRedisKilledMidRun: Redis dies under load. Cookie-store checks keep
// passing from the cookie, never a 5xx; with the session in Redis the
// checks answer 401 (nginx: 302 to sign-in), never a 5xx. (That a refresh
// then falls back to the replica's own single flight is shown in
// pkg/handlers' TestReplicasRedisDown.)
func TestRedisKilledMidRun(t *testing.T) {
	for _, store := range []string{config.StoreCookie, config.StoreRedis} {
		t.Run(store, func(t *testing.T) {
			s, _, r := redisStackTTL(t, store, time.Hour, time.Second)
			cookies := signInHTTP(t, s)
			ctx, cancel := context.WithCancel(t.Context())
			var mu sync.Mutex
			statuses := map[int]int{}
			var total atomic.Int32
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for ctx.Err() == nil {
						c := httpGet(t, s.URL+"/app/load", cookies).StatusCode
						mu.Lock()
						statuses[c]++
						mu.Unlock()
						total.Add(1)
					}
				})
			}
			time.Sleep(300 * time.Millisecond)
			r.Kill()
			time.Sleep(700 * time.Millisecond)
			cancel()
			wg.Wait()
			t.Logf("%s store, redis killed mid-run: %d requests, statuses %v", store, total.Load(), statuses)
			for code, n := range statuses {
				if code >= 500 || code == 0 {
					t.Errorf("%d answers with status %d", n, code)
				}
			}
			after := check(t, s.Replicas[1], cookies)
			switch store {
			case config.StoreCookie:
				if statuses[http.StatusOK] != int(total.Load()) || after != http.StatusOK {
					t.Errorf("cookie store: not every check passed (after: %d)", after)
				}
			case config.StoreRedis:
				if after != http.StatusUnauthorized {
					t.Errorf("redis store with redis down: %d, want 401", after)
				}
			}
			resp := httpGet(t, "http://"+s.Replicas[0]+"/readyz", nil)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("readyz with redis down: %d, want 200 (reported, not failed)", resp.StatusCode)
			}
		})
	}
}
