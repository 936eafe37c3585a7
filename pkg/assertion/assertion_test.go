package assertion_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/assertion"
)

const issuer = "https://auth.example.com"

func newKey(t testing.TB) *assertion.Key {
	t.Helper()
	pemBytes, err := assertion.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := assertion.ParseKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ed25519Key(t testing.TB) *assertion.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	k, err := assertion.ParseKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSigner(t testing.TB, clk *testenv.Clock, current *assertion.Key, previous ...*assertion.Key) *assertion.Signer {
	t.Helper()
	s, err := assertion.NewSigner(current, previous, assertion.Options{Issuer: issuer, Lifetime: 5 * time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serveJWKS publishes jwks (swappable) as extauth does, for go-oidc.
func serveJWKS(t *testing.T, jwks *atomic.Pointer[[]byte]) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(*jwks.Load())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// verifier is what an app runs: go-oidc's remote key set on extauth's JWKS.
func verifier(t *testing.T, jwksURL, audience string, clk *testenv.Clock) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(issuer, oidc.NewRemoteKeySet(t.Context(), jwksURL),
		&oidc.Config{ClientID: audience, Now: clk.Now, SupportedSigningAlgs: []string{"ES256", "EdDSA"}})
}

var alice = assertion.Identity{Session: "s1", Subject: "alice-sub", Email: "alice@example.com",
	PreferredUsername: "alice", Groups: []string{"sre", "dev"}, SID: "idp-sid"}

func TestTokensVerifyWithGoOIDC(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(testing.TB) *assertion.Key
		alg  string
	}{{"ES256", newKey, "ES256"}, {"EdDSA", ed25519Key, "EdDSA"}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := testenv.NewClock(time.Now())
			k := tc.key(t)
			s := newSigner(t, clk, k)
			var jwks atomic.Pointer[[]byte]
			b := s.JWKS()
			jwks.Store(&b)
			url := serveJWKS(t, &jwks)

			raw, err := s.Token(alice, "grafana.example.com")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := verifier(t, url, "grafana.example.com", clk).Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			var c struct {
				Email    string   `json:"email"`
				Groups   []string `json:"groups"`
				Username string   `json:"preferred_username"`
				SID      string   `json:"sid"`
				NBF      int64    `json:"nbf"`
				JTI      string   `json:"jti"`
			}
			if err := tok.Claims(&c); err != nil {
				t.Fatal(err)
			}
			if tok.Subject != "alice-sub" || c.Email != alice.Email || strings.Join(c.Groups, ",") != "sre,dev" ||
				c.Username != "alice" || c.SID != "idp-sid" || c.NBF != clk.Now().Unix() || len(c.JTI) < 20 ||
				!tok.Expiry.Equal(clk.Now().Add(5*time.Minute).Truncate(time.Second)) {
				t.Errorf("claims: sub %q %+v exp %v", tok.Subject, c, tok.Expiry)
			}
			header := decodeHeader(t, raw)
			if header["alg"] != tc.alg || header["kid"] != k.KeyID() || header["typ"] != "JWT" {
				t.Errorf("header %v, want alg %s kid %s", header, tc.alg, k.KeyID())
			}
			// Another app's audience, and an expired token, are refused.
			if _, err := verifier(t, url, "wiki.example.com", clk).Verify(t.Context(), raw); err == nil {
				t.Error("a token for grafana verified for wiki")
			}
			later := testenv.NewClock(clk.Now().Add(6 * time.Minute))
			if _, err := verifier(t, url, "grafana.example.com", later).Verify(t.Context(), raw); err == nil {
				t.Error("an expired token verified")
			}
		})
	}
}

// TestKeyRotation: after a rotation the old key, kept in previousKeyFiles,
// still verifies the tokens it signed; once removed, they are refused.
func TestKeyRotation(t *testing.T) {
	clk := testenv.NewClock(time.Now())
	oldKey, newKey2 := newKey(t), newKey(t)
	before := newSigner(t, clk, oldKey)
	oldToken, err := before.Token(alice, "grafana")
	if err != nil {
		t.Fatal(err)
	}
	during := newSigner(t, clk, newKey2, oldKey)
	var jwks atomic.Pointer[[]byte]
	b := during.JWKS()
	jwks.Store(&b)
	url := serveJWKS(t, &jwks)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) != 2 || set.Keys[0]["kid"] != newKey2.KeyID() || set.Keys[1]["kid"] != oldKey.KeyID() {
		t.Fatalf("JWKS during a rotation = %s, want the new key first", b)
	}
	for _, k := range set.Keys {
		if _, private := k["d"]; private {
			t.Fatalf("the JWKS publishes a private key: %s", b)
		}
	}
	newToken, _ := during.Token(alice, "grafana")
	if decodeHeader(t, newToken)["kid"] != newKey2.KeyID() {
		t.Error("the new signer does not sign with the current key")
	}
	v := verifier(t, url, "grafana", clk)
	for name, raw := range map[string]string{"old": oldToken, "new": newToken} {
		if _, err := v.Verify(t.Context(), raw); err != nil {
			t.Errorf("%s key's token during the rotation: %v", name, err)
		}
	}
	after := newSigner(t, clk, newKey2)
	b = after.JWKS()
	jwks.Store(&b)
	v = verifier(t, url, "grafana", clk) // a fresh key set, as after a restart
	if _, err := v.Verify(t.Context(), oldToken); err == nil {
		t.Error("a token of the removed key still verifies")
	}
	if _, err := assertion.NewSigner(newKey2, []*assertion.Key{newKey2}, assertion.Options{Issuer: issuer, Lifetime: time.Minute}); err == nil {
		t.Error("the current key listed again as a previous one: no error")
	}
}

// TestTokenCache: one signature per (session, audience) until half the
// lifetime is gone; another audience, another identity or a changed
// group list get their own token; the cache stays bounded.
func TestTokenCache(t *testing.T) {
	clk := testenv.NewClock(time.Now())
	s, err := assertion.NewSigner(newKey(t), nil, assertion.Options{Issuer: issuer, Lifetime: 5 * time.Minute, Now: clk.Now, MaxEntries: 100, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.Token(alice, "grafana")
	clk.Advance(2*time.Minute + 29*time.Second)
	if again, _ := s.Token(alice, "grafana"); again != first {
		t.Error("a token with more than half its lifetime left was not reused")
	}
	if other, _ := s.Token(alice, "wiki"); other == first {
		t.Error("another audience got the same token")
	}
	changed := alice
	changed.Groups = []string{"sre"}
	if tok, _ := s.Token(changed, "grafana"); tok == first {
		t.Error("a changed group list got the old token")
	}
	clk.Advance(2 * time.Second)
	renewed, _ := s.Token(alice, "grafana")
	if renewed == first {
		t.Error("the token was reused past half its lifetime")
	}
	for i := range 1000 {
		id := alice
		id.Session = fmt.Sprint("session-", i)
		if _, err := s.Token(id, "grafana"); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.Len(); n > 100 {
		t.Errorf("cache holds %d tokens, bound 100", n)
	}
	// Hosts are the client's: long ones fill the byte bound, not memory.
	for i := range 1000 {
		if _, err := s.Token(alice, fmt.Sprintf("%0500d.example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, bytes := s.Len(); bytes > 1<<20 || n == 0 {
		t.Errorf("cache holds %d tokens in %d bytes, bound 1 MiB", n, bytes)
	}
	// One larger than 1/64 of the bound is signed but never cached.
	huge := alice
	huge.Groups = make([]string, 400)
	for i := range huge.Groups {
		huge.Groups[i] = fmt.Sprintf("a-group-with-a-long-name-%04d", i)
	}
	a, _ := s.Token(huge, "grafana")
	if b, _ := s.Token(huge, "grafana"); a == b {
		t.Error("an outsized identity was cached")
	}
}

func TestParseKeyRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	good, _ := assertion.GenerateKey(rand.Reader)
	for name, data := range map[string]string{
		"empty":      "",
		"not PEM":    "hello",
		"P-384":      string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der384})),
		"public key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}})),
		"two keys":   string(good) + string(good),
		"garbage":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})),
	} {
		if _, err := assertion.ParseKey([]byte(data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// SEC 1 from openssl ecparam is accepted too.
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	if k, err := assertion.ParseKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})); err != nil || k.Alg() != "ES256" {
		t.Errorf("SEC 1 key: %v", err)
	}
}

func decodeHeader(t *testing.T, raw string) map[string]string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(raw[:strings.IndexByte(raw, '.')])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(h, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// BenchmarkToken is the check's cost of an assertion: a cache hit (the
// common case), and a signature (a miss). B/entry is the cache's memory
// per cached token.
func BenchmarkToken(b *testing.B) {
	clk := testenv.NewClock(time.Now())
	for _, tc := range []struct {
		name string
		key  func(testing.TB) *assertion.Key
	}{{"ES256", newKey}, {"EdDSA", ed25519Key}} {
		s := newSigner(b, clk, tc.key(b))
		b.Run(tc.name+"/cached", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Token(alice, "grafana.example.com"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/sign", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id := alice
				id.Session = fmt.Sprint(i)
				i++
				if _, err := s.Token(id, "grafana.example.com"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCacheMemory fills the cache to its bound with Okta-sized
// identities and reports its heap per entry (B/entry) and in all (MB/full).
func BenchmarkCacheMemory(b *testing.B) {
	clk := testenv.NewClock(time.Now())
	key := newKey(b)
	ids := make([]assertion.Identity, assertion.DefaultMaxEntries)
	for i := range ids {
		ids[i] = assertion.Identity{Session: fmt.Sprintf("session-%022d", i), Subject: "00u1a2b3c4d5e6f7g8h9",
			Email: "jane.doe@example.com", PreferredUsername: "jane.doe@example.com", SID: "102NpfJ8vXKTq2ZdJm7Wy1A3g",
			Groups: []string{"Everyone", "engineering", "platform-admins", "k8s-developers", "oncall"}}
	}
	var perEntry float64
	for b.Loop() {
		s := newSigner(b, clk, key)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, id := range ids {
			if _, err := s.Token(id, "grafana.example.com"); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n, _ := s.Len()
		perEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perEntry, "B/entry")
	b.ReportMetric(perEntry*assertion.DefaultMaxEntries/1e6, "MB/full")
}
