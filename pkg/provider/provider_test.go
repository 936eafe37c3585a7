package provider_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

const callback = "https://app.example.com/oauth2/callback"

// clock is the test's one clock, shared by extauth and the fake provider:
// expiry and the key refetch throttle move with it, never with sleeps.
type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)) }

// env is a provider.Provider configured for a providertest fake.
type env struct {
	t   *testing.T
	clk *clock
	idp *providertest.Provider
	p   *provider.Provider
	m   *metrics.Metrics
}

// newEnv starts a fake provider on the env's clock and builds (but does not
// discover) extauth's provider for it; update may change the config first.
func newEnv(t *testing.T, update func(*provider.Config), opts ...providertest.Option) *env {
	t.Helper()
	clk := newClock()
	idp := providertest.New(t, append([]providertest.Option{providertest.WithClock(clk.Now)}, opts...)...)
	e := &env{t: t, clk: clk, idp: idp, m: metrics.New(prometheus.NewRegistry(), "test")}
	e.p = e.newProvider(update)
	return e
}

// newProvider builds an undiscovered provider for the env's fake.
func (e *env) newProvider(update func(*provider.Config)) *provider.Provider {
	e.t.Helper()
	cfg := provider.Config{
		IssuerURL:    e.idp.Issuer,
		ClientID:     e.idp.ClientID,
		ClientSecret: e.idp.ClientSecret,
		Scopes:       []string{"openid", "email", "profile"},
		PKCE:         true,
	}
	if update != nil {
		update(&cfg)
	}
	p, err := provider.New(cfg, e.clk.Now, slog.New(slog.DiscardHandler), e.m)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) discover() *env {
	e.t.Helper()
	if err := e.p.Discover(e.t.Context()); err != nil {
		e.t.Fatalf("discover: %v", err)
	}
	return e
}

// authorize runs the browser leg through AuthCodeURL and returns the code
// and the PKCE verifier.
func (e *env) authorize(nonce string) (code, verifier string) {
	e.t.Helper()
	verifier = oauth2.GenerateVerifier()
	authURL, err := e.p.AuthCodeURL(callback, "st4te", nonce, verifier)
	if err != nil {
		e.t.Fatal(err)
	}
	cb := e.idp.Login(e.t, e.t.Context(), authURL)
	if q := cb.Query(); q.Get("state") != "st4te" || q.Get("code") == "" {
		e.t.Fatalf("callback = %s", cb)
	}
	return cb.Query().Get("code"), verifier
}

// signIn runs the whole code flow.
func (e *env) signIn() *provider.Tokens {
	e.t.Helper()
	code, verifier := e.authorize("n0nce")
	tok, err := e.p.Exchange(e.t.Context(), code, verifier, callback)
	if err != nil {
		e.t.Fatalf("exchange: %v", err)
	}
	return tok
}

// idClaims are valid ID-token claims for the env's client, by its clock.
func (e *env) idClaims() map[string]any {
	now := e.clk.Now()
	return map[string]any{
		"iss": e.idp.Issuer,
		"sub": "248289761001",
		"aud": e.idp.ClientID,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

func wantRetrieveError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v, want an *oauth2.RetrieveError", err)
	}
	if re.Response.StatusCode != status || re.ErrorCode != code {
		t.Fatalf("RetrieveError = %d %q (%s), want %d %q", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, status, code)
	}
}

// Every call needs discovery first; none may reach for a nil provider.
func TestNotReadyBeforeDiscovery(t *testing.T) {
	e := newEnv(t, nil)
	if e.p.Ready() || e.p.PKCE() {
		t.Fatal("Ready or PKCE before discovery")
	}
	ctx := t.Context()
	calls := map[string]func() error{
		"Endpoints":         func() error { _, err := e.p.Endpoints(); return err },
		"AuthCodeURL":       func() error { _, err := e.p.AuthCodeURL(callback, "s", "n", "v"); return err },
		"Exchange":          func() error { _, err := e.p.Exchange(ctx, "code", "", callback); return err },
		"Refresh":           func() error { _, err := e.p.Refresh(ctx, "rt"); return err },
		"Revoke":            func() error { return e.p.Revoke(ctx, "rt", "refresh_token") },
		"VerifyIDToken":     func() error { _, err := e.p.VerifyIDToken(ctx, "x.y.z"); return err },
		"VerifyBearer":      func() error { _, err := e.p.VerifyBearer(ctx, "x.y.z"); return err },
		"VerifyLogoutToken": func() error { _, err := e.p.VerifyLogoutToken(ctx, "x.y.z"); return err },
		"Userinfo":          func() error { _, err := e.p.Userinfo(ctx, "at"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, provider.ErrNotReady) {
			t.Errorf("%s: error = %v, want ErrNotReady", name, err)
		}
	}
	if n := e.idp.Calls(providertest.EndpointDiscovery); n != 0 {
		t.Errorf("New made %d discovery calls, want none", n)
	}
	e.discover()
	if !e.p.Ready() || !e.p.PKCE() {
		t.Fatalf("Ready = %v, PKCE = %v after discovery", e.p.Ready(), e.p.PKCE())
	}
}

func TestDiscoveryFailures(t *testing.T) {
	t.Run("issuer differs", func(t *testing.T) {
		// A proxy in front of the provider: its discovery document names the
		// provider's own issuer, which ID tokens would carry, not ours.
		idp := providertest.New(t)
		target, _ := url.Parse(idp.Issuer)
		proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
		t.Cleanup(proxy.Close)
		for _, issuer := range []string{proxy.URL, idp.Issuer + "/"} {
			p, err := provider.New(provider.Config{IssuerURL: issuer, ClientID: idp.ClientID}, time.Now, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Discover(t.Context()); err == nil || !strings.Contains(err.Error(), "issuer") {
				t.Errorf("issuer %s: Discover error = %v, want an issuer mismatch", issuer, err)
			}
			if p.Ready() {
				t.Errorf("issuer %s: ready after a refused discovery", issuer)
			}
		}
	})
	for _, endpoint := range []string{providertest.EndpointDiscovery, providertest.EndpointKeys} {
		// Ready means keys too: a broken jwks_uri is not ready.
		t.Run(endpoint+" down", func(t *testing.T) {
			e := newEnv(t, nil)
			e.idp.SetFault(endpoint, providertest.Fault503)
			if err := e.p.Discover(t.Context()); err == nil {
				t.Fatal("Discover succeeded with the provider down")
			}
			if e.p.Ready() {
				t.Fatal("ready with the provider down")
			}
			e.idp.SetFault(endpoint, providertest.FaultNone)
			e.discover()
			if !e.p.Ready() {
				t.Fatal("not ready once the provider is up")
			}
		})
	}
	t.Run("hanging provider times out", func(t *testing.T) {
		e := newEnv(t, func(c *provider.Config) { c.RequestTimeout = 200 * time.Millisecond })
		e.idp.SetFault(providertest.EndpointDiscovery, providertest.FaultHang)
		start := time.Now()
		if err := e.p.Discover(t.Context()); err == nil {
			t.Fatal("Discover succeeded against a hanging provider")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Discover took %v; RequestTimeout is 200ms", d)
		}
	})
}

// Run retries with backoff (1 s first, on the wall clock) until the
// provider answers.
func TestRunRetriesUntilDiscovered(t *testing.T) {
	e := newEnv(t, nil)
	e.idp.SetFaultN(providertest.EndpointDiscovery, providertest.Fault503, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.p.Run(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the provider came up")
	}
	if !e.p.Ready() {
		t.Fatal("Run returned without discovery")
	}
	if n := e.idp.Calls(providertest.EndpointDiscovery); n != 2 {
		t.Errorf("discovery calls = %d, want 2 (one failed, one retried)", n)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	e := newEnv(t, nil)
	e.idp.SetFault(providertest.EndpointDiscovery, providertest.Fault503)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.p.Run(ctx)
	}()
	for e.idp.Calls(providertest.EndpointDiscovery) == 0 {
		time.Sleep(5 * time.Millisecond) // waiting for the first attempt, not for expiry
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	if e.p.Ready() {
		t.Fatal("ready although discovery never succeeded")
	}
}

func TestEndpoints(t *testing.T) {
	basicPost := []string{providertest.AuthMethodBasic, providertest.AuthMethodPost}
	tests := []struct {
		name     string
		opts     []providertest.Option
		update   func(*provider.Config)
		want     func(idp *providertest.Provider) provider.Endpoints
		wantPKCE bool
	}{
		{
			name: "discovered",
			want: func(idp *providertest.Provider) provider.Endpoints {
				return provider.Endpoints{Revocation: idp.URL("revoke"), EndSession: idp.URL("end_session"),
					Userinfo: idp.URL("userinfo"), RevocationAuthMethods: basicPost}
			},
			wantPKCE: true,
		},
		{
			name: "configured URLs override discovery",
			update: func(c *provider.Config) {
				c.RevocationURL = "https://idp.example.com/oauth2/revoke"
				c.EndSessionURL = "https://idp.example.com/logout"
			},
			want: func(idp *providertest.Provider) provider.Endpoints {
				return provider.Endpoints{Revocation: "https://idp.example.com/oauth2/revoke", EndSession: "https://idp.example.com/logout",
					Userinfo: idp.URL("userinfo"), RevocationAuthMethods: basicPost}
			},
			wantPKCE: true,
		},
		{
			// Without revocation_endpoint_auth_methods_supported the token
			// endpoint's methods apply.
			name: "none advertised",
			opts: []providertest.Option{providertest.WithoutRevocation(), providertest.WithoutEndSession(),
				providertest.WithAuthMethods(providertest.AuthMethodPost), providertest.WithCodeChallengeMethods("plain")},
			want: func(idp *providertest.Provider) provider.Endpoints {
				return provider.Endpoints{Userinfo: idp.URL("userinfo"), RevocationAuthMethods: []string{providertest.AuthMethodPost}}
			},
		},
		{
			name: "configured revocation without discovery",
			opts: []providertest.Option{providertest.WithoutRevocation(), providertest.WithoutEndSession()},
			update: func(c *provider.Config) {
				c.RevocationURL, c.EndSessionURL = "https://r.example/", "https://e.example/"
			},
			want: func(idp *providertest.Provider) provider.Endpoints {
				return provider.Endpoints{Revocation: "https://r.example/", EndSession: "https://e.example/",
					Userinfo: idp.URL("userinfo"), RevocationAuthMethods: basicPost}
			},
			wantPKCE: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.update, tt.opts...).discover()
			got, err := e.p.Endpoints()
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want(e.idp)
			if got.Revocation != want.Revocation || got.EndSession != want.EndSession || got.Userinfo != want.Userinfo ||
				!slices.Equal(got.RevocationAuthMethods, want.RevocationAuthMethods) {
				t.Errorf("Endpoints() = %+v\nwant %+v", got, want)
			}
			if e.p.PKCE() != tt.wantPKCE {
				t.Errorf("PKCE() = %v, want %v", e.p.PKCE(), tt.wantPKCE)
			}
		})
	}
}

func TestAuthCodeURL(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mJ92K9_6MDwRwx3vRnWkXc1t6hN5Lo0xyzXYZ"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	tests := []struct {
		name          string
		opts          []providertest.Option
		update        func(*provider.Config)
		wantChallenge bool
	}{
		{name: "PKCE S256 advertised", wantChallenge: true},
		// Most providers that list no methods support S256 anyway.
		{name: "no challenge methods listed", opts: []providertest.Option{providertest.WithCodeChallengeMethods()}, wantChallenge: true},
		{name: "provider lists only plain", opts: []providertest.Option{providertest.WithCodeChallengeMethods("plain")}},
		{name: "PKCE off", update: func(c *provider.Config) { c.PKCE = false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			update := func(c *provider.Config) {
				c.Scopes = []string{"openid", "email", "groups"}
				c.ExtraAuthParams = map[string]string{"prompt": "login", "audience": "api://default"}
				if tt.update != nil {
					tt.update(c)
				}
			}
			e := newEnv(t, update, tt.opts...).discover()
			raw, err := e.p.AuthCodeURL(callback, "st4te", "n0nce", verifier)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.Scheme + "://" + u.Host + u.Path; got != e.idp.URL("authorize") {
				t.Errorf("authorization endpoint = %q", got)
			}
			q := u.Query()
			for k, want := range map[string]string{
				"response_type": "code", "client_id": e.idp.ClientID, "redirect_uri": callback,
				"scope": "openid email groups", "state": "st4te", "nonce": "n0nce",
				"prompt": "login", "audience": "api://default",
			} {
				if got := q.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tt.wantChallenge {
				if q.Get("code_challenge") != challenge || q.Get("code_challenge_method") != "S256" {
					t.Errorf("challenge = %q %q, want the S256 of the verifier", q.Get("code_challenge"), q.Get("code_challenge_method"))
				}
			} else if q.Has("code_challenge") || q.Has("code_challenge_method") {
				t.Errorf("PKCE parameters sent without PKCE: %v", q)
			}
			if q.Has("code_verifier") {
				t.Error("the verifier itself is in the URL")
			}
		})
	}
}

func TestExchange(t *testing.T) {
	e := newEnv(t, nil, providertest.WithPKCERequired(), providertest.WithAccessTokenTTL(15*time.Minute)).discover()
	tok := e.signIn()
	if tok.AccessToken == "" || tok.IDToken == "" || tok.RefreshToken == "" {
		t.Fatalf("tokens = %+v", tok)
	}
	if tok.Lifetime != 15*time.Minute {
		t.Errorf("Lifetime = %v, want expires_in, 15m", tok.Lifetime)
	}
	if want := e.clk.Now().Add(15 * time.Minute); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v (expires_in from our clock)", tok.Expiry, want)
	}
	idt, err := e.p.VerifyIDToken(t.Context(), tok.IDToken)
	if err != nil {
		t.Fatal(err)
	}
	// VerifyIDToken leaves the nonce to the caller: it must be there to check.
	if idt.Nonce != "n0nce" || idt.Subject != providertest.DefaultUser().Subject {
		t.Errorf("ID token nonce %q subject %q", idt.Nonce, idt.Subject)
	}
	if n := e.idp.TokenRequests(providertest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1", n)
	}
}

// A refused code is the provider's answer (a 4xx RetrieveError), which the
// callback reports differently from a provider it could not reach.
func TestExchangeRefused(t *testing.T) {
	tests := []struct {
		name string
		run  func(e *env) error
	}{
		{"unknown code", func(e *env) error {
			_, err := e.p.Exchange(e.t.Context(), "bogus", oauth2.GenerateVerifier(), callback)
			return err
		}},
		{"code used twice", func(e *env) error {
			code, verifier := e.authorize("n")
			if _, err := e.p.Exchange(e.t.Context(), code, verifier, callback); err != nil {
				e.t.Fatal(err)
			}
			_, err := e.p.Exchange(e.t.Context(), code, verifier, callback)
			return err
		}},
		{"wrong PKCE verifier", func(e *env) error {
			code, _ := e.authorize("n")
			_, err := e.p.Exchange(e.t.Context(), code, oauth2.GenerateVerifier(), callback)
			return err
		}},
		{"other redirect URI", func(e *env) error {
			code, verifier := e.authorize("n")
			_, err := e.p.Exchange(e.t.Context(), code, verifier, "https://other.example.com/cb")
			return err
		}},
		{"code expired by the clock", func(e *env) error {
			code, verifier := e.authorize("n")
			e.clk.Advance(providertest.CodeTTL)
			_, err := e.p.Exchange(e.t.Context(), code, verifier, callback)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil).discover()
			wantRetrieveError(t, tt.run(e), http.StatusBadRequest, "invalid_grant")
		})
	}
}

func TestExchangeProviderDown(t *testing.T) {
	t.Run("503", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		code, verifier := e.authorize("n")
		e.idp.SetFault(providertest.EndpointToken, providertest.Fault503)
		_, err := e.p.Exchange(t.Context(), code, verifier, callback)
		var re *oauth2.RetrieveError
		if err == nil || errors.As(err, &re) && re.Response.StatusCode < 500 {
			t.Fatalf("error = %v, want a 5xx", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		code, verifier := e.authorize("n")
		e.idp.Close()
		_, err := e.p.Exchange(t.Context(), code, verifier, callback)
		var re *oauth2.RetrieveError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("error = %v, want a transport error, not a RetrieveError", err)
		}
	})
	t.Run("hanging", func(t *testing.T) {
		e := newEnv(t, func(c *provider.Config) { c.RequestTimeout = 200 * time.Millisecond }).discover()
		code, verifier := e.authorize("n")
		e.idp.SetFault(providertest.EndpointToken, providertest.FaultHang)
		_, err := e.p.Exchange(t.Context(), code, verifier, callback)
		var re *oauth2.RetrieveError
		if err == nil || errors.As(err, &re) {
			t.Fatalf("error = %v, want a timeout, not a RetrieveError", err)
		}
	})
}

// The token endpoint and the revocation endpoint authenticate the client
// the way the provider advertises; the fake refuses any other method, and
// records the revocation's.
func TestClientAuthentication(t *testing.T) {
	tests := []struct {
		name       string
		opts       []providertest.Option
		pkce       bool
		wantMethod string
	}{
		{"both advertised: basic", nil, true, providertest.AuthMethodBasic},
		{"only basic", []providertest.Option{providertest.WithAuthMethods(providertest.AuthMethodBasic)}, true, providertest.AuthMethodBasic},
		{"only post", []providertest.Option{providertest.WithAuthMethods(providertest.AuthMethodPost)}, true, providertest.AuthMethodPost},
		// RFC 6749 §2.3.1: Basic credentials are form-encoded first, or a ':'
		// in the ID would split it.
		{"basic with reserved characters", []providertest.Option{providertest.WithClient("app:1/x", "s3:cr%t+&=")}, true, providertest.AuthMethodBasic},
		{"post with reserved characters", []providertest.Option{providertest.WithClient("app:1/x", "s3:cr%t+&="),
			providertest.WithAuthMethods(providertest.AuthMethodPost)}, true, providertest.AuthMethodPost},
		{"public client", []providertest.Option{providertest.WithClient("public-app", "")}, true, providertest.AuthMethodNone},
		{"without PKCE", nil, false, providertest.AuthMethodBasic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *provider.Config) { c.PKCE = tt.pkce }, tt.opts...).discover()
			tok := e.signIn()
			rt, err := e.p.Refresh(t.Context(), tok.RefreshToken)
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if err := e.p.Revoke(t.Context(), rt.RefreshToken, "refresh_token"); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			revs := e.idp.Revocations()
			if len(revs) != 1 || revs[0].AuthMethod != tt.wantMethod || revs[0].ClientID != e.idp.ClientID {
				t.Fatalf("revocations = %+v, want one by %s as %q", revs, tt.wantMethod, e.idp.ClientID)
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	t.Run("rotation", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		first := e.signIn()
		e.clk.Advance(10 * time.Minute)
		next, err := e.p.Refresh(t.Context(), first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		if next.AccessToken == first.AccessToken || next.RefreshToken == first.RefreshToken || next.RefreshToken == "" {
			t.Fatalf("refresh did not rotate: %+v", next)
		}
		if next.IDToken == "" {
			t.Error("no ID token from a provider that sends one on refresh")
		}
		if want := e.clk.Now().Add(providertest.DefaultAccessTokenTTL); !next.Expiry.Equal(want) {
			t.Errorf("Expiry = %v, want %v", next.Expiry, want)
		}
		// The rotated-away token is used: the provider says invalid_grant
		// and the session is over.
		if _, err := e.p.Refresh(t.Context(), first.RefreshToken); !errors.Is(err, provider.ErrRefreshRejected) {
			t.Fatalf("reused refresh token: error = %v, want ErrRefreshRejected", err)
		}
	})
	t.Run("no rotation keeps the refresh token", func(t *testing.T) {
		e := newEnv(t, nil, providertest.WithRotation(false), providertest.WithRefreshIDToken(false)).discover()
		first := e.signIn()
		for range 2 {
			next, err := e.p.Refresh(t.Context(), first.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			if next.RefreshToken != first.RefreshToken || next.AccessToken == first.AccessToken {
				t.Fatalf("refresh = %+v, want a new access token and the same refresh token", next)
			}
			if next.IDToken != "" {
				t.Errorf("ID token %q from a provider that sends none", next.IDToken)
			}
		}
	})
}

func TestRefreshErrors(t *testing.T) {
	tests := []struct {
		name         string
		timeout      time.Duration
		setup        func(e *env, rt string) string // returns the token to refresh
		wantRejected bool
	}{
		{"unknown token", 0, func(*env, string) string { return "bogus" }, true},
		{"expired by the clock", 0, func(e *env, rt string) string {
			e.clk.Advance(providertest.DefaultRefreshTokenTTL)
			return rt
		}, true},
		{"revoked", 0, func(e *env, rt string) string {
			if err := e.p.Revoke(e.t.Context(), rt, "refresh_token"); err != nil {
				e.t.Fatal(err)
			}
			return rt
		}, true},
		{"invalid_grant answer", 0, func(e *env, rt string) string {
			e.idp.SetFault(providertest.EndpointToken, providertest.FaultInvalidGrant)
			return rt
		}, true},
		{"invalid_request answer (Dex's refusal)", 0, func(e *env, rt string) string {
			e.idp.SetFault(providertest.EndpointToken, providertest.FaultInvalidRequest)
			return rt
		}, true},
		// The provider could not refresh now: the session goes on.
		{"503", 0, func(e *env, rt string) string {
			e.idp.SetFault(providertest.EndpointToken, providertest.Fault503)
			return rt
		}, false},
		{"timeout", 200 * time.Millisecond, func(e *env, rt string) string {
			e.idp.SetFault(providertest.EndpointToken, providertest.FaultHang)
			return rt
		}, false},
		{"unreachable", 0, func(e *env, rt string) string {
			e.idp.Close()
			return rt
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *provider.Config) {
				if tt.timeout > 0 {
					c.RequestTimeout = tt.timeout
				}
			}).discover()
			rt := tt.setup(e, e.signIn().RefreshToken)
			tok, err := e.p.Refresh(t.Context(), rt)
			if err == nil {
				t.Fatalf("refresh succeeded: %+v", tok)
			}
			if got := errors.Is(err, provider.ErrRefreshRejected); got != tt.wantRejected {
				t.Fatalf("errors.Is(%v, ErrRefreshRejected) = %v, want %v", err, got, tt.wantRejected)
			}
		})
	}
}

// jwtPayload decodes a JWT's claims without verifying them.
func jwtPayload(t *testing.T, raw string) map[string]any {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Lifetime is what the provider issued the token for, never a difference of
// two clocks: the fake's clock runs 10 minutes ahead of ours here.
func TestTokenLifetime(t *testing.T) {
	const ttl = 5 * time.Minute
	tests := []struct {
		name         string
		override     map[string]any
		wantLifetime time.Duration
		// wantExpiry from our clock's now, the provider's, or zero.
		wantExpiry string
	}{
		{"expires_in", nil, ttl, "ours"},
		{"expires_in other than the JWT's", map[string]any{"expires_in": 90}, 90 * time.Second, "ours"},
		{"JWT exp - iat without expires_in", map[string]any{"expires_in": nil}, ttl, "provider"},
		{"opaque token without expires_in", map[string]any{"expires_in": nil, "access_token": "opaque-token"}, 0, "zero"},
		{"JWT without iat", map[string]any{"expires_in": nil, "access_token": "set below"}, 0, "provider"},
	}
	for _, tt := range tests {
		for _, grant := range []string{providertest.GrantAuthorizationCode, providertest.GrantRefreshToken} {
			t.Run(tt.name+"/"+grant, func(t *testing.T) {
				clk := newClock()
				skew := 10 * time.Minute
				idpNow := func() time.Time { return clk.Now().Add(skew) }
				idp := providertest.New(t, providertest.WithClock(idpNow), providertest.WithAccessTokenTTL(ttl))
				p, err := provider.New(provider.Config{IssuerURL: idp.Issuer, ClientID: idp.ClientID, ClientSecret: idp.ClientSecret,
					Scopes: []string{"openid"}}, clk.Now, slog.New(slog.DiscardHandler), nil)
				if err != nil {
					t.Fatal(err)
				}
				e := &env{t: t, clk: clk, idp: idp, p: p}
				e.discover()
				override := map[string]any{}
				for k, v := range tt.override {
					override[k] = v
				}
				if override["access_token"] == "set below" {
					override["access_token"] = idp.SignJWT(map[string]any{"iss": idp.Issuer, "exp": idpNow().Add(ttl).Unix()})
				}
				idp.SetTokenResponse(func(g string) map[string]any {
					if g != grant {
						return nil
					}
					return override
				})
				tok := e.signIn()
				if grant == providertest.GrantRefreshToken {
					if tok, err = p.Refresh(t.Context(), tok.RefreshToken); err != nil {
						t.Fatal(err)
					}
				}
				if tok.Lifetime != tt.wantLifetime {
					t.Errorf("Lifetime = %v, want %v", tok.Lifetime, tt.wantLifetime)
				}
				var want time.Time
				switch tt.wantExpiry {
				case "ours":
					want = clk.Now().Add(tt.wantLifetime)
				case "provider":
					// The JWT's exp as is: the provider's clock.
					want = time.Unix(int64(jwtPayload(t, tok.AccessToken)["exp"].(float64)), 0)
					if !want.Equal(idpNow().Add(ttl).Truncate(time.Second)) {
						t.Fatalf("test setup: exp = %v", want)
					}
				}
				if !tok.Expiry.Equal(want) {
					t.Errorf("Expiry = %v, want %v", tok.Expiry, want)
				}
			})
		}
	}
}

func TestRevoke(t *testing.T) {
	t.Run("refresh token", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		tok := e.signIn()
		if err := e.p.Revoke(t.Context(), tok.RefreshToken, "refresh_token"); err != nil {
			t.Fatal(err)
		}
		revs := e.idp.Revocations()
		if len(revs) != 1 || revs[0].Token != tok.RefreshToken || revs[0].TypeHint != "refresh_token" || revs[0].Kind != "refresh_token" {
			t.Fatalf("revocations = %+v", revs)
		}
		if !e.idp.FamilyRevoked(tok.RefreshToken) {
			t.Error("the provider did not revoke the sign-in")
		}
	})
	t.Run("access token", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		tok := e.signIn()
		if err := e.p.Revoke(t.Context(), tok.AccessToken, "access_token"); err != nil {
			t.Fatal(err)
		}
		revs := e.idp.Revocations()
		if len(revs) != 1 || revs[0].TypeHint != "access_token" || revs[0].Kind != "access_token" {
			t.Fatalf("revocations = %+v", revs)
		}
		if _, err := e.p.Userinfo(t.Context(), tok.AccessToken); err == nil {
			t.Error("userinfo accepted a revoked access token")
		}
	})
	t.Run("no revocation endpoint", func(t *testing.T) {
		e := newEnv(t, nil, providertest.WithoutRevocation()).discover()
		if err := e.p.Revoke(t.Context(), e.signIn().RefreshToken, "refresh_token"); !errors.Is(err, provider.ErrUnsupported) {
			t.Fatalf("error = %v, want ErrUnsupported", err)
		}
		if n := e.idp.Calls(providertest.EndpointRevoke); n != 0 {
			t.Errorf("revocation endpoint called %d times", n)
		}
	})
	t.Run("provider error", func(t *testing.T) {
		e := newEnv(t, nil).discover()
		e.idp.SetFault(providertest.EndpointRevoke, providertest.Fault503)
		err := e.p.Revoke(t.Context(), "rt", "refresh_token")
		if err == nil || errors.Is(err, provider.ErrUnsupported) {
			t.Fatalf("error = %v, want a failure that is not ErrUnsupported", err)
		}
	})
}

// A configured revocation URL is used as is; its answers are RFC 7009's.
func TestRevokeConfiguredEndpoint(t *testing.T) {
	tests := []struct {
		name            string
		status          int
		body            string
		wantErr         bool
		wantUnsupported bool
	}{
		{"200", http.StatusOK, "", false, false},
		{"unsupported_token_type", http.StatusBadRequest, `{"error":"unsupported_token_type"}`, true, true},
		{"invalid_client", http.StatusUnauthorized, `{"error":"invalid_client"}`, true, false},
		{"500", http.StatusInternalServerError, "oops", true, false},
		// A redirect is a misconfiguration, not something to follow.
		{"redirect", http.StatusFound, "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got *http.Request
			var form url.Values
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				mu.Lock()
				got, form = r, r.PostForm
				mu.Unlock()
				if tt.status == http.StatusFound {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			e := newEnv(t, func(c *provider.Config) { c.RevocationURL = srv.URL + "/revoke" }, providertest.WithoutRevocation()).discover()
			err := e.p.Revoke(t.Context(), "the-token", "access_token")
			if (err != nil) != tt.wantErr || errors.Is(err, provider.ErrUnsupported) != tt.wantUnsupported {
				t.Fatalf("error = %v, want error %v, ErrUnsupported %v", err, tt.wantErr, tt.wantUnsupported)
			}
			mu.Lock()
			defer mu.Unlock()
			if got == nil || got.Method != http.MethodPost || got.URL.Path != "/revoke" {
				t.Fatalf("request = %v", got)
			}
			if user, pass, ok := got.BasicAuth(); !ok || user != e.idp.ClientID || pass != e.idp.ClientSecret {
				t.Errorf("Basic auth = %q %q %v", user, pass, ok)
			}
			if form.Get("token") != "the-token" || form.Get("token_type_hint") != "access_token" || form.Has("client_secret") {
				t.Errorf("form = %v", form)
			}
		})
	}
}

func TestUserinfo(t *testing.T) {
	e := newEnv(t, nil).discover()
	tok := e.signIn()
	info, err := e.p.Userinfo(t.Context(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	u := providertest.DefaultUser()
	var claims struct {
		PreferredUsername string   `json:"preferred_username"`
		Groups            []string `json:"groups"`
	}
	if err := info.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if info.Subject != u.Subject || info.Email != u.Email || !info.EmailVerified ||
		claims.PreferredUsername != u.PreferredUsername || !slices.Equal(claims.Groups, u.Groups) {
		t.Errorf("userinfo = %+v %+v", info, claims)
	}
	if n := e.idp.Calls(providertest.EndpointUserinfo); n != 1 {
		t.Errorf("userinfo calls = %d", n)
	}

	if _, err := e.p.Userinfo(t.Context(), "bogus"); err == nil {
		t.Error("userinfo accepted an unknown access token")
	}
	e.clk.Advance(providertest.DefaultAccessTokenTTL)
	if _, err := e.p.Userinfo(t.Context(), tok.AccessToken); err == nil {
		t.Error("userinfo accepted an expired access token")
	}
	fresh := e.signIn()
	e.idp.SetFault(providertest.EndpointUserinfo, providertest.Fault503)
	if _, err := e.p.Userinfo(t.Context(), fresh.AccessToken); err == nil {
		t.Error("userinfo succeeded with the endpoint down")
	}
}

// With WithTLS the provider's certificate is trusted through CAPEM only.
func TestTLS(t *testing.T) {
	caPEM := func(idp *providertest.Provider) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idp.Server.Certificate().Raw})
	}
	t.Run("with the CA", func(t *testing.T) {
		e := newEnv(t, nil, providertest.WithTLS())
		e.p = e.newProvider(func(c *provider.Config) { c.CAPEM = caPEM(e.idp) })
		e.discover()
		tok := e.signIn()
		if _, err := e.p.VerifyIDToken(t.Context(), tok.IDToken); err != nil {
			t.Fatal(err)
		}
		if _, err := e.p.Userinfo(t.Context(), tok.AccessToken); err != nil {
			t.Fatal(err)
		}
		if err := e.p.Revoke(t.Context(), tok.RefreshToken, "refresh_token"); err != nil || len(e.idp.Revocations()) != 1 {
			t.Fatalf("revoke over TLS: %v, %v", err, e.idp.Revocations())
		}
	})
	t.Run("without the CA", func(t *testing.T) {
		e := newEnv(t, nil, providertest.WithTLS())
		if err := e.p.Discover(t.Context()); err == nil || e.p.Ready() {
			t.Fatalf("discovered an untrusted provider: %v", err)
		}
	})
	t.Run("bundle without a certificate", func(t *testing.T) {
		if _, err := provider.New(provider.Config{IssuerURL: "https://idp.example.com", CAPEM: []byte("not a certificate")},
			time.Now, slog.New(slog.DiscardHandler), nil); err == nil {
			t.Fatal("New accepted a CA bundle without a certificate")
		}
	})
}

// unsignedJWT is a token with alg none.
func unsignedJWT(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + "."
}

// hs256JWT is signed with a shared secret: alg confusion, a provider's
// public key is no HMAC secret.
func hs256JWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
