package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/pkg/config"
)

// interopProvider is a real OpenID provider a test started (Ory Hydra,
// node oidc-provider), fronted by a countingProxy whose URL is its issuer:
// whatever extauth and the browser send to the provider passes the proxy,
// which counts it.
type interopProvider struct {
	Name                           string
	Issuer, ClientID, ClientSecret string // Issuer = the counting proxy's URL
	// NginxPort is the port registered in the client's redirect URIs.
	NginxPort int
	Proxy     *countingProxy
	// Update holds extauth's settings for this provider (scopes...).
	Update func(cfg *config.Config)
	// AccessTokenTTL is how long the provider's access tokens live.
	AccessTokenTTL time.Duration
	// Login completes the provider's own pages in chromium, from its first
	// page until the browser is back on the nginx URL.
	Login func(t *testing.T, ctx context.Context)
	// ConfirmLogout completes the provider's pages after extauth's
	// sign-out sent the browser to end_session (nil: there are none).
	ConfirmLogout func(t *testing.T, ctx context.Context)
	// BackchannelLogout makes the provider send a back-channel logout for
	// the browser's session (ctx is the browser), without extauth's sign-out.
	BackchannelLogout func(t *testing.T, ctx context.Context)
}

// countingProxy is a reverse proxy in front of a provider that counts what
// crosses it: token requests by grant_type, the token endpoint's OAuth
// error codes, revocations by token_type_hint, and end_session requests.
// The endpoints' paths come from the discovery document it forwards.
type countingProxy struct {
	URL string

	mu          sync.Mutex
	paths       map[string]string // "token", "revocation", "end_session" → path
	grants      map[string]int
	tokenErrors map[string]int
	revocations []string
	endSessions []url.Values
}

// startCountingProxy proxies to target (scheme://host:port) on a new
// loopback port; the provider's issuer must be the proxy's URL.
func startCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{paths: map[string]string{}, grants: map[string]int{}, tokenErrors: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(to)
			// The provider sees the host it is known by: the issuer's.
			r.Out.Host = r.In.Host
			r.SetXForwarded()
		},
		ModifyResponse: p.observeResponse,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.observeRequest(r)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// path is an endpoint's path ("token", "revocation", "end_session") as
// the discovery document named it; "" before discovery.
func (p *countingProxy) path(endpoint string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paths[endpoint]
}

func (p *countingProxy) observeRequest(r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	endpoint := ""
	for name, path := range p.paths {
		if path == r.URL.Path {
			endpoint = name
		}
	}
	switch endpoint {
	case "end_session":
		q := r.URL.Query()
		if r.Method == http.MethodPost {
			for k, v := range readForm(r) {
				q[k] = v
			}
		}
		// Hydra sends the browser back to its end_session path with a
		// logout_verifier once its logout app confirmed: the provider's
		// own step, not another end_session request of the client.
		if q.Has("logout_verifier") {
			break
		}
		p.endSessions = append(p.endSessions, q)
	case "token":
		p.grants[readForm(r).Get("grant_type")]++
	case "revocation":
		p.revocations = append(p.revocations, readForm(r).Get("token_type_hint"))
	}
}

// readForm reads a form body and puts it back for the provider.
func readForm(r *http.Request) url.Values {
	if r.Body == nil {
		return url.Values{}
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(bytes.NewReader(b))
	form, _ := url.ParseQuery(string(b))
	return form
}

func (p *countingProxy) observeResponse(resp *http.Response) error {
	path := resp.Request.URL.Path
	isToken := path == p.path("token") && path != ""
	if !strings.HasSuffix(path, "/.well-known/openid-configuration") && !isToken {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if isToken {
		var body struct {
			Error string `json:"error"`
		}
		if resp.StatusCode != http.StatusOK && json.Unmarshal(b, &body) == nil {
			p.mu.Lock()
			p.tokenErrors[body.Error]++
			p.mu.Unlock()
		}
		return nil
	}
	var doc map[string]any
	if json.Unmarshal(b, &doc) != nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for endpoint, key := range map[string]string{"token": "token_endpoint", "revocation": "revocation_endpoint", "end_session": "end_session_endpoint"} {
		if s, _ := doc[key].(string); s != "" {
			if u, err := url.Parse(s); err == nil {
				p.paths[endpoint] = u.Path
			}
		}
	}
	return nil
}

// counts is a snapshot of what the proxy saw.
type counts struct {
	grants      map[string]int
	tokenErrors map[string]int
	revocations []string
	endSessions []url.Values
}

func (p *countingProxy) counts() counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := counts{grants: map[string]int{}, tokenErrors: map[string]int{}}
	for k, v := range p.grants {
		c.grants[k] = v
	}
	for k, v := range p.tokenErrors {
		c.tokenErrors[k] = v
	}
	c.revocations = append(c.revocations, p.revocations...)
	c.endSessions = append(c.endSessions, p.endSessions...)
	return c
}

func (c counts) errors() int {
	n := 0
	for _, v := range c.tokenErrors {
		n += v
	}
	return n
}

// runInterop is the scenario for one provider: sign in through the
// reference nginx config, a reload after the access token expired (one
// refresh grant), ten parallel fetches after it expired again (one refresh,
// no error at the provider), sign-out (revocation reached the provider,
// the old refresh token no longer refreshes, end_session with
// id_token_hint), and a back-channel logout from the provider that ends the
// session at the next check. Each figure is logged as "interop <name>: ...".
func runInterop(t *testing.T, p *interopProvider) {
	report := func(format string, args ...any) {
		t.Helper()
		t.Logf("interop %s: "+format, append([]any{p.Name}, args...)...)
	}
	s := startStack(t, stack.Options{
		Provider:  &stack.ExternalProvider{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret},
		NginxPort: p.NginxPort,
		Update:    p.Update,
	})
	ctx := browser(t)
	wait := p.AccessTokenTTL + 500*time.Millisecond

	// 1. Sign in through nginx; the app sees who signed in.
	run(t, ctx, "open the protected page", chromedp.Navigate(s.URL+"/hello"))
	p.Login(t, ctx)
	run(t, ctx, "signed-in page", chromedp.WaitVisible(chromedp.CSS("#greeting")))
	user := text(t, ctx, `td[data-header="X-Auth-Request-User"]`)
	email := text(t, ctx, `td[data-header="X-Auth-Request-Email"]`)
	if user == "" {
		t.Error("the app saw no X-Auth-Request-User")
	}
	c := p.Proxy.counts()
	report("signed in as user %q, email %q; code grants %d", user, email, c.grants["authorization_code"])
	if c.grants["authorization_code"] != 1 {
		t.Errorf("authorization_code grants = %d, want 1", c.grants["authorization_code"])
	}
	if rt := refreshTokenOf(t, s, sessionCookie(t, ctx)); rt == "" {
		t.Fatal("no refresh token in the session")
	}

	// 2. A reload after the access token expired refreshes it once.
	before, cookie := c, sessionCookie(t, ctx)
	time.Sleep(wait)
	run(t, ctx, "reload after expiry", chromedp.Navigate(s.URL+"/again"), chromedp.WaitVisible(chromedp.CSS("#greeting")))
	c = p.Proxy.counts()
	report("reload after expiry: %d refresh grant(s), cookie rotated %v", c.grants["refresh_token"]-before.grants["refresh_token"], sessionCookie(t, ctx) != cookie)
	if got := c.grants["refresh_token"] - before.grants["refresh_token"]; got != 1 {
		t.Errorf("reload after expiry: %d refresh grants, want 1", got)
	}

	// 3. Ten parallel fetches after the next expiry: one refresh, all 200,
	// no error (reuse detection) at the provider.
	time.Sleep(wait)
	before = p.Proxy.counts()
	statuses := get(t, ctx, "parallel fetches", chromedp.Evaluate[[]int](`Promise.all(
		Array.from({length: 10}, (_, i) => fetch('/api/item/' + i, {redirect: 'manual'}).then(r => r.status)))`,
		chromedp.EvalAwaitPromise))
	c = p.Proxy.counts()
	ok := 0
	for _, st := range statuses {
		if st == http.StatusOK {
			ok++
		}
	}
	report("10 parallel fetches after expiry: %d×200, %d refresh grant(s), %d token errors", ok,
		c.grants["refresh_token"]-before.grants["refresh_token"], c.errors()-before.errors())
	if ok != 10 {
		t.Errorf("parallel fetches: %v", statuses)
	}
	if got := c.grants["refresh_token"] - before.grants["refresh_token"]; got != 1 {
		t.Errorf("ten parallel fetches made %d refreshes, want 1", got)
	}
	if c.errors() != before.errors() || c.errors() != 0 {
		t.Errorf("the provider answered token errors: %v", c.tokenErrors)
	}

	// 4. Sign-out: revocation at the provider, end_session with
	// id_token_hint, and the old refresh token no longer refreshes.
	rt := refreshTokenOf(t, s, sessionCookie(t, ctx))
	before = p.Proxy.counts()
	run(t, ctx, "sign out", chromedp.Navigate(s.URL+"/oauth2/sign_out"))
	// Before the provider's own logout page is confirmed: confirming it
	// may end the grant by itself (node oidc-provider does), which would
	// hide a revocation that did not happen.
	code := redeemAt(t, p.Issuer+p.Proxy.path("token"), p.ClientID, p.ClientSecret, rt)
	if p.ConfirmLogout != nil {
		p.ConfirmLogout(t, ctx)
	}
	c = p.Proxy.counts()
	revoked := c.revocations[len(before.revocations):]
	ends := c.endSessions[len(before.endSessions):]
	hint := len(ends) > 0 && ends[0].Get("id_token_hint") != ""
	report("sign-out: revocations %v, end_session calls %d (id_token_hint %v), old refresh token now %q", revoked, len(ends), hint, code)
	if len(revoked) == 0 || revoked[0] != "refresh_token" {
		t.Errorf("revocations at sign-out = %v, want the refresh token first", revoked)
	}
	if len(ends) != 1 || !hint {
		t.Errorf("end_session requests = %v, want one with id_token_hint", ends)
	}
	if code == "" {
		t.Error("the revoked refresh token still refreshes")
	}
	run(t, ctx, "visit after sign-out", chromedp.Navigate(s.URL+"/hello"))
	if loc := get(t, ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, p.Issuer) {
		t.Errorf("after sign-out the protected page went to %s, not the provider", loc)
	}

	// 5. A back-channel logout from the provider ends the session at the
	// next check.
	if p.BackchannelLogout == nil {
		report("back-channel logout: not supported")
		return
	}
	p.Login(t, ctx)
	run(t, ctx, "signed in again", chromedp.WaitVisible(chromedp.CSS("#greeting")))
	cookies := []*http.Cookie{{Name: s.Config.Session.CookieName, Value: sessionCookie(t, ctx)}}
	if code := httpGet(t, s.URL+"/hello", cookies).StatusCode; code != http.StatusOK {
		t.Fatalf("signed in again, but the check answers %d", code)
	}
	before = p.Proxy.counts()
	p.BackchannelLogout(t, ctx)
	start := time.Now()
	status := 0
	for time.Since(start) < 5*time.Second {
		if status = httpGet(t, s.URL+"/hello", cookies).StatusCode; status != http.StatusOK {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	c = p.Proxy.counts()
	report("back-channel logout: the next check answers %d after %v (%d refresh grants meanwhile)", status,
		time.Since(start).Round(time.Millisecond), c.grants["refresh_token"]-before.grants["refresh_token"])
	if status != http.StatusFound {
		t.Errorf("after the provider's back-channel logout the page answers %d, want 302 to sign in", status)
	}
	// The logout record ended the session, not a refresh the provider refused.
	if c.grants["refresh_token"] != before.grants["refresh_token"] {
		t.Errorf("%d refresh grants between the back-channel logout and the check", c.grants["refresh_token"]-before.grants["refresh_token"])
	}
}

// redeemAt presents a refresh token at a token endpoint and returns the
// OAuth error code ("" when it was accepted).
func redeemAt(t *testing.T, tokenURL, clientID, clientSecret, refreshToken string) string {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode == http.StatusOK {
		return ""
	}
	if body.Error == "" {
		return resp.Status
	}
	return body.Error
}
