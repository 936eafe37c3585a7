package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/server"
	"github.com/extauth/extauth/pkg/session"
)

type stormOptions struct {
	Sessions   int // distinct signed-in sessions (200)
	PerSession int // concurrent checks per session (20)
}

// stormResult is what the refresh storm measured.
type stormResult struct {
	Sessions, Checks int
	Status           map[int]int // answers by status code
	WithSetCookie    int         // 200s that carried the refreshed session
	TokenRequests    int         // refresh_token grants the provider received
	Refreshes        map[string]float64
	RevokedFamilies  int // sign-ins the provider revoked (reuse detected)
	SignIns          time.Duration
	Wall             time.Duration // first check sent to last answer
	P50, P99, Max    time.Duration
	// The latency split: until the client had its connection (dial and
	// accept under 4,000 connects at once), and from then to the answer.
	ConnectP50, ConnectP99 time.Duration
	ServedP50, ServedP99   time.Duration
	// Of extauth's process (pid > 0 only): CPU seconds from the release of
	// the checks to the last answer, and peak RSS (VmHWM) after the storm.
	CPU     float64
	PeakRSS int64
}

// OK reports whether the storm met its bar: every check 200, one token
// request per session, no invalid_grant, no revoked family.
func (r *stormResult) OK() error {
	var errs []error
	if r.Status[http.StatusOK] != r.Checks {
		errs = append(errs, fmt.Errorf("%d of %d checks answered 200 (%v)", r.Status[http.StatusOK], r.Checks, r.Status))
	}
	if r.TokenRequests != r.Sessions {
		errs = append(errs, fmt.Errorf("%d refresh-token requests for %d sessions, want exactly one each", r.TokenRequests, r.Sessions))
	}
	if n := r.Refreshes["invalid_grant"]; n != 0 {
		errs = append(errs, fmt.Errorf("%v refreshes ended in invalid_grant", n))
	}
	if r.RevokedFamilies != 0 {
		errs = append(errs, fmt.Errorf("the provider revoked %d token families (refresh-token reuse)", r.RevokedFamilies))
	}
	return errors.Join(errs...)
}

func (r *stormResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| figure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| sessions (distinct sign-ins, access tokens expired) | %d |\n", r.Sessions)
	fmt.Fprintf(&b, "| concurrent checks (%d per session, released at once) | %d |\n", r.Checks/max(r.Sessions, 1), r.Checks)
	fmt.Fprintf(&b, "| answered 200 | %d |\n", r.Status[http.StatusOK])
	if other := r.Checks - r.Status[http.StatusOK]; other > 0 {
		fmt.Fprintf(&b, "| other answers | %d (%v) |\n", other, r.Status)
	}
	fmt.Fprintf(&b, "| 200s carrying the refreshed cookie | %d |\n", r.WithSetCookie)
	fmt.Fprintf(&b, "| refresh-token requests at the provider | %d |\n", r.TokenRequests)
	fmt.Fprintf(&b, "| extauth_token_refreshes_total success / shared / invalid_grant / idp_unavailable | %v / %v / %v / %v |\n",
		r.Refreshes["success"], r.Refreshes["shared"], r.Refreshes["invalid_grant"], r.Refreshes["idp_unavailable"])
	fmt.Fprintf(&b, "| token families revoked by reuse detection | %d |\n", r.RevokedFamilies)
	fmt.Fprintf(&b, "| storm wall time (first check sent → last answer) | %s |\n", fmtDur(r.Wall))
	fmt.Fprintf(&b, "| check latency p50 / p99 / max | %s / %s / %s |\n", fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max))
	fmt.Fprintf(&b, "| of which connecting p50 / p99; connected → answer p50 / p99 | %s / %s; %s / %s |\n",
		fmtDur(r.ConnectP50), fmtDur(r.ConnectP99), fmtDur(r.ServedP50), fmtDur(r.ServedP99))
	if r.PeakRSS > 0 {
		fmt.Fprintf(&b, "| extauth CPU during the storm / peak RSS after it | %.2f s / %s |\n", r.CPU, fmtRSS(r.PeakRSS, true))
	}
	fmt.Fprintf(&b, "| result | %s |\n", okText(r.OK()))
	return b.String()
}

func okText(err error) string {
	if err == nil {
		return "**pass**: all 200, exactly one token request per session, zero invalid_grant"
	}
	return "**FAIL**: " + strings.ReplaceAll(err.Error(), "\n", "; ")
}

// stormServer is an extauth that the storm checks: base and metrics are
// http://host:port of its two listeners; pid is its process, 0 when it runs
// inside this one (the tests).
type stormServer struct {
	base, metrics string
	pid           int
	stop          func()
}

// stormRunner starts extauth with the config that conf makes for its two
// addresses (host:port), and returns once it is ready.
type stormRunner func(ctx context.Context, conf func(addr, metricsAddr string) string) (*stormServer, error)

// runStorm runs extauth (through run) against the fake provider (rotation
// and reuse detection, 2-second access tokens), signs in o.Sessions times
// through /oauth2/start → /authorize → /oauth2/callback, waits for the
// access tokens to expire, then sends o.PerSession concurrent checks for
// every session at once.
func runStorm(ctx context.Context, o stormOptions, run stormRunner) (*stormResult, error) {
	if o.Sessions < 1 || o.PerSession < 1 {
		return nil, fmt.Errorf("storm: %d sessions × %d checks: both must be at least 1", o.Sessions, o.PerSession)
	}
	const accessTTL = 2 * time.Second
	idp, err := providertest.Start(providertest.WithClock(time.Now), providertest.WithAccessTokenTTL(accessTTL))
	if err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	defer idp.Close()

	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	conf := func(addr, metricsAddr string) string {
		return fmt.Sprintf(`
server:
  address: %q
  metricsAddress: %q
  shutdownTimeout: 5s
oidc:
  issuerURL: %q
  clientID: %q
  clientSecret: %q
  redirectURL: %q
session:
  cookieSecure: false
  refreshBefore: 1s
  secrets: [%q]
logging:
  level: warn
`, addr, metricsAddr, idp.Issuer, idp.ClientID, idp.ClientSecret, "http://"+addr+"/oauth2/callback",
			base64.StdEncoding.EncodeToString(secret))
	}
	// The same file, parsed here, opens the sessions' cookies afterwards.
	cfg, err := config.Parse([]byte(conf("127.0.0.1:1", "127.0.0.1:2")))
	if err != nil {
		return nil, fmt.Errorf("storm config: %w", err)
	}
	srv, err := run(ctx, conf)
	if err != nil {
		return nil, fmt.Errorf("storm: start extauth: %w", err)
	}
	defer srv.stop()
	base := srv.base
	if err := testenv.WaitHTTP(ctx, base+"/oauth2/start", 15*time.Second, testenv.WantStatus(http.StatusFound)); err != nil {
		return nil, fmt.Errorf("extauth never discovered the provider: %w", err)
	}

	res := &stormResult{Sessions: o.Sessions, Checks: o.Sessions * o.PerSession, Status: map[int]int{}}
	name := cfg.Session.CookieName
	isSession := func(n string) bool {
		return n == name || strings.HasPrefix(n, name+"_") && !strings.HasSuffix(n, "_csrf")
	}
	cookies := make([]string, o.Sessions)
	t0 := time.Now()
	for i := range cookies {
		if cookies[i], err = signIn(ctx, base+"/oauth2/start?rd=%2F", isSession); err != nil {
			return nil, fmt.Errorf("sign-in %d: %w", i+1, err)
		}
	}
	lastSignIn := time.Now()
	res.SignIns = lastSignIn.Sub(t0)
	if distinct := len(slices.Compact(slices.Sorted(slices.Values(cookies)))); distinct != o.Sessions {
		return nil, fmt.Errorf("%d sign-ins gave %d distinct sessions", o.Sessions, distinct)
	}
	if n := idp.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		return nil, fmt.Errorf("%d refreshes before the storm", n)
	}

	// Every access token has expired (by both clocks) once accessTTL has
	// passed since the last sign-in: the one wait of real time.
	select {
	case <-time.After(time.Until(lastSignIn.Add(accessTTL + 200*time.Millisecond))):
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	total := o.Sessions * o.PerSession
	transport := &http.Transport{MaxIdleConns: total, MaxIdleConnsPerHost: total, IdleConnTimeout: 30 * time.Second}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, CheckRedirect: noRedirect, Timeout: 30 * time.Second}
	type answer struct {
		status    int
		setCookie bool
		latency   time.Duration
		connect   time.Duration // until the connection was there
		err       error
	}
	answers := make([]answer, total)
	release := make(chan struct{})
	var ready, done sync.WaitGroup
	for i := range total {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			var start, connected time.Time
			trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected = time.Now() }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, base+"/oauth2/auth", nil)
			req.Header.Set("Cookie", cookies[i%o.Sessions])
			req.Header.Set("X-Original-URL", "http://app.example/")
			req.Header.Set("X-Original-Method", http.MethodGet)
			ready.Done()
			<-release
			start = time.Now()
			resp, err := client.Do(req)
			a := answer{latency: time.Since(start), err: err}
			if !connected.IsZero() {
				a.connect = connected.Sub(start)
			}
			if err == nil {
				a.status = resp.StatusCode
				for _, ck := range resp.Cookies() {
					if ck.Name == name && ck.MaxAge >= 0 && ck.Value != "" {
						a.setCookie = true
					}
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			answers[i] = a
		}()
	}
	ready.Wait()
	var ticks0 int64
	if srv.pid > 0 {
		if ticks0, err = cpuTicks(srv.pid); err != nil {
			return nil, err
		}
	}
	stormStart := time.Now()
	close(release)
	done.Wait()
	res.Wall = time.Since(stormStart)
	if srv.pid > 0 {
		ticks1, err := cpuTicks(srv.pid)
		if err != nil {
			return nil, err
		}
		res.CPU = float64(ticks1-ticks0) / clockTicks
		if res.PeakRSS, err = peakRSS(srv.pid); err != nil {
			return nil, err
		}
	}

	var lat, conn, served []time.Duration
	var firstErr error
	for _, a := range answers {
		if a.err != nil {
			res.Status[0]++
			if firstErr == nil {
				firstErr = a.err
			}
			continue
		}
		res.Status[a.status]++
		if a.status == http.StatusOK && a.setCookie {
			res.WithSetCookie++
		}
		lat = append(lat, a.latency)
		conn = append(conn, a.connect)
		served = append(served, a.latency-a.connect)
	}
	res.P50, res.P99, res.Max = percentiles(lat)
	res.ConnectP50, res.ConnectP99, _ = percentiles(conn)
	res.ServedP50, res.ServedP99, _ = percentiles(served)
	res.TokenRequests = idp.TokenRequests(providertest.GrantRefreshToken)
	res.Refreshes, err = scrapeMetric(ctx, srv.metrics+"/metrics", "extauth_token_refreshes_total", "result")
	if err != nil {
		return nil, err
	}

	// Reuse detection revokes the whole family: look up each session's
	// original refresh token (its cookie opens with the same secret).
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		return nil, err
	}
	store := session.NewStore(codec, server.CookieOptions(cfg), time.Now)
	for _, c := range cookies {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", c)
		st, err := store.Load(r)
		if err != nil {
			return nil, fmt.Errorf("open a storm session: %w", err)
		}
		if idp.FamilyRevoked(st.RefreshToken()) {
			res.RevokedFamilies++
		}
	}
	if firstErr != nil && res.Status[0] == total {
		return res, fmt.Errorf("every storm check failed: %w", firstErr)
	}
	return res, nil
}

// percentiles returns p50, p99 and the max of d (zeros when empty); it
// sorts d.
func percentiles(d []time.Duration) (p50, p99, maxD time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[min(len(d)-1, len(d)*99/100)], d[len(d)-1]
}
