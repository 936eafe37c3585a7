package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/op"
	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/pkg/session"
)

// accessTTL is the provider's access-token lifetime in these tests: short,
// so that the check must refresh within the test. Real time passes here —
// a real provider and a real browser run on the wall clock.
const accessTTL = 3 * time.Second

// The provider's login form (e2e/op/login.go).
const (
	usernameField = "#username"
	passwordField = "#password"
	submitButton  = "#login-submit"
)

// browser starts Debian's chromium, headless, as root (no sandbox), with
// the flags that stop its background networking on this closed network,
// and any extra options of the test (a host resolver rule, say).
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := "/usr/bin/chromium"
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("chromium not found at %s: apt-get install chromium (.ci/run does)", path)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 800),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// One overall bound, so a stuck page fails the test instead of hanging
	// CI (set after the first run: a timeout there would stop the browser).
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// startStack starts the stack with the tests' short token lifetimes; its
// gateway's log is shown when the test fails.
func startStack(t *testing.T, o stack.Options) *stack.Stack {
	t.Helper()
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = accessTTL
	}
	if o.RefreshBefore == 0 {
		o.RefreshBefore = time.Second
	}
	s, err := stack.Start(t.Context(), o)
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway error log:\n%s", s.NginxLog())
		}
		s.Stop()
	})
	return s
}

// run runs browser steps; a failure names the step and where the browser was.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (browser at %s)", what, err, loc)
	}
}

// get runs one browser action that returns a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (browser at %s)", what, err, loc)
	}
	return v
}

func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	return get(t, ctx, "text of "+css, chromedp.Text(chromedp.CSS(css)))
}

// sessionCookie returns the browser's session cookie value.
func sessionCookie(t *testing.T, ctx context.Context) string {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "_extauth" {
			return c.Value
		}
	}
	return ""
}

// login fills the provider's login form.
func login(t *testing.T, ctx context.Context, s *stack.Stack) {
	t.Helper()
	run(t, ctx, "provider login page",
		chromedp.WaitVisible(chromedp.CSS(usernameField)),
		chromedp.SendKeys(chromedp.CSS(usernameField), op.Username),
		chromedp.SendKeys(chromedp.CSS(passwordField), op.Password),
		chromedp.Click(chromedp.CSS(submitButton)),
	)
}

func onProvider(t *testing.T, ctx context.Context, s *stack.Stack) bool {
	t.Helper()
	loc := get(t, ctx, "location", chromedp.Location())
	return strings.HasPrefix(loc, s.OP.Issuer())
}

// TestBrowserSignInRefreshSignOut is the product as a user meets it.
func TestBrowserSignInRefreshSignOut(t *testing.T) {
	s := startStack(t, stack.Options{})
	ctx := browser(t)

	// 1. The protected URL leads to the provider's login page; signing in
	// lands back on the original URL, query string intact, and the app saw
	// the user's identity.
	target := s.URL + "/hello/world?x=1&y=two%20words"
	run(t, ctx, "open the protected page", chromedp.Navigate(target))
	if !onProvider(t, ctx, s) {
		t.Fatal("not sent to the provider's login page")
	}
	login(t, ctx, s)
	run(t, ctx, "signed-in page", chromedp.WaitVisible(chromedp.CSS("#greeting")))
	loc := get(t, ctx, "location", chromedp.Location())
	user := text(t, ctx, `td[data-header="X-Auth-Request-User"]`)
	email := text(t, ctx, `td[data-header="X-Auth-Request-Email"]`)
	if loc != target {
		t.Errorf("landed on %s, want %s", loc, target)
	}
	if user == "" || email != op.Email {
		t.Errorf("upstream saw user %q, email %q (want email %q)", user, email, op.Email)
	}
	noForgedHeadersReachTheApp(t, ctx)

	// 6. A screenshot of the signed-in page, kept as a test artifact.
	png := get(t, ctx, "screenshot", chromedp.CaptureScreenshot())
	artifacts := filepath.Join("artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifacts, "signed-in.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 {
		t.Errorf("screenshot is %d bytes", len(png))
	}

	// 2. After the access token's lifetime, the next page load still shows
	// the page without a login: the check refreshed, and the rotated cookie
	// reached the browser through nginx.
	before := sessionCookie(t, ctx)
	refreshes := s.OP.TokenRequests("refresh_token")
	time.Sleep(accessTTL)
	run(t, ctx, "reload after expiry", chromedp.Navigate(s.URL+"/again"), chromedp.WaitVisible(chromedp.CSS("#greeting")))
	if onProvider(t, ctx, s) {
		t.Fatal("sent to log in again after the access token expired")
	}
	if got := s.OP.TokenRequests("refresh_token"); got != refreshes+1 {
		t.Errorf("refresh-token grants = %d, want %d", got, refreshes+1)
	}
	after := sessionCookie(t, ctx)
	if after == before || after == "" {
		t.Error("the rotated session cookie did not reach the browser")
	}

	// ... also when the upstream answers 500 for that page (auth-always-set-cookie).
	time.Sleep(accessTTL)
	refreshes = s.OP.TokenRequests("refresh_token")
	run(t, ctx, "error page after expiry", chromedp.Navigate(s.URL+"/fail"))
	path := text(t, ctx, "#path")
	if path != "/fail" {
		t.Fatalf("the app's 500 page was not shown: %q", path)
	}
	if got := s.OP.TokenRequests("refresh_token"); got != refreshes+1 {
		t.Errorf("refresh-token grants = %d, want %d", got, refreshes+1)
	}
	if c := sessionCookie(t, ctx); c == after || c == "" {
		t.Error("the rotated cookie was lost when the app answered 500")
	}

	// 3. Ten parallel fetches from the page after expiry all succeed with one refresh.
	time.Sleep(accessTTL)
	refreshes = s.OP.TokenRequests("refresh_token")
	statuses := get(t, ctx, "parallel fetches", chromedp.Evaluate[[]int](`Promise.all(
		Array.from({length: 10}, (_, i) => fetch('/api/item/' + i, {redirect: 'manual'}).then(r => r.status)))`,
		chromedp.EvalAwaitPromise))
	if len(statuses) != 10 {
		t.Fatalf("statuses = %v", statuses)
	}
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Errorf("fetch %d: status %d", i, st)
		}
	}
	if got := s.OP.TokenRequests("refresh_token"); got != refreshes+1 {
		t.Errorf("ten parallel fetches made %d refreshes, want 1", got-refreshes)
	}

	// 4. Sign-out revokes the refresh token at the provider, ends the
	// provider's session, and the next visit shows the login page again.
	rt := refreshTokenOf(t, s, sessionCookie(t, ctx))
	run(t, ctx, "sign out", chromedp.Navigate(s.URL+"/oauth2/sign_out"))
	if s.OP.EndSessions() != 1 {
		t.Errorf("provider end-session calls = %d, want 1", s.OP.EndSessions())
	}
	if code := redeem(t, s, rt); code != "invalid_grant" {
		t.Errorf("the revoked refresh token redeemed: %q", code)
	}
	run(t, ctx, "visit after sign-out", chromedp.Navigate(s.URL+"/hello"))
	run(t, ctx, "login page again", chromedp.WaitVisible(chromedp.CSS(usernameField)))
	if !onProvider(t, ctx, s) {
		t.Error("after sign-out the protected page did not lead to the provider's login")
	}
}

// refreshTokenOf opens a session cookie with extauth's own secret.
func refreshTokenOf(t *testing.T, s *stack.Stack, cookie string) string {
	t.Helper()
	codec, err := session.NewCodec(s.Config.Session.MustDecodeKeys(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var st session.State
	if err := codec.Decode(s.Config.Session.CookieName, cookie, &st); err != nil {
		t.Fatalf("open the session cookie: %v", err)
	}
	rt := st.Tokens().RefreshToken
	if rt == "" {
		t.Fatal("the session holds no refresh token")
	}
	return rt
}

// redeem presents a refresh token at the zitadel OP's token endpoint and
// returns the OAuth error code ("" when it was accepted).
func redeem(t *testing.T, s *stack.Stack, refreshToken string) string {
	t.Helper()
	return redeemAt(t, s.OP.Issuer()+"/oauth/token", s.Config.OIDC.ClientID, s.Config.OIDC.ClientSecret, refreshToken)
}

// forgedHeaders are identity headers a signed-in page sends itself.
var forgedHeaders = map[string]string{
	"X-Auth-Request-User":               "admin",
	"X-Auth-Request-Email":              "admin@example.com",
	"X-Auth-Request-Groups":             "admins",
	"X-Auth-Request-Preferred-Username": "root",
	"X-Auth-Request-Access-Token":       "forged",
	"X-Auth-Request-Jwt":                "forged",
}

// noForgedHeadersReachTheApp fetches /api/headers from the signed-in page
// with forged identity headers and fails if the app sees any of them: the
// gateway config strips what extauth's answer does not set.
func noForgedHeadersReachTheApp(t *testing.T, ctx context.Context) {
	t.Helper()
	forged, _ := json.Marshal(forgedHeaders)
	seen := get(t, ctx, "fetch with forged identity headers", chromedp.Evaluate[map[string][]string](
		`fetch('/api/headers', {headers: `+string(forged)+`}).then(r => r.json())`, chromedp.EvalAwaitPromise))
	if len(seen) == 0 {
		t.Fatal("the app saw no identity header at all")
	}
	for name, values := range seen {
		for _, v := range values {
			if v == forgedHeaders[name] {
				t.Errorf("the app received the client's own %s: %q", name, v)
			}
			// Caddy before 2.9 copies a header the check's answer lacks as
			// its placeholder's text (examples/caddy/Caddyfile removes it).
			if strings.HasPrefix(v, "{http.") {
				t.Errorf("the app received %s: %q", name, v)
			}
		}
	}
	if v := seen["X-Auth-Request-User"]; len(v) != 1 || v[0] == "" {
		t.Errorf("the app saw X-Auth-Request-User %q", v)
	}
}
