package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/server"
	"github.com/extauth/extauth/pkg/session"
)

// idClaims are the ID token claims a session keeps.
type idClaims struct {
	Sub               string         `json:"sub"`
	Email             string         `json:"email"`
	PreferredUsername string         `json:"preferred_username"`
	Name              string         `json:"name"`
	Groups            []string       `json:"groups"`
	SID               string         `json:"sid"`
	Extra             map[string]any `json:"-"`
}

// loadTokenSet reads a token set (Okta's) and the claims of its ID token.
func loadTokenSet(path string) (*testenv.TokenSet, *idClaims, error) {
	ts, err := testenv.ReadTokenSet(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (the benchmark expects ../shared beside the repository, or -tokenset)", err)
	}
	parts := strings.Split(ts.IDToken, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("token set %s: the ID token is not a JWT", path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, nil, fmt.Errorf("token set %s: %w", path, err)
	}
	var c idClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, nil, fmt.Errorf("token set %s: %w", path, err)
	}
	if err := json.Unmarshal(payload, &c.Extra); err != nil {
		return nil, nil, err
	}
	return &ts, &c, nil
}

// sealSession seals, with cfg's session secret and cookie options, the
// session a sign-in with ts makes (claims from its ID token, as the callback
// takes them; the access token valid for an hour, so no check refreshes),
// and returns it as a Cookie header value and the encoded size.
func sealSession(cfg *config.Config, ts *testenv.TokenSet, c *idClaims) (string, int, error) {
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		return "", 0, err
	}
	store := session.NewStore(codec, server.CookieOptions(cfg), time.Now)
	now := time.Now()
	st := &session.State{
		ID:      newUUID(),
		Subject: c.Sub, User: c.Sub, Email: c.Email,
		PreferredUsername: c.PreferredUsername, Groups: c.Groups, SID: c.SID,
		AccessExpiry: now.Add(time.Hour),
		CreatedAt:    now.Truncate(time.Millisecond),
		ExpiresAt:    now.Add(cfg.Session.MaxAge.Duration),
	}
	st.SetTokens(session.Tokens{AccessToken: ts.AccessToken, IDToken: ts.IDToken, RefreshToken: ts.RefreshToken})
	rec := httptest.NewRecorder()
	n, err := store.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st)
	if err != nil {
		return "", 0, err
	}
	var pairs []string
	for _, ck := range rec.Result().Cookies() {
		pairs = append(pairs, ck.Name+"="+ck.Value)
	}
	return strings.Join(pairs, "; "), n, nil
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// oktaShapedProvider starts the fake provider on the real clock, signing in
// a user with the Okta token set's claims and answering the code exchange
// with Okta's access and refresh tokens (its own ID token carries the same
// claims), so that a session signed in through it is Okta-sized too.
func oktaShapedProvider(ts *testenv.TokenSet, c *idClaims) (*providertest.Provider, error) {
	extra := map[string]any{}
	for _, k := range []string{"amr", "idp", "ver", "jti"} {
		if v, ok := c.Extra[k]; ok {
			extra[k] = v
		}
	}
	p, err := providertest.Start(
		providertest.WithClock(time.Now),
		providertest.WithUser(providertest.User{
			Subject: c.Sub, Email: c.Email, EmailVerified: true,
			PreferredUsername: c.PreferredUsername, Name: c.Name, Groups: c.Groups, Extra: extra,
		}),
	)
	if err != nil {
		return nil, err
	}
	p.SetTokenResponse(func(grant string) map[string]any {
		return map[string]any{"access_token": ts.AccessToken, "refresh_token": ts.RefreshToken}
	})
	return p, nil
}

// signIn drives a browser's sign-in with an HTTP client: GET startURL, then
// follow the redirects (the provider's /authorize, the service's callback)
// until the answer sets a cookie named by isSession. It returns the session
// cookies as a Cookie header value.
func signIn(ctx context.Context, startURL string, isSession func(name string) bool) (string, error) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: noRedirect, Timeout: 10 * time.Second}
	next := startURL
	for hop := 0; hop < 8; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Accept", "text/html")
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		var pairs []string
		for _, ck := range resp.Cookies() {
			if isSession(ck.Name) && ck.Value != "" && ck.MaxAge >= 0 {
				pairs = append(pairs, ck.Name+"="+ck.Value)
			}
		}
		if len(pairs) > 0 {
			return strings.Join(pairs, "; "), nil
		}
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			return "", fmt.Errorf("sign-in: GET %s: status %d: %s", next, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		loc, err := resp.Location()
		if err != nil {
			return "", fmt.Errorf("sign-in: GET %s: %v", next, err)
		}
		next = loc.String()
	}
	return "", fmt.Errorf("sign-in from %s: too many redirects", startURL)
}

// cookieHeaderSize is the bytes of name=value pairs of a Cookie header.
func cookieHeaderSize(h string) int {
	n := 0
	for _, p := range strings.Split(h, "; ") {
		n += len(p)
	}
	return n
}
