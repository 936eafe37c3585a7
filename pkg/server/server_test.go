package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/redisstore"
)

func TestPprofOptIn(t *testing.T) {
	mainAddr, metricsAddr := serve(t, func(c *config.Config) { c.Server.Pprof = true })
	if code, body := get(t, "http://"+metricsAddr+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on the metrics listener: %d", code)
	}
	if code, _ := get(t, "http://"+mainAddr+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof on the main listener: %d", code)
	}
}

// serve runs a server against a fake provider, with update applied to its
// config, until the test ends; it returns the main and metrics addresses.
func serve(t *testing.T, update func(*config.Config)) (string, string) {
	t.Helper()
	idp := providertest.New(t)
	cfg := config.Default()
	cfg.OIDC.IssuerURL, cfg.OIDC.ClientID, cfg.OIDC.ClientSecret = idp.Issuer, idp.ClientID, idp.ClientSecret
	cfg.Session.Secrets = []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	update(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return serveConfig(t, cfg)
}

// serveConfig runs a server with cfg until the test ends; it returns the
// main and metrics addresses.
func serveConfig(t *testing.T, cfg *config.Config) (string, string) {
	t.Helper()
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	mainLn, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsLn, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, mainLn, metricsLn) }()
	t.Cleanup(func() { cancel(); <-done })
	return mainLn.Addr().String(), metricsLn.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeLifecycle runs the real server on loopback: a provider that is
// down at start-up gives /readyz 503 and /healthz 200 (no crash), readiness
// follows once the provider answers, /metrics is on its own listener, and
// cancelling the context shuts down cleanly.
func TestServeLifecycle(t *testing.T) {
	idp := providertest.New(t)
	idp.SetFault(providertest.EndpointDiscovery, providertest.Fault503)

	cfg := config.Default()
	cfg.OIDC.IssuerURL = idp.Issuer
	cfg.OIDC.ClientID = idp.ClientID
	cfg.OIDC.ClientSecret = idp.ClientSecret
	cfg.Session.Secrets = []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	cfg.Server.ShutdownTimeout = config.Duration{Duration: 5 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	mainLn, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsLn, _ := net.Listen("tcp", "127.0.0.1:0")
	base := "http://" + mainLn.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, mainLn, metricsLn) }()

	// Wait until discovery has failed at least once.
	for idp.Calls(providertest.EndpointDiscovery) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz = %d while the provider is down", code)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz = %d while the provider is down", code)
	}
	if code, _ := get(t, base+"/oauth2/auth"); code != http.StatusUnauthorized {
		t.Errorf("auth = %d while the provider is down, want 401", code)
	}

	idp.SetFault(providertest.EndpointDiscovery, providertest.FaultNone)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := get(t, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never became ready after the provider came up")
		}
		time.Sleep(100 * time.Millisecond)
	}

	code, body := get(t, "http://"+metricsLn.Addr().String()+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, `extauth_build_info{goversion=`) || !strings.Contains(body, "extauth_auth_requests_total") {
		t.Errorf("metrics: %d\n%.300s", code, body)
	}
	if code, _ := get(t, base+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics is served on the main listener: %d", code)
	}
	if code, _ := get(t, "http://"+metricsLn.Addr().String()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof served although server.pprof is off: %d", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown")
	}
	if resp, err := http.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("still serving after shutdown")
	}
}

// TestServeWithRedisDown: a Redis that is unreachable at start-up delays
// serving by the bounded wait for the logout records, no more, and /readyz
// then reports it without failing.
func TestServeWithRedisDown(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	mainAddr, _ := serve(t, func(c *config.Config) {
		c.Session.Redis.Enabled = true
		c.Session.Redis.Address = deadAddr
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, "http://"+mainAddr+"/readyz")
		if code == http.StatusOK {
			if !strings.Contains(body, "redis: unavailable") {
				t.Errorf("readyz body %q does not report redis", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready with redis down: %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisOptions: session.redis maps onto redisstore's options, the CA
// bundle read from its file.
func TestRedisOptions(t *testing.T) {
	caPEM := testenv.SelfSignedCAPEM(t, "test CA")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := config.Redis{
		Enabled: true, Address: "unused:6379", Username: "u", Password: "p", DB: 2, KeyPrefix: "x:",
		TLS:      config.RedisTLS{Enabled: true, CAFile: caFile, ServerName: "redis.test"},
		Sentinel: config.RedisSentinel{MasterName: "m", Addresses: []string{"s0:26379", "s1:26379"}, Password: "sp"},
	}
	got, err := redisOptions(r)
	if err != nil {
		t.Fatal(err)
	}
	want := redisstore.Options{
		Address: "unused:6379", Username: "u", Password: "p", DB: 2, KeyPrefix: "x:",
		MasterName: "m", SentinelAddresses: []string{"s0:26379", "s1:26379"}, SentinelPassword: "sp",
		TLS: &redisstore.TLS{CAPEM: caPEM, ServerName: "redis.test"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("redisOptions =\n%+v\nwant\n%+v", got, want)
	}

	plain, err := redisOptions(config.Redis{Address: "redis:6379", KeyPrefix: "x:", Sentinel: config.RedisSentinel{Password: "unused"}})
	if err != nil || !reflect.DeepEqual(plain, redisstore.Options{Address: "redis:6379", KeyPrefix: "x:"}) {
		t.Errorf("without TLS and Sentinel: %+v, %v", plain, err)
	}

	r.TLS.CAFile = filepath.Join(t.TempDir(), "gone.pem")
	if _, err := redisOptions(r); err == nil || !strings.HasPrefix(err.Error(), "session.redis.tls.caFile: ") {
		t.Errorf("missing CA file: %v", err)
	}
}

// TestNewReadsCA: New reads oidc.caFile and names it when it cannot.
func TestNewReadsCA(t *testing.T) {
	cfg := config.Default()
	cfg.OIDC.IssuerURL, cfg.OIDC.ClientID = "https://idp.example.com", "extauth"
	cfg.Session.Secrets = []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	cfg.OIDC.CAFile = filepath.Join(t.TempDir(), "gone.pem")
	if _, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test"); err == nil || !strings.HasPrefix(err.Error(), "oidc.caFile: ") {
		t.Errorf("New with a missing oidc.caFile: %v", err)
	}
}

// TestServeAppBearerIssuers: server.New builds each app's bearer issuers:
// through the real listener, a CI token (its own issuer, found by
// discovery on the first token) passes grafana's check, and is refused at
// wiki, which lists no issuer.
func TestServeAppBearerIssuers(t *testing.T) {
	idp := providertest.New(t)
	ci := providertest.New(t)
	cfg, err := config.Parse([]byte(`
oidc: {issuerURL: ` + idp.Issuer + `, clientID: ` + idp.ClientID + `, clientSecret: ` + idp.ClientSecret + `}
session: {secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}
apps:
  - {name: grafana, hosts: [grafana.example.com], session: {cookieName: _g}, authorization: {bearer: [{issuerURL: ` + ci.Issuer + `, audiences: [grafana-ci]}]}}
  - {name: wiki, hosts: [wiki.example.com], session: {cookieName: _w}}
`))
	if err != nil {
		t.Fatal(err)
	}
	mainAddr, _ := serveConfig(t, cfg)

	tok := ci.SignJWT(map[string]any{"iss": ci.Issuer, "sub": "repo:org/grafana", "aud": "grafana-ci",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	check := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+mainAddr+"/oauth2/auth", nil)
		req.Header.Set("X-Original-URL", "https://"+host+"/api/dashboards")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("X-Auth-Request-User")
	}
	if code, user := check("grafana.example.com"); code != http.StatusOK || user != "repo:org/grafana" {
		t.Errorf("grafana with a CI token: %d, user %q", code, user)
	}
	if code, _ := check("wiki.example.com"); code != http.StatusUnauthorized {
		t.Errorf("wiki with grafana's CI token: %d, want 401", code)
	}
	if n := ci.Calls(providertest.EndpointDiscovery); n != 1 {
		t.Errorf("CI issuer discoveries = %d, want 1 (on the first token)", n)
	}
}
