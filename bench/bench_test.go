package main

import (
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/server"
	"github.com/extauth/extauth/pkg/session"
)

// TestMain lets the test binary serve as floor-go's auth service, as the
// benchmark's own binary does (newBench runs os.Executable()).
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "floor-go" {
		serveFloor(os.Args[2])
		return
	}
	os.Exit(m.Run())
}

func oktaPath(t *testing.T) string {
	t.Helper()
	return testenv.TokenSetPath(testenv.RepoRoot(t), "okta")
}

// TestSealSession: the session case 3 sends opens with the config's secret
// to the Okta token set, and is Okta-sized.
func TestSealSession(t *testing.T) {
	ts, claims, err := loadTokenSet(oktaPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if claims.Sub == "" || claims.Email == "" {
		t.Fatalf("claims of the Okta ID token: %+v", claims)
	}
	b := &bench{issuer: "http://127.0.0.1:1", clientID: "c", clientSec: "s", secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	cfg, err := config.Parse([]byte(b.extauthConfig("127.0.0.1:1", "127.0.0.1:2", "")))
	if err != nil {
		t.Fatal(err)
	}
	cookie, n, err := sealSession(cfg, ts, claims)
	if err != nil {
		t.Fatal(err)
	}
	if size := cookieHeaderSize(cookie); size < 1500 || size > 4000 || n <= 0 {
		t.Errorf("cookie of %d B (encoded %d B): not Okta-sized", size, n)
	}
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", cookie)
	st, err := session.NewStore(codec, server.CookieOptions(cfg), time.Now).Load(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Tokens(); got.AccessToken != ts.AccessToken || got.RefreshToken != ts.RefreshToken || st.Email != claims.Email {
		t.Errorf("the sealed session does not hold the token set")
	}
	if !st.AccessExpiry.After(time.Now().Add(30 * time.Minute)) {
		t.Errorf("access token expires at %v: checks would refresh", st.AccessExpiry)
	}

	// The redis-store config parses to that store, on the given address.
	cfg, err = config.Parse([]byte(b.extauthConfig("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:6390")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Session.Store != config.StoreRedis || cfg.Session.Redis.Address != "127.0.0.1:6390" {
		t.Errorf("redis config: store %q at %q", cfg.Session.Store, cfg.Session.Redis.Address)
	}
}

func TestScrapeMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`# HELP extauth_auth_requests_total Auth checks answered.
extauth_auth_requests_total{app="",endpoint="auth",result="authenticated"} 1234
extauth_auth_requests_total{app="",endpoint="auth",result="unauthenticated"} 5
extauth_auth_requests_total{app="wiki",endpoint="auth",result="authenticated"} 40
extauth_auth_requests_total{app="",endpoint="forward",result="authenticated"} 99
extauth_auth_requests_total_extra{app="",endpoint="auth",result="authenticated"} 7
extauth_token_refreshes_total{result="success"} 2e+02
`))
	}))
	defer srv.Close()
	got, err := scrapeMetric(context.Background(), srv.URL, "extauth_auth_requests_total", "result", `endpoint="auth"`, `app=""`)
	if err != nil {
		t.Fatal(err)
	}
	if got["authenticated"] != 1234 || got["unauthenticated"] != 5 || len(got) != 2 {
		t.Errorf("got %v", got)
	}
	got, err = scrapeMetric(context.Background(), srv.URL, "extauth_token_refreshes_total", "result")
	if err != nil || got["success"] != 200 {
		t.Errorf("got %v, %v", got, err)
	}
}

// TestCases runs every case but oauth2-proxy's (unless OAUTH2_PROXY names
// its binary) for a second each, and a small refresh storm against the
// built binary: nginx, wrk and redis-server must be installed (Debian:
// nginx libnginx-mod-http-ndk libnginx-mod-http-set-misc wrk redis-server).
func TestCases(t *testing.T) {
	if testing.Short() {
		t.Skip("builds extauth and runs nginx, wrk and redis-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := options{
		wrk:          wrkParams{Threads: 1, Connections: 4, Duration: time.Second},
		nginxWorkers: 1,
		o2pVersion:   "v7.15.6",
		o2pBin:       os.Getenv("OAUTH2_PROXY"),
		noO2P:        os.Getenv("OAUTH2_PROXY") == "",
		noStorm:      true,
	}
	if o.noO2P {
		t.Log("oauth2-proxy cases skipped: set OAUTH2_PROXY to an oauth2-proxy binary to run them too")
	}
	for _, tool := range []string{"nginx", "wrk", "redis-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Fatalf("%s not installed", tool)
			}
		}
	}
	b, err := newBench(ctx, o)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		t.Fatal(err)
	}
	results, err := b.runCases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"floor-nginx", "floor-go", "extauth", "oauth2-proxy", "extauth-direct", "oauth2-proxy-direct", "extauth-401", "extauth-redis", "floor-go-direct"}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for i, r := range results {
		if r.key != want[i] {
			t.Errorf("result %d is %s, want %s", i, r.key, want[i])
			continue
		}
		if r.unavailable != "" {
			if !o.noO2P || !strings.HasPrefix(r.key, "oauth2-proxy") {
				t.Errorf("%s unavailable: %s", r.key, r.unavailable)
			}
			continue
		}
		if r.w.Requests < 10 || r.w.RPS <= 0 || r.w.P50 <= 0 || r.w.P99 < r.w.P50 {
			t.Errorf("%s: %d requests, %.0f/s, p50 %v, p99 %v", r.key, r.w.Requests, r.w.RPS, r.w.P50, r.w.P99)
		}
		// The only notes expected: redis-server's CPU and commands (case 8).
		for _, n := range r.notes {
			if r.key != "extauth-redis" || !strings.HasPrefix(n, "redis-server CPU") && !strings.HasPrefix(n, "Redis commands per check") {
				t.Errorf("%s: %s", r.key, n)
			}
		}
		if r.key == "extauth-redis" && r.redisPerCheck < 0.9 {
			t.Errorf("%s: %.2f Redis commands per check: the checks do not read the sessions from Redis", r.key, r.redisPerCheck)
		}
		if hasAuth := r.service != nil; hasAuth != (r.authCPU >= 0) || hasAuth != (r.rss > 0) {
			t.Errorf("%s: auth CPU %v, RSS %d", r.key, r.authCPU, r.rss)
		}
		if r.viaNginx != (r.nginxCPU >= 0) {
			t.Errorf("%s: nginx CPU %v", r.key, r.nginxCPU)
		}
	}
	if n := cookieHeaderSize(b.redisCookie); n == 0 || n > 200 {
		t.Errorf("redis store cookie of %d B, want a ticket (about 112 B)", n)
	}
	report := b.report(results, nil, nil)
	for _, want := range []string{"| 3. extauth | ", "| 8. extauth, redis store | ", "| extauth / floor-go (through nginx) | ", b.machine.CPU, b.machine.Kernel} {
		if !strings.Contains(report, want) {
			t.Errorf("report without %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "| extauth / floor-go (through nginx) | n/a") {
		t.Errorf("no extauth / floor-go ratio:\n%s", report)
	}

	// A small storm against the built binary (TestRefreshStorm runs the
	// full one in-process).
	storm, err := runStorm(ctx, stormOptions{Sessions: 10, PerSession: 5}, b.stormExtauth)
	if err != nil {
		t.Fatal(err)
	}
	if err := storm.OK(); err != nil {
		t.Errorf("%v\n%s", err, storm.markdown())
	}
	if storm.PeakRSS <= 0 {
		t.Errorf("storm against the binary without its RSS")
	}
}
