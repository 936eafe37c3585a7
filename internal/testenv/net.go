package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := PickPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PickPort is FreePort for programs.
func PickPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitOption narrows what WaitHTTP (or Redis.Wait: Alive only) waits for.
type WaitOption func(*waitOptions)

type waitOptions struct {
	status int          // 0: any status below 500
	alive  func() error // nil: no process to watch
}

// WantStatus makes the wait end on that status only, not on any below 500
// (the benchmark's storm waits for the 302 of /oauth2/start, which extauth
// answers once it has discovered the provider).
func WantStatus(code int) WaitOption { return func(o *waitOptions) { o.status = code } }

// Alive ends the wait early with alive's error once it returns one: the
// process that should answer has exited, and the error says how.
func Alive(alive func() error) WaitOption { return func(o *waitOptions) { o.alive = alive } }

// WaitHTTP GETs url (redirects not followed) every 50 ms until it answers
// a status below 500 (or the WantStatus), up to timeout: how the tests, the
// e2e stack and the benchmark know that a process they started is up
// (extauth's /readyz, nginx, oauth2-proxy's /ping).
func WaitHTTP(ctx context.Context, url string, timeout time.Duration, opts ...WaitOption) error {
	var o waitOptions
	for _, opt := range opts {
		opt(&o)
	}
	client := &http.Client{
		Timeout:       time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	err := poll(ctx, timeout, 50*time.Millisecond, o.alive, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		switch {
		case o.status == 0 && resp.StatusCode < 500, resp.StatusCode == o.status:
			return nil
		case o.status != 0:
			return fmt.Errorf("status %d, want %d", resp.StatusCode, o.status)
		}
		return fmt.Errorf("status %d", resp.StatusCode)
	})
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// poll calls try every interval until it succeeds, alive (when set) fails,
// ctx ends or timeout passes, and returns nil, alive's error, or try's last
// error and how long it tried.
func poll(ctx context.Context, timeout, interval time.Duration, alive func() error, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up after %s: %w)", err, time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-time.After(interval):
		}
	}
}
