package op_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/e2e/op"
)

const (
	clientID     = "extauth-test"
	clientSecret = "extauth-test-secret"
	redirectURI  = "http://127.0.0.1:1/oauth2/callback"   // never contacted: the test reads the Location header
	postLogout   = "http://127.0.0.1:1/oauth2/signed-out" // idem
	ttl          = 7 * time.Second
)

type fixture struct {
	t        *testing.T
	p        *op.Provider
	provider *oidc.Provider
	oauth    *oauth2.Config
	browser  *http.Client
	jar      http.CookieJar
	claims   struct {
		Revocation string `json:"revocation_endpoint"`
		EndSession string `json:"end_session_endpoint"`
		Userinfo   string `json:"userinfo_endpoint"`
	}
}

func start(t *testing.T, accessTTL time.Duration) *fixture {
	t.Helper()
	p, err := op.Start(op.Config{
		Addr:                   "127.0.0.1:0",
		ClientID:               clientID,
		ClientSecret:           clientSecret,
		RedirectURIs:           []string{redirectURI},
		PostLogoutRedirectURIs: []string{postLogout},
		AccessTokenTTL:         accessTTL,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if !regexp.MustCompile(`^http://127\.0\.0\.1:[0-9]+$`).MatchString(p.Issuer()) {
		t.Fatalf("Issuer() = %q, want http://127.0.0.1:<port>", p.Issuer())
	}
	// go-oidc checks that the discovery document's issuer equals Issuer().
	provider, err := oidc.NewProvider(t.Context(), p.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, p: p, provider: provider}
	if err := provider.Claims(&f.claims); err != nil {
		t.Fatal(err)
	}
	if f.claims.Revocation == "" || f.claims.EndSession == "" || f.claims.Userinfo == "" {
		t.Fatalf("discovery lacks an endpoint: %+v", f.claims)
	}
	endpoint := provider.Endpoint()
	endpoint.AuthStyle = oauth2.AuthStyleInHeader // client_secret_basic
	f.oauth = &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: clientSecret,
		Endpoint:     endpoint,
		RedirectURL:  redirectURI,
		Scopes:       []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess},
	}
	f.jar, _ = cookiejar.New(nil)
	f.browser = &http.Client{
		Jar:           f.jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return f
}

var hiddenID = regexp.MustCompile(`<input type="hidden" name="id" value="([^"]+)">`)

// signIn starts an authorization request like a browser, follows redirects,
// fills the login form if it is shown (failing if wantForm is false or if
// it is not shown while wantForm is true), and returns the code and nonce
// and PKCE verifier of the request.
func (f *fixture) signIn(wantForm bool, opts ...oauth2.AuthCodeOption) (code, nonce, verifier string) {
	t := f.t
	t.Helper()
	state, nonce, verifier := rand(), rand(), oauth2.GenerateVerifier()
	opts = append(opts, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	next := f.oauth.AuthCodeURL(state, opts...)
	method, form := http.MethodGet, url.Values(nil)
	sawForm := false
	for range 10 {
		var resp *http.Response
		var err error
		if method == http.MethodPost {
			resp, err = f.browser.PostForm(next, form)
		} else {
			resp, err = f.browser.Get(next)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
			loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(loc.String(), redirectURI+"?") {
				q := loc.Query()
				if q.Get("error") != "" {
					t.Fatalf("authorization error: %v", q)
				}
				if q.Get("state") != state {
					t.Fatalf("state = %q, want %q", q.Get("state"), state)
				}
				if q.Get("code") == "" {
					t.Fatalf("no code in %s", loc)
				}
				if sawForm != wantForm {
					t.Fatalf("login form shown: %v, want %v", sawForm, wantForm)
				}
				return q.Get("code"), nonce, verifier
			}
			if loc.Host != resp.Request.URL.Host {
				t.Fatalf("redirected off the provider to %s", loc)
			}
			method, next = http.MethodGet, loc.String()
		case resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/login/username":
			if !wantForm {
				t.Fatalf("login form shown, want none (provider session)")
			}
			if sawForm {
				t.Fatalf("login form shown again: %s", body)
			}
			sawForm = true
			page := string(body)
			for _, s := range []string{`action="/login/username"`, `method="POST"`, `name="username"`, `name="password"`} {
				if !strings.Contains(page, s) {
					t.Fatalf("login page lacks %s:\n%s", s, page)
				}
			}
			m := hiddenID.FindStringSubmatch(page)
			if m == nil || m[1] != resp.Request.URL.Query().Get("authRequestID") {
				t.Fatalf("login page hidden id %v, want %q", m, resp.Request.URL.Query().Get("authRequestID"))
			}
			action, _ := resp.Request.URL.Parse("/login/username")
			// A wrong password shows the form again with an error.
			wrong, err := f.browser.PostForm(action.String(), url.Values{"id": {m[1]}, "username": {op.Username}, "password": {"wrong"}})
			if err != nil {
				t.Fatal(err)
			}
			wrongBody, _ := io.ReadAll(wrong.Body)
			wrong.Body.Close()
			if wrong.StatusCode != http.StatusOK || !strings.Contains(string(wrongBody), "username or password wrong") {
				t.Fatalf("wrong password: %d %s", wrong.StatusCode, wrongBody)
			}
			if len(wrong.Cookies()) != 0 {
				t.Fatalf("wrong password set cookies %v", wrong.Cookies())
			}
			method, next = http.MethodPost, action.String()
			form = url.Values{"id": {m[1]}, "username": {op.Username}, "password": {op.Password}}
		default:
			t.Fatalf("%s %s: %d %s", method, next, resp.StatusCode, body)
		}
	}
	t.Fatal("too many redirects")
	return
}

func rand() string { return oauth2.GenerateVerifier()[:20] }

// exchange redeems a code and checks the answer.
func (f *fixture) exchange(code, nonce, verifier string) (*oauth2.Token, string) {
	t := f.t
	t.Helper()
	tok, err := f.oauth.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Extra("expires_in"); got != ttl.Seconds() {
		t.Errorf("expires_in = %v, want %v", got, ttl.Seconds())
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := f.provider.Verifier(&oidc.Config{ClientID: clientID}).Verify(t.Context(), rawID)
	if err != nil {
		t.Fatal(err)
	}
	if idt.Nonce != nonce || idt.Subject != op.Subject {
		t.Errorf("ID token nonce %q subject %q, want %q %q", idt.Nonce, idt.Subject, nonce, op.Subject)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if _, ok := claims["email"]; ok {
		t.Errorf("ID token has an email claim (only userinfo should): %v", claims)
	}
	return tok, rawID
}

// tokenPost POSTs a form with client_secret_basic and decodes the JSON answer.
func (f *fixture) tokenPost(endpoint string, form url.Values) (int, map[string]any) {
	t := f.t
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: %d %s", endpoint, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, body
}

func (f *fixture) refresh(rt string) (int, map[string]any) {
	f.t.Helper()
	return f.tokenPost(f.oauth.Endpoint.TokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

func (f *fixture) hasSessionCookie() bool {
	u, _ := url.Parse(f.p.Issuer())
	for _, c := range f.jar.Cookies(u) {
		if c.Name == op.SessionCookie {
			return true
		}
	}
	return false
}

func TestProvider(t *testing.T) {
	f := start(t, ttl)

	// First sign-in: login form.
	code, nonce, verifier := f.signIn(true)
	if !f.hasSessionCookie() {
		t.Fatal("no provider session cookie after login")
	}
	tok, _ := f.exchange(code, nonce, verifier)

	// The code is single use.
	if _, err := f.oauth.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); err == nil {
		t.Error("code redeemed twice")
	}

	// Userinfo has the email (the ID token does not).
	info, err := f.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatal(err)
	}
	if info.Email != op.Email || info.Subject != op.Subject {
		t.Errorf("userinfo email %q sub %q, want %q %q", info.Email, info.Subject, op.Email, op.Subject)
	}

	// Refresh rotates the refresh token.
	rt1 := tok.RefreshToken
	status, body := f.refresh(rt1)
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, body)
	}
	rt2, _ := body["refresh_token"].(string)
	if rt2 == "" || rt2 == rt1 {
		t.Fatalf("refresh returned refresh_token %q (old %q)", rt2, rt1)
	}
	if body["expires_in"] != ttl.Seconds() {
		t.Errorf("refresh expires_in = %v, want %v", body["expires_in"], ttl.Seconds())
	}
	if body["access_token"] == "" || body["access_token"] == tok.AccessToken {
		t.Errorf("refresh access_token %v", body["access_token"])
	}
	// The old refresh token is now invalid.
	if status, body := f.refresh(rt1); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("old refresh token: %d %v, want 400 invalid_grant", status, body)
	}

	// Revocation (RFC 7009) of the new refresh token.
	if status, body := f.tokenPost(f.claims.Revocation, url.Values{"token": {rt2}, "token_type_hint": {"refresh_token"}}); status != http.StatusOK {
		t.Fatalf("revoke: %d %v", status, body)
	}
	if status, body := f.refresh(rt2); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("revoked refresh token: %d %v, want 400 invalid_grant", status, body)
	}
	// client_secret_post authenticates too (the token is revoked, so the
	// answer is invalid_grant rather than invalid_client).
	postForm := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}, "client_id": {clientID}, "client_secret": {clientSecret}}
	if resp, err := http.PostForm(f.oauth.Endpoint.TokenURL, postForm); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("client_secret_post: %v %v, want 400", resp, err)
	} else {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if e.Error != "invalid_grant" {
			t.Errorf("client_secret_post: error %q, want invalid_grant", e.Error)
		}
	}
	// A wrong client secret is refused.
	req, _ := http.NewRequest(http.MethodPost, f.oauth.Endpoint.TokenURL, strings.NewReader("grant_type=refresh_token&refresh_token=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong secret: %v %v, want 401", resp, err)
	}

	// Second sign-in with the same browser: the provider session skips the form.
	code, nonce, verifier = f.signIn(false)
	_, rawID := f.exchange(code, nonce, verifier)

	// end_session with an unregistered post_logout_redirect_uri: 400, the
	// session survives.
	bad := f.claims.EndSession + "?" + url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {"http://127.0.0.1:1/elsewhere"}}.Encode()
	resp, err := f.browser.Get(bad)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || f.p.EndSessions() != 0 || !f.hasSessionCookie() {
		t.Fatalf("end_session with unregistered URI: %d, EndSessions %d, cookie %v", resp.StatusCode, f.p.EndSessions(), f.hasSessionCookie())
	}

	issuerURL, _ := url.Parse(f.p.Issuer())
	oldCookies := f.jar.Cookies(issuerURL)

	// end_session with a registered post_logout_redirect_uri.
	good := f.claims.EndSession + "?" + url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {postLogout}, "state": {"st8"}}.Encode()
	resp, err = f.browser.Get(good)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != postLogout+"?state=st8" {
		t.Fatalf("end_session: %d Location %q, want 302 %s?state=st8", resp.StatusCode, resp.Header.Get("Location"), postLogout)
	}
	if f.hasSessionCookie() {
		t.Error("session cookie survived end_session")
	}
	if got := f.p.EndSessions(); got != 1 {
		t.Errorf("EndSessions() = %d, want 1", got)
	}

	// The next sign-in shows the login form again, even with the old cookie
	// put back: the provider forgot the session.
	f.jar.SetCookies(issuerURL, oldCookies)
	if !f.hasSessionCookie() {
		t.Fatal("could not put the old session cookie back")
	}
	code, nonce, verifier = f.signIn(true)
	f.exchange(code, nonce, verifier)

	// Counts: 3 successful code exchanges + 1 replayed code; 4 refreshes
	// (1 ok, 3 invalid_grant) + 1 with a wrong secret.
	if got := f.p.TokenRequests("authorization_code"); got != 4 {
		t.Errorf("TokenRequests(authorization_code) = %d, want 4", got)
	}
	if got := f.p.TokenRequests("refresh_token"); got != 5 {
		t.Errorf("TokenRequests(refresh_token) = %d, want 5", got)
	}
	if got := f.p.EndSessions(); got != 1 {
		t.Errorf("EndSessions() = %d, want 1", got)
	}
}

// TestProviderSession checks that the provider session is per browser and
// that prompt=login asks for the password despite it.
func TestProviderSession(t *testing.T) {
	f := start(t, ttl)
	f.signIn(true)
	f.signIn(false)
	f.signIn(true, oauth2.SetAuthURLParam("prompt", "login"))
	f.signIn(false)

	// Another browser (empty cookie jar) has no session.
	f.jar, _ = cookiejar.New(nil)
	f.browser.Jar = f.jar
	f.signIn(true)
	f.signIn(false)
	if got := f.p.EndSessions(); got != 0 {
		t.Errorf("EndSessions() = %d, want 0", got)
	}
}

func TestAccessTokenExpires(t *testing.T) {
	const short = 2 * time.Second
	f := start(t, short)
	code, _, verifier := f.signIn(true)
	tok, err := f.oauth.Exchange(t.Context(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Extra("expires_in"); got != short.Seconds() {
		t.Fatalf("expires_in = %v, want %v", got, short.Seconds())
	}
	if _, err := f.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("userinfo with a fresh token: %v", err)
	}
	time.Sleep(short + 200*time.Millisecond)
	if _, err := f.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("userinfo accepted an expired access token")
	}
	// The refresh token still works and yields a fresh access token.
	status, body := f.refresh(tok.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, body)
	}
	fresh := &oauth2.Token{AccessToken: body["access_token"].(string), TokenType: "Bearer"}
	if _, err := f.provider.UserInfo(t.Context(), oauth2.StaticTokenSource(fresh)); err != nil {
		t.Fatalf("userinfo with the refreshed token: %v", err)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0", "[::1]:0", "192.0.2.1:0"} {
		p, err := op.Start(op.Config{Addr: addr, ClientID: "c", ClientSecret: "s", RedirectURIs: []string{redirectURI}})
		if err == nil {
			p.Close()
			t.Errorf("Start(%q) succeeded", addr)
		}
	}
}

func TestClose(t *testing.T) {
	f := start(t, ttl)
	if err := f.p.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.p.Issuer()+"/.well-known/openid-configuration", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("provider still answers after Close")
	}
}
