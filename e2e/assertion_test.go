package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

// forgedJWT is a client's own X-Auth-Request-Jwt: well formed, unsigned
// (alg none), claiming to be someone else.
var forgedJWT = b64(`{"alg":"none"}`) + "." + b64(`{"iss":"`+stack.AssertionIssuer+`","aud":"127.0.0.1","sub":"admin"}`) + "."

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestAssertionReachesTheApp: with assertion.enabled, the gateway's
// reference config (nginx: examples/nginx/protected-app.conf; Caddy:
// examples/caddy/Caddyfile) delivers the signed X-Auth-Request-Jwt to the
// app, which verifies it with go-oidc against extauth's JWKS (issuer, aud
// the host, ES256 or EdDSA) and finds the signed-in user; a client's forged
// copy never reaches the app (the real one replaces it; a skipped route and
// an unauthenticated request deliver none); the JWKS is the same through
// the gateway's /oauth2/jwks and at extauth's /.well-known/jwks.json.
func TestAssertionReachesTheApp(t *testing.T) {
	for _, tc := range []struct {
		gateway, alg string
		key          []byte // nil: the stack's EC P-256 key
	}{
		{"nginx", "ES256", nil},
		{"caddy", "EdDSA", ed25519PEM(t)},
	} {
		t.Run(tc.gateway+"-"+tc.alg, func(t *testing.T) {
			user := providertest.DefaultUser()
			idp := providertest.New(t, providertest.WithClock(time.Now), providertest.WithUser(user))
			s := startStack(t, stack.Options{
				Provider:     &stack.ExternalProvider{Issuer: idp.Issuer, ClientID: idp.ClientID, ClientSecret: idp.ClientSecret},
				Gateway:      tc.gateway,
				Assertion:    true,
				AssertionKey: tc.key,
				// A second app (the same client) whose /api/assertion and
				// /api/headers pass without a session.
				ExtraYAML: `apps:
  - name: wiki
    hosts: [wiki.test]
    authorization:
      skip:
        - {methods: [GET], path: /api/assertion}
        - {methods: [GET], path: /api/headers}
`,
			})
			cookies := signInHTTP(t, s)

			// Signed in: the app verifies the assertion and finds the user.
			got := assertionAt(t, s, "", "/api/assertion", cookies, "")
			if got.status != http.StatusOK {
				t.Fatalf("signed-in GET /api/assertion: %d", got.status)
			}
			rep := got.report
			if !rep.Verified || rep.Values != 1 {
				t.Fatalf("the app did not verify the assertion: %+v", rep)
			}
			if rep.Alg != tc.alg || rep.Subject != user.Subject || rep.Email != user.Email ||
				rep.PreferredUsername != user.PreferredUsername || !slices.Equal(rep.Groups, user.Groups) ||
				!slices.Equal(rep.Audience, []string{"127.0.0.1"}) {
				t.Errorf("verified assertion %+v, want alg %s, aud 127.0.0.1 and %+v", rep, tc.alg, user)
			}

			// A forged copy from the client: the app gets extauth's, not it.
			forged := assertionAt(t, s, "", "/api/assertion", cookies, forgedJWT).report
			if !forged.Verified || forged.Values != 1 || forged.Token == forgedJWT || forged.Subject != user.Subject {
				t.Errorf("with a forged X-Auth-Request-Jwt the app got %+v", forged)
			}

			// A skipped route: the app is reached without any assertion,
			// the forged one dropped too, and without any other identity
			// header (Caddy 2.6 would send its placeholders' text).
			for _, jwt := range []string{"", forgedJWT} {
				skipped := assertionAt(t, s, "wiki.test", "/api/assertion", nil, jwt)
				if skipped.status != http.StatusOK || !skipped.fromApp {
					t.Errorf("skipped route (forged %v): %d, from the app %v", jwt != "", skipped.status, skipped.fromApp)
				} else if skipped.report.Present {
					t.Errorf("skipped route (forged %v): the app got X-Auth-Request-Jwt %+v", jwt != "", skipped.report)
				}
			}
			if seen := headersAt(t, s, "wiki.test", forgedHeaders); len(seen) != 0 {
				t.Errorf("skipped route with forged identity headers: the app got %v", seen)
			}

			// Without a session (or with a broken one) the app is never
			// reached: nginx redirects to sign in, Caddy answers 401.
			broken := []*http.Cookie{{Name: cookies[0].Name, Value: "x" + cookies[0].Value}}
			for _, c := range [][]*http.Cookie{nil, broken} {
				a := assertionAt(t, s, "", "/api/assertion", c, forgedJWT)
				if a.fromApp || (a.status != http.StatusFound && a.status != http.StatusUnauthorized) {
					t.Errorf("no valid session (cookies %d) with a forged assertion: %d, from the app %v", len(c), a.status, a.fromApp)
				}
			}

			// The public keys: through the gateway under /oauth2, and where
			// JWT libraries look, at extauth itself; the token's kid is there.
			viaGateway := fetchJWKS(t, s.URL+"/oauth2/jwks")
			direct := fetchJWKS(t, "http://"+s.Replicas[0]+"/.well-known/jwks.json")
			if !bytes.Equal(viaGateway, direct) {
				t.Errorf("JWKS through %s:\n%s\nat extauth:\n%s", tc.gateway, viaGateway, direct)
			}
			var set struct {
				Keys []struct{ Kid, Alg string }
			}
			if err := json.Unmarshal(direct, &set); err != nil || len(set.Keys) != 1 ||
				set.Keys[0].Kid != rep.Kid || set.Keys[0].Alg != tc.alg {
				t.Errorf("JWKS %s (%v), want one %s key with kid %q", direct, err, tc.alg, rep.Kid)
			}
		})
	}
}

// ed25519PEM is a new Ed25519 key as PKCS#8 PEM (openssl genpkey -algorithm ed25519).
func ed25519PEM(t *testing.T) []byte {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

type assertionAnswer struct {
	status  int
	fromApp bool // the echo app answered (its JSON), not the gateway
	report  stack.AssertionReport
}

// assertionAt asks the app through the gateway what it made of the request's
// assertion: for host (the Host header; "" keeps the stack's), with these
// cookies, with a client's own X-Auth-Request-Jwt unless forged is "",
// following no redirect.
func assertionAt(t *testing.T, s *stack.Stack, host, path string, cookies []*http.Cookie, forged string) assertionAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		u, _ := url.Parse(s.URL)
		req.Host = host + ":" + u.Port()
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	if forged != "" {
		req.Header.Set("X-Auth-Request-Jwt", forged)
	}
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a := assertionAnswer{status: resp.StatusCode}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && json.Unmarshal(body, &a.report) == nil &&
		bytes.Contains(body, []byte(`"present"`)) {
		a.fromApp = true
	}
	return a
}

// headersAt sends a request without a session for host to the app's
// /api/headers with these headers, and returns the identity headers the
// app received.
func headersAt(t *testing.T, s *stack.Stack, host string, hdr map[string]string) map[string][]string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/api/headers", nil)
	u, _ := url.Parse(s.URL)
	req.Host = host + ":" + u.Port()
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET /api/headers: %v", err)
	}
	defer resp.Body.Close()
	var seen map[string][]string
	if err := json.NewDecoder(resp.Body).Decode(&seen); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /api/headers for %s: %d (%v)", host, resp.StatusCode, err)
	}
	return seen
}

// fetchJWKS gets a JWKS, which must be cacheable for five minutes.
func fetchJWKS(t *testing.T, u string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "max-age=300" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("GET %s: %d, Cache-Control %q, Content-Type %q", u, resp.StatusCode,
			resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"))
	}
	return body
}
