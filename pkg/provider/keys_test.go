package provider_test

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// with returns claims with the given ones set (nil deletes).
func with(claims map[string]any, set map[string]any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		out[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func (e *env) keyFetches() int { return e.idp.Calls(providertest.EndpointKeys) }

func (e *env) refetches(result string) int {
	return int(testutil.ToFloat64(e.m.KeyRefetches.WithLabelValues(result)))
}

func TestVerifyIDToken(t *testing.T) {
	tests := []struct {
		name  string
		token func(e *env) string
		ok    bool
	}{
		{"valid", func(e *env) string { return e.idp.SignJWT(e.idClaims()) }, true},
		{"audience list with the client", func(e *env) string {
			return e.idp.SignJWT(with(e.idClaims(), map[string]any{"aud": []string{"other", e.idp.ClientID}}))
		}, true},
		{"other audience", func(e *env) string {
			return e.idp.SignJWT(with(e.idClaims(), map[string]any{"aud": "other-client"}))
		}, false},
		{"other issuer", func(e *env) string {
			return e.idp.SignJWT(with(e.idClaims(), map[string]any{"iss": "https://evil.example.com"}))
		}, false},
		{"expired", func(e *env) string {
			return e.idp.SignJWT(with(e.idClaims(), map[string]any{"exp": e.clk.Now().Add(-time.Second).Unix()}))
		}, false},
		{"no exp", func(e *env) string { return e.idp.SignJWT(with(e.idClaims(), map[string]any{"exp": nil})) }, false},
		{"signed by another key under the published kid", func(e *env) string { return e.idp.SignJWTWithOtherKey(e.idClaims()) }, false},
		{"alg none", func(e *env) string { return unsignedJWT(e.idClaims()) }, false},
		{"HS256", func(e *env) string { return hs256JWT(e.t, e.idClaims()) }, false},
		{"not a JWT", func(*env) string { return "not.a.jwt" }, false},
		{"JSON serialization", func(*env) string { return `{"payload":"e30","signatures":[]}` }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil).discover()
			// Past the refetch throttle, so a refused token that asked for
			// the JWKS again would show.
			e.clk.Advance(provider.MinKeyRefetch + time.Second)
			idt, err := e.p.VerifyIDToken(t.Context(), tt.token(e))
			if (err == nil) != tt.ok {
				t.Fatalf("VerifyIDToken error = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && idt.Subject != "248289761001" {
				t.Errorf("subject = %q", idt.Subject)
			}
			// None of these names an unknown kid: no JWKS refetch.
			if n := e.keyFetches(); n != 1 {
				t.Errorf("JWKS fetched %d times, want once (discovery)", n)
			}
		})
	}
}

// Our clock decides expiry, not the wall clock.
func TestVerifyIDTokenExpiresByInjectedClock(t *testing.T) {
	e := newEnv(t, nil).discover()
	raw := e.signIn().IDToken
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(providertest.IDTokenTTL - time.Second)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err != nil {
		t.Fatalf("refused a second before expiry: %v", err)
	}
	e.clk.Advance(2 * time.Second)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err == nil {
		t.Fatal("accepted an ID token past its exp by our clock")
	}
}

// The fake's own tampering knobs on an issued token: the exchange succeeds,
// the verification does not.
func TestVerifyIssuedIDTokenTampered(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(idp *providertest.Provider)
	}{
		{"other audience", func(idp *providertest.Provider) {
			idp.SetIDTokenMutator(func(c map[string]any) { c["aud"] = "someone-else" })
		}},
		{"other issuer", func(idp *providertest.Provider) {
			idp.SetIDTokenMutator(func(c map[string]any) { c["iss"] = idp.Issuer + "/other" })
		}},
		{"alg none", func(idp *providertest.Provider) { idp.SetIDTokenAlgNone() }},
		{"other key", func(idp *providertest.Provider) { idp.SignNextIDTokenWithOtherKey() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil).discover()
			tt.tamper(e.idp)
			if _, err := e.p.VerifyIDToken(t.Context(), e.signIn().IDToken); err == nil {
				t.Fatal("tampered ID token verified")
			}
		})
	}
}

// An unknown kid (a rotation) asks for the JWKS again, at most once per
// MinKeyRefetch by our clock; a known kid with a bad signature never does.
func TestKeyRefetchThrottle(t *testing.T) {
	e := newEnv(t, nil).discover()
	ctx := t.Context()
	rotated := e.idp.SignJWTWithKeyID(e.idClaims(), "k2")
	check := func(step string, wantOK bool, fetches, fetched, throttled int) {
		t.Helper()
		_, err := e.p.VerifyIDToken(ctx, rotated)
		if (err == nil) != wantOK {
			t.Fatalf("%s: VerifyIDToken error = %v, want ok %v", step, err, wantOK)
		}
		if n := e.keyFetches(); n != fetches {
			t.Errorf("%s: JWKS fetches = %d, want %d", step, n, fetches)
		}
		if f, th := e.refetches(metrics.KeyRefetchFetched), e.refetches(metrics.KeyRefetchThrottled); f != fetched || th != throttled {
			t.Errorf("%s: refetches fetched %d throttled %d, want %d %d", step, f, th, fetched, throttled)
		}
	}
	// Discovery fetched the keys just now.
	check("right after discovery", false, 1, 0, 1)
	e.idp.RotateKey("k2")
	e.clk.Advance(provider.MinKeyRefetch - time.Second)
	check("rotated, within the window", false, 1, 0, 2)
	e.clk.Advance(time.Second)
	check("rotated, window over", true, 2, 1, 2)
	check("kid known now", true, 2, 1, 2)

	// A third kid right after: throttled, however many tokens carry it.
	for range 5 {
		if _, err := e.p.VerifyIDToken(ctx, e.idp.SignJWTWithKeyID(e.idClaims(), "k3")); err == nil {
			t.Fatal("verified a token under an unpublished kid")
		}
	}
	if n, th := e.keyFetches(), e.refetches(metrics.KeyRefetchThrottled); n != 2 || th != 7 {
		t.Errorf("after 5 unknown-kid tokens: %d fetches, %d throttled; want 2, 7", n, th)
	}

	// A forged token under a known kid is refused without a fetch, even
	// with the window open.
	e.clk.Advance(time.Hour)
	if _, err := e.p.VerifyIDToken(ctx, e.idp.SignJWTWithOtherKey(e.idClaims())); err == nil {
		t.Fatal("verified a forged token")
	}
	if n := e.keyFetches(); n != 2 {
		t.Errorf("a forged token under a known kid fetched the JWKS: %d fetches", n)
	}
}

// Many tokens with a new kid at once cause one fetch, and all of them verify
// with its keys.
func TestKeyRefetchConcurrent(t *testing.T) {
	e := newEnv(t, nil).discover()
	e.idp.RotateKey("k2")
	e.clk.Advance(provider.MinKeyRefetch)
	raw := e.idp.SignJWTWithKeyID(e.idClaims(), "k2")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = e.p.VerifyIDToken(t.Context(), raw) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("verifier %d: %v", i, err)
		}
	}
	if f, fetches := e.refetches(metrics.KeyRefetchFetched), e.keyFetches(); f != 1 || fetches != 2 {
		t.Errorf("fetched %d (JWKS calls %d), want 1 (2)", f, fetches)
	}
}

// A failing JWKS fetch counts against the window too: a provider whose keys
// are down is not asked once per token.
func TestKeyRefetchError(t *testing.T) {
	e := newEnv(t, nil).discover()
	e.idp.RotateKey("k2")
	raw := e.idp.SignJWTWithKeyID(e.idClaims(), "k2")
	e.clk.Advance(provider.MinKeyRefetch)
	e.idp.SetFault(providertest.EndpointKeys, providertest.Fault503)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err == nil {
		t.Fatal("verified with the JWKS down")
	}
	if n, errs := e.keyFetches(), e.refetches(metrics.KeyRefetchError); n != 2 || errs != 1 {
		t.Fatalf("JWKS calls %d, refetch errors %d; want 2, 1", n, errs)
	}
	e.idp.SetFault(providertest.EndpointKeys, providertest.FaultNone)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err == nil {
		t.Fatal("verified within the window of the failed fetch")
	}
	if n := e.keyFetches(); n != 2 {
		t.Errorf("JWKS calls %d within the window, want 2", n)
	}
	e.clk.Advance(provider.MinKeyRefetch)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err != nil {
		t.Fatalf("rotation not picked up after the window: %v", err)
	}
	// The keys fetched before the failure still serve.
	if _, err := e.p.VerifyIDToken(t.Context(), e.idp.SignJWT(e.idClaims())); err != nil {
		t.Fatalf("original key: %v", err)
	}
}

// A token without a kid is tried with every key, and may be signed by a
// new one: it asks for a (throttled) refetch too.
func TestKeyWithoutKid(t *testing.T) {
	e := newEnv(t, nil).discover()
	raw := e.idp.SignJWTWithKeyID(e.idClaims(), "") // the rotation key, no kid
	e.clk.Advance(provider.MinKeyRefetch)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err == nil {
		t.Fatal("verified a token signed by an unpublished key")
	}
	if n := e.keyFetches(); n != 2 {
		t.Fatalf("JWKS calls = %d, want 2", n)
	}
	e.idp.RotateKey("k2")
	e.clk.Advance(provider.MinKeyRefetch)
	if _, err := e.p.VerifyIDToken(t.Context(), raw); err != nil {
		t.Fatalf("kid-less token under a published key: %v", err)
	}
}

func TestVerifyLogoutToken(t *testing.T) {
	const sub, sid = "248289761001", "session-1"
	tests := []struct {
		name  string
		token func(e *env) string
		ok    bool
	}{
		{"valid", func(e *env) string { return e.idp.LogoutToken(sub, sid) }, true},
		// Older providers send no exp; iat and exp are the caller's to check.
		{"no exp", func(e *env) string {
			return e.idp.SignJWT(with(e.idp.LogoutTokenClaims(sub, sid), map[string]any{"exp": nil}))
		}, true},
		{"exp passed", func(e *env) string {
			return e.idp.SignJWT(with(e.idp.LogoutTokenClaims(sub, sid), map[string]any{"exp": e.clk.Now().Add(-time.Hour).Unix()}))
		}, true},
		{"other audience", func(e *env) string {
			return e.idp.SignJWT(with(e.idp.LogoutTokenClaims(sub, sid), map[string]any{"aud": "other-client"}))
		}, false},
		{"other issuer", func(e *env) string {
			return e.idp.SignJWT(with(e.idp.LogoutTokenClaims(sub, sid), map[string]any{"iss": "https://evil.example.com"}))
		}, false},
		{"other key", func(e *env) string { return e.idp.SignJWTWithOtherKey(e.idp.LogoutTokenClaims(sub, sid)) }, false},
		{"alg none", func(e *env) string { return unsignedJWT(e.idp.LogoutTokenClaims(sub, sid)) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil).discover()
			tok, err := e.p.VerifyLogoutToken(t.Context(), tt.token(e))
			if (err == nil) != tt.ok {
				t.Fatalf("VerifyLogoutToken error = %v, want ok %v", err, tt.ok)
			}
			if tt.ok && tok.Subject != sub {
				t.Errorf("subject = %q", tok.Subject)
			}
		})
	}
}

func TestVerifyBearer(t *testing.T) {
	const orders, billing = "api://orders", "api://billing"
	type tokenCase struct {
		aud any
		ok  bool
	}
	tests := []struct {
		name      string
		audiences []string
		cases     []tokenCase
	}{
		{"default: the client ID", nil, []tokenCase{
			{"extauth-test", true},
			{[]string{"other", "extauth-test"}, true},
			{orders, false},
		}},
		{"configured audiences", []string{orders, billing}, []tokenCase{
			{orders, true},
			{[]string{"other", billing}, true},
			{"extauth-test", false},
			{[]string{"other"}, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *provider.Config) { c.BearerAudiences = tt.audiences }).discover()
			for _, c := range tt.cases {
				_, err := e.p.VerifyBearer(t.Context(), e.idp.SignJWT(with(e.idClaims(), map[string]any{"aud": c.aud})))
				if (err == nil) != c.ok {
					t.Errorf("aud %v: error = %v, want ok %v", c.aud, err, c.ok)
				}
			}
			// Whatever the audience, the issuer, expiry and signature hold.
			aud := "extauth-test"
			if tt.audiences != nil {
				aud = tt.audiences[0]
			}
			good := with(e.idClaims(), map[string]any{"aud": aud})
			for name, raw := range map[string]string{
				"other issuer": e.idp.SignJWT(with(good, map[string]any{"iss": "https://evil.example.com"})),
				"expired":      e.idp.SignJWT(with(good, map[string]any{"exp": e.clk.Now().Add(-time.Second).Unix()})),
				"other key":    e.idp.SignJWTWithOtherKey(good),
				"alg none":     unsignedJWT(good),
			} {
				if _, err := e.p.VerifyBearer(t.Context(), raw); err == nil {
					t.Errorf("%s: bearer token accepted", name)
				}
			}
		})
	}
}

// The fake's access tokens are JWTs for the client: bearer tokens as an API
// client would send them.
func TestVerifyBearerIssuedAccessToken(t *testing.T) {
	e := newEnv(t, nil).discover()
	at := e.signIn().AccessToken
	tok, err := e.p.VerifyBearer(t.Context(), at)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Subject != providertest.DefaultUser().Subject {
		t.Errorf("subject = %q", tok.Subject)
	}
	e.clk.Advance(providertest.DefaultAccessTokenTTL + time.Second)
	if _, err := e.p.VerifyBearer(t.Context(), at); err == nil {
		t.Error("expired access token accepted by our clock")
	}
}
