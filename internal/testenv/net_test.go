package testenv

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitHTTP: the wait ends on the first answer below 500 (a redirect
// counts, not followed), or on WantStatus; it gives up after the timeout
// with the last status, and at once when Alive fails.
func TestWaitHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case r.URL.Path == "/found":
			http.Redirect(w, r, "/nowhere", http.StatusFound)
		case n < 3:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	if err := WaitHTTP(ctx, srv.URL+"/readyz", 5*time.Second, WantStatus(http.StatusOK)); err != nil || calls.Load() != 3 {
		t.Errorf("WantStatus(200): %v after %d calls", err, calls.Load())
	}
	if err := WaitHTTP(ctx, srv.URL+"/found", time.Second); err != nil {
		t.Errorf("a redirect: %v", err)
	}
	err := WaitHTTP(ctx, srv.URL+"/found", 200*time.Millisecond, WantStatus(http.StatusOK))
	if err == nil || !strings.Contains(err.Error(), "status 302, want 200") {
		t.Errorf("a redirect for WantStatus(200): %v", err)
	}
	gone := errors.New("the process exited")
	start := time.Now()
	err = WaitHTTP(ctx, srv.URL+"/found", 5*time.Second, WantStatus(http.StatusOK), Alive(func() error { return gone }))
	if !errors.Is(err, gone) || time.Since(start) > time.Second {
		t.Errorf("Alive failing: %v after %s", err, time.Since(start))
	}
}
