package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/server"
)

// inProcessExtauth runs extauth's server inside the test process: the
// storm's logic without building the binary (make bench-load runs the
// storm against the built binary, a process of its own).
func inProcessExtauth(ctx context.Context, conf func(addr, metricsAddr string) string) (*stormServer, error) {
	mainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		mainLn.Close()
		return nil, err
	}
	cfg, err := config.Parse([]byte(conf(mainLn.Addr().String(), metricsLn.Addr().String())))
	if err == nil {
		var srv *server.Server
		if srv, err = server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "bench"); err == nil {
			runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
			served := make(chan error, 1)
			go func() { served <- srv.Serve(runCtx, mainLn, metricsLn) }()
			s := &stormServer{
				base:    "http://" + mainLn.Addr().String(),
				metrics: "http://" + metricsLn.Addr().String(),
				stop:    func() { stop(); <-served },
			}
			if err := testenv.WaitHTTP(ctx, s.base+"/readyz", 15*time.Second); err != nil {
				s.stop()
				return nil, fmt.Errorf("extauth (in-process) not ready: %w", err)
			}
			return s, nil
		}
	}
	mainLn.Close()
	metricsLn.Close()
	return nil, err
}

// TestRefreshStorm: 200 sessions with expired access tokens, 20 concurrent
// checks each, against a provider with rotation and reuse detection: every
// check passes, exactly one token request per session, no invalid_grant.
// It waits 2 s of real time once (the access tokens' lifetime).
func TestRefreshStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("the storm waits for real access tokens to expire")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runStorm(ctx, stormOptions{Sessions: 200, PerSession: 20}, inProcessExtauth)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.markdown())
	if err := res.OK(); err != nil {
		t.Error(err)
	}
}

// TestStormResultOK: the bar the storm is held to fails on each way of
// missing it.
func TestStormResultOK(t *testing.T) {
	good := func() *stormResult {
		return &stormResult{Sessions: 2, Checks: 4, Status: map[int]int{200: 4}, TokenRequests: 2,
			Refreshes: map[string]float64{"success": 2, "shared": 2}}
	}
	if err := good().OK(); err != nil {
		t.Fatalf("good storm: %v", err)
	}
	for name, spoil := range map[string]func(*stormResult){
		"a 401":             func(r *stormResult) { r.Status = map[int]int{200: 3, 401: 1} },
		"a lost request":    func(r *stormResult) { r.Status = map[int]int{200: 3, 0: 1} },
		"a second refresh":  func(r *stormResult) { r.TokenRequests = 3 },
		"a missing refresh": func(r *stormResult) { r.TokenRequests = 1 },
		"an invalid_grant":  func(r *stormResult) { r.Refreshes["invalid_grant"] = 1 },
		"a revoked family":  func(r *stormResult) { r.RevokedFamilies = 1 },
	} {
		r := good()
		spoil(r)
		if r.OK() == nil {
			t.Errorf("%s: passed", name)
		}
	}
}
