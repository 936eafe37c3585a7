package e2e

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// twoApp is one of the two apps of TestBrowserTwoApps: its host behind
// nginx, its own provider (its own issuer, client and user) and its cookie.
type twoApp struct {
	name, host string
	url        string // http://<host>:<nginx port>, as the browser uses it
	cookie     string // session.cookieName
	user       providertest.User
	idp        *providertest.Provider
}

// TestBrowserTwoApps is one extauth serving two apps through nginx, each
// on its own host with its own client at its own provider: chromium signs
// in to each separately, the sessions never cross (neither in the browser
// nor when a cookie is replayed under the other app's host and name),
// signing out of one app revokes at its provider only and leaves the other
// signed in, the skip rules pass /favicon.ico without a session, and the
// check's metrics carry each app's label.
func TestBrowserTwoApps(t *testing.T) {
	start := time.Now()
	port := testenv.FreePort(t)
	nginx := fmt.Sprintf("http://127.0.0.1:%d", port)
	newApp := func(name string, user providertest.User) *twoApp {
		a := &twoApp{name: name, host: name + ".example.test", cookie: "_extauth_" + name, user: user}
		a.url = fmt.Sprintf("http://%s:%d", a.host, port)
		// Exact redirect URIs: a provider refuses a sign-in whose callback
		// is not on its own app's host.
		a.idp = providertest.New(t, providertest.WithClock(time.Now), providertest.WithUser(user),
			providertest.WithClient(name+"-client", name+"-secret"),
			providertest.WithRedirectURIs(a.url+"/oauth2/callback"),
			providertest.WithPostLogoutRedirectURIs(a.url+"/signed-out"))
		return a
	}
	grafana := newApp("grafana", providertest.User{Subject: "gina-0001", Email: "gina@grafana.example.test",
		EmailVerified: true, PreferredUsername: "gina", Name: "Gina", Groups: []string{"sre"}})
	wiki := newApp("wiki", providertest.User{Subject: "walt-0002", Email: "walt@wiki.example.test",
		EmailVerified: true, PreferredUsername: "walt", Name: "Walt", Groups: []string{"writers"}})
	if grafana.idp.Issuer == wiki.idp.Issuer {
		t.Fatal("the two providers share an issuer")
	}

	// The top-level client stays the stack's own provider (the zitadel OP):
	// a request for any other host is its, and no app may use it.
	var apps strings.Builder
	apps.WriteString("apps:\n")
	for _, a := range []*twoApp{grafana, wiki} {
		fmt.Fprintf(&apps, `  - name: %s
    hosts: [%s]
    oidc:
      issuerURL: %q
      clientID: %q
      clientSecret: %q
      redirectURL: %q
      postLogoutRedirectURL: %q
    session: {cookieName: %s}
    authorization:
      skip:
        - {methods: [GET], path: /favicon.ico}
        - {methods: [GET], path: /signed-out}
`, a.name, a.host, a.idp.Issuer, a.idp.ClientID, a.idp.ClientSecret, a.url+"/oauth2/callback", a.url+"/signed-out", a.cookie)
	}
	s := startStack(t, stack.Options{NginxPort: port, ExtraYAML: apps.String()})
	if len(s.Config.Apps) != 2 {
		t.Fatalf("extauth has %d apps", len(s.Config.Apps))
	}
	metricsAddr := s.Metrics[0]
	t.Logf("stack up in %v", time.Since(start).Round(time.Millisecond))

	// 1. The skip rules, before any browser: GET /favicon.ico without a
	// cookie reaches the app (no identity) on both hosts; anything the
	// rule does not name needs a session.
	before := checks(t, metricsAddr)
	for _, a := range []*twoApp{grafana, wiki} {
		r := viaNginx(t, nginx, http.MethodGet, a.host, "/favicon.ico", nil)
		if r.status != http.StatusOK || !strings.Contains(r.body, `<code id="path">/favicon.ico</code>`) {
			t.Errorf("%s: GET /favicon.ico without a cookie: %d %q, want the app's 200", a.name, r.status, r.location)
		}
		if strings.Contains(r.body, "X-Auth-Request-User") {
			t.Errorf("%s: the skipped request reached the app with identity headers", a.name)
		}
		for _, req := range [][2]string{{http.MethodPost, "/favicon.ico"}, {http.MethodGet, "/favicon.ico.bak"}, {http.MethodGet, "/hello"}} {
			if r := viaNginx(t, nginx, req[0], a.host, req[1], nil); !toSignIn(r) {
				t.Errorf("%s: %s %s without a cookie: %d %q, want 302 to sign in", a.name, req[0], req[1], r.status, r.location)
			}
		}
	}
	d := checks(t, metricsAddr).minus(before)
	for _, a := range []*twoApp{grafana, wiki} {
		if d[key{a.name, "skipped"}] != 1 || d[key{a.name, "unauthenticated"}] != 3 {
			t.Errorf("%s: checks of the skip rules counted %v, want skipped 1, unauthenticated 3", a.name, d)
		}
	}
	for _, a := range []*twoApp{grafana, wiki} {
		if n := len(a.idp.Authorizations()); n != 0 {
			t.Fatalf("%s's provider saw %d sign-ins before the browser", a.name, n)
		}
	}

	ctx := browser(t, chromedp.Flag("host-resolver-rules", "MAP *.example.test 127.0.0.1"))

	// 2. Signing in at grafana goes through grafana's provider, with
	// grafana's client and callback, and the app sees grafana's user.
	run(t, ctx, "open grafana", chromedp.Navigate(grafana.url+"/d/home?orgId=1"),
		chromedp.WaitVisible(chromedp.CSS("#greeting")))
	seesUser(t, ctx, grafana, grafana.url+"/d/home?orgId=1")
	signedInAt(t, grafana, 1)
	noSignInAt(t, wiki)
	if c := cookiesFor(t, ctx, wiki.url); len(c) != 0 {
		t.Errorf("the browser holds cookies for wiki after signing in at grafana: %v", keys(c))
	}
	grafanaCookies := cookiesFor(t, ctx, grafana.url)
	if grafanaCookies[grafana.cookie] == "" {
		t.Fatalf("no %s cookie for grafana's host: %v", grafana.cookie, keys(grafanaCookies))
	}

	// 3. grafana's session does not open wiki: wiki takes its own sign-in
	// at its own provider, and its page shows wiki's user, not grafana's.
	run(t, ctx, "open wiki", chromedp.Navigate(wiki.url+"/pages/start"),
		chromedp.WaitVisible(chromedp.CSS("#greeting")))
	seesUser(t, ctx, wiki, wiki.url+"/pages/start")
	signedInAt(t, wiki, 1)
	signedInAt(t, grafana, 1)
	wikiCookies := cookiesFor(t, ctx, wiki.url)
	if wikiCookies[wiki.cookie] == "" {
		t.Fatalf("no %s cookie for wiki's host: %v", wiki.cookie, keys(wikiCookies))
	}
	if _, ok := wikiCookies[grafana.cookie]; ok {
		t.Errorf("wiki's host holds grafana's cookie")
	}

	// 4. Signed in to both, both work, without another sign-in.
	for _, a := range []*twoApp{grafana, wiki} {
		run(t, ctx, "back to "+a.name, chromedp.Navigate(a.url+"/again"), chromedp.WaitVisible(chromedp.CSS("#greeting")))
		seesUser(t, ctx, a, a.url+"/again")
		signedInAt(t, a, 1)
	}

	// 5. Replays, without the browser: grafana's cookie passes at grafana
	// (so it is a live session), and is refused at wiki under wiki's
	// cookie name or its own, and at the top-level client; wiki's cookie
	// is refused at grafana. Each check is counted under its app.
	before = checks(t, metricsAddr)
	if r := viaNginx(t, nginx, http.MethodGet, grafana.host, "/api/headers", grafanaCookies); r.status != http.StatusOK ||
		!strings.Contains(r.body, grafana.user.Email) {
		t.Fatalf("grafana's cookie at grafana: %d %s", r.status, r.body)
	}
	replays := []struct {
		what, host string
		cookies    map[string]string
	}{
		{"grafana's cookie as wiki's", wiki.host, renamed(grafanaCookies, grafana.cookie, wiki.cookie)},
		{"grafana's cookie at wiki", wiki.host, grafanaCookies},
		{"grafana's cookie as the top level's", "127.0.0.1", renamed(grafanaCookies, grafana.cookie, s.Config.Session.CookieName)},
		{"wiki's cookie as grafana's", grafana.host, renamed(wikiCookies, wiki.cookie, grafana.cookie)},
	}
	for _, rp := range replays {
		if r := viaNginx(t, nginx, http.MethodGet, rp.host, "/api/headers", rp.cookies); !toSignIn(r) {
			t.Errorf("%s: %d %q %s, want 302 to sign in", rp.what, r.status, r.location, r.body)
		}
	}
	// Those differ in the cookie's name too, which the seal binds. The app
	// is bound as well: grafana's session sealed for grafana under wiki's
	// cookie name (two apps sharing a name) is refused at wiki, while the
	// same session sealed for wiki passes there.
	grafanaSession := renamed(grafanaCookies, grafana.cookie, grafana.cookie) // its session's cookies only
	if len(grafanaSession) != 1 {
		t.Fatalf("grafana's session is in %d cookies (%v), want one", len(grafanaSession), keys(grafanaSession))
	}
	forGrafana, forWiki := reseal(t, s, grafanaCookies[grafana.cookie], grafana.name, grafana.cookie, wiki.cookie, wiki.name)
	if r := viaNginx(t, nginx, http.MethodGet, wiki.host, "/api/headers", map[string]string{wiki.cookie: forGrafana}); !toSignIn(r) {
		t.Errorf("grafana's session sealed for grafana under wiki's cookie name, at wiki: %d, want 302 to sign in", r.status)
	}
	if r := viaNginx(t, nginx, http.MethodGet, wiki.host, "/api/headers", map[string]string{wiki.cookie: forWiki}); r.status != http.StatusOK {
		t.Errorf("grafana's session sealed for wiki, at wiki: %d, want 200 (the binding is all that refused it)", r.status)
	}
	d = checks(t, metricsAddr).minus(before)
	wantChecks := map[key]float64{
		{"grafana", "authenticated"}: 1, {"grafana", "unauthenticated"}: 1,
		{"wiki", "authenticated"}: 1, {"wiki", "unauthenticated"}: 3,
		{"", "authenticated"}: 0, {"", "unauthenticated"}: 1,
	}
	for k, want := range wantChecks {
		if d[k] != want {
			t.Errorf("replays: extauth_auth_requests_total{app=%q,result=%q} rose by %v, want %v", k.app, k.result, d[k], want)
		}
	}
	signedInAt(t, grafana, 1)
	signedInAt(t, wiki, 1)

	// 6. Signing out of grafana revokes its tokens at grafana's provider
	// and ends the session there, lands on grafana's signed-out page (a
	// skip rule), and leaves wiki signed in.
	run(t, ctx, "sign out of grafana", chromedp.Navigate(grafana.url+"/oauth2/sign_out"),
		chromedp.WaitVisible(chromedp.CSS("#path")))
	if loc := get(t, ctx, "location", chromedp.Location()); loc != grafana.url+"/signed-out" {
		t.Errorf("signed out of grafana onto %s, want %s", loc, grafana.url+"/signed-out")
	}
	revs := grafana.idp.Revocations()
	var revoked []string
	for _, r := range revs {
		revoked = append(revoked, r.Kind)
		if r.ClientID != grafana.idp.ClientID {
			t.Errorf("a revocation at grafana's provider by client %q", r.ClientID)
		}
	}
	if !slices.Equal(revoked, []string{"refresh_token", "access_token"}) {
		t.Errorf("revocations at grafana's provider: %v, want [refresh_token access_token]", revoked)
	}
	ends := grafana.idp.EndSessions()
	if len(ends) != 1 || ends[0].Get("id_token_hint") == "" || ends[0].Get("client_id") != grafana.idp.ClientID ||
		ends[0].Get("post_logout_redirect_uri") != grafana.url+"/signed-out" {
		t.Errorf("end-session at grafana's provider: %v, want one with grafana's id_token_hint, client and page", ends)
	}
	if n, m := len(wiki.idp.Revocations()), len(wiki.idp.EndSessions()); n != 0 || m != 0 {
		t.Errorf("signing out of grafana reached wiki's provider: %d revocations, %d end-sessions", n, m)
	}
	if c := cookiesFor(t, ctx, grafana.url); c[grafana.cookie] != "" {
		t.Errorf("grafana's session cookie is still in the browser after sign-out")
	}
	// The kept copy of grafana's cookie stops passing; wiki's still does.
	if r := viaNginx(t, nginx, http.MethodGet, grafana.host, "/api/headers", grafanaCookies); !toSignIn(r) {
		t.Errorf("grafana's kept cookie after sign-out: %d, want 302 to sign in", r.status)
	}
	if r := viaNginx(t, nginx, http.MethodGet, wiki.host, "/api/headers", wikiCookies); r.status != http.StatusOK ||
		!strings.Contains(r.body, wiki.user.Email) {
		t.Errorf("wiki's cookie after signing out of grafana: %d %s", r.status, r.body)
	}
	run(t, ctx, "wiki after grafana's sign-out", chromedp.Navigate(wiki.url+"/still"),
		chromedp.WaitVisible(chromedp.CSS("#greeting")))
	seesUser(t, ctx, wiki, wiki.url+"/still")
	signedInAt(t, wiki, 1)

	// 7. grafana again takes a new sign-in at grafana's provider.
	run(t, ctx, "grafana after its sign-out", chromedp.Navigate(grafana.url+"/back"),
		chromedp.WaitVisible(chromedp.CSS("#greeting")))
	seesUser(t, ctx, grafana, grafana.url+"/back")
	signedInAt(t, grafana, 2)
	signedInAt(t, wiki, 1)

	// 8. Each app used its own provider only; the top-level client's
	// provider saw nothing; no refresh happened (hour-long tokens).
	for _, a := range []*twoApp{grafana, wiki} {
		if n := a.idp.TokenRequests(providertest.GrantRefreshToken); n != 0 {
			t.Errorf("%s: %d refresh grants", a.name, n)
		}
		t.Logf("provider of %s (%s): sign-ins %d, code redemptions %d, refresh grants %d, revocations %d, end-sessions %d, discovery %d, keys %d, userinfo %d",
			a.name, a.idp.Issuer, len(a.idp.Authorizations()), a.idp.TokenRequests(providertest.GrantAuthorizationCode),
			a.idp.TokenRequests(providertest.GrantRefreshToken), len(a.idp.Revocations()), len(a.idp.EndSessions()),
			a.idp.Calls(providertest.EndpointDiscovery), a.idp.Calls(providertest.EndpointKeys), a.idp.Calls(providertest.EndpointUserinfo))
	}
	if n, m := s.OP.TokenRequests("authorization_code"), s.OP.EndSessions(); n != 0 || m != 0 {
		t.Errorf("the top-level client's provider saw %d code redemptions, %d end-sessions", n, m)
	}

	// 9. extauth's metrics: the checks of each app under its label (its
	// three signed-in pages at least, and the skipped /favicon.ico of step
	// 1; chromium's own favicon requests come when they come).
	all := checks(t, metricsAddr)
	for _, a := range []*twoApp{grafana, wiki} {
		if all[key{a.name, "authenticated"}] < 3 || all[key{a.name, "skipped"}] < 1 {
			t.Errorf("extauth_auth_requests_total for app=%q: %v, want authenticated ≥ 3 and skipped ≥ 1", a.name, all)
		}
	}
	t.Logf("extauth_auth_requests_total{endpoint=\"auth\"}: %s", all)
	t.Logf("wall time %v", time.Since(start).Round(time.Millisecond))
}

// seesUser checks that the browser is on want and the app saw a's user.
func seesUser(t *testing.T, ctx context.Context, a *twoApp, want string) {
	t.Helper()
	if loc := get(t, ctx, "location", chromedp.Location()); loc != want {
		t.Errorf("%s: landed on %s, want %s", a.name, loc, want)
	}
	user := text(t, ctx, `td[data-header="X-Auth-Request-User"]`)
	email := text(t, ctx, `td[data-header="X-Auth-Request-Email"]`)
	if user != a.user.Subject || email != a.user.Email {
		t.Errorf("%s: the app saw user %q, email %q; want %q, %q", a.name, user, email, a.user.Subject, a.user.Email)
	}
}

// signedInAt checks that a's provider saw n sign-ins, each by a's client
// with a's callback, and redeemed n codes.
func signedInAt(t *testing.T, a *twoApp, n int) {
	t.Helper()
	auths := a.idp.Authorizations()
	for _, q := range auths {
		if q.Get("client_id") != a.idp.ClientID || q.Get("redirect_uri") != a.url+"/oauth2/callback" {
			t.Errorf("%s's provider: a sign-in by client %q to %q", a.name, q.Get("client_id"), q.Get("redirect_uri"))
		}
	}
	if len(auths) != n {
		t.Errorf("%s's provider saw %d sign-ins, want %d", a.name, len(auths), n)
	}
	if got := a.idp.TokenRequests(providertest.GrantAuthorizationCode); got != n {
		t.Errorf("%s's provider redeemed %d codes, want %d", a.name, got, n)
	}
}

func noSignInAt(t *testing.T, a *twoApp) {
	t.Helper()
	if n, m := len(a.idp.Authorizations()), a.idp.TokenRequests(providertest.GrantAuthorizationCode); n != 0 || m != 0 {
		t.Errorf("%s's provider saw %d sign-ins and %d code redemptions, want none", a.name, n, m)
	}
}

// cookiesFor returns the browser's cookies for a URL.
func cookiesFor(t *testing.T, ctx context.Context, u string) map[string]string {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	out := map[string]string{}
	for _, c := range res.Cookies {
		out[c.Name] = c.Value
	}
	return out
}

// renamed is the session's cookies (from, from_id, from_0…) under another
// cookie name, values unchanged.
func renamed(cookies map[string]string, from, to string) map[string]string {
	out := map[string]string{}
	for name, v := range cookies {
		if rest, ok := strings.CutPrefix(name, from); ok {
			out[to+rest] = v
		}
	}
	return out
}

// reseal opens a session cookie of app from with extauth's secret and
// seals its content again under cookie name, once for app from and once
// for app to.
func reseal(t *testing.T, s *stack.Stack, value, from, fromCookie, name, to string) (forFrom, forTo string) {
	t.Helper()
	codec, err := session.NewCodec(s.Config.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := codec.For(from).Open(fromCookie, value)
	if err != nil {
		t.Fatalf("open %s's cookie: %v", from, err)
	}
	if forFrom, err = codec.For(from).Seal(name, plain); err != nil {
		t.Fatal(err)
	}
	if forTo, err = codec.For(to).Seal(name, plain); err != nil {
		t.Fatal(err)
	}
	return forFrom, forTo
}

// answer is what nginx answered a request sent without a browser.
type answer struct {
	status         int
	location, body string
}

// viaNginx sends a request to nginx for host (the Host header, as a
// browser would for http://host:port), with cookies, following no redirect.
func viaNginx(t *testing.T, nginx, method, host, path string, cookies map[string]string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, nginx+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(nginx)
	req.Host = host + ":" + u.Port()
	for name, v := range cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return answer{status: resp.StatusCode, location: resp.Header.Get("Location"), body: string(b)}
}

// toSignIn: nginx answered a check's 401 with its sign-in redirect
// (absolute, on the request's host: nginx's absolute_redirect).
func toSignIn(a answer) bool {
	u, err := url.Parse(a.location)
	return a.status == http.StatusFound && err == nil && u.Path == "/oauth2/start" && u.Query().Has("rd")
}

// key is one series of extauth_auth_requests_total{endpoint="auth"}.
type key struct{ app, result string }

type checkCounts map[key]float64

func (c checkCounts) minus(before checkCounts) checkCounts {
	out := checkCounts{}
	for k, v := range c {
		out[k] = v - before[k]
	}
	return out
}

func (c checkCounts) String() string {
	var parts []string
	for k, v := range c {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s/%s=%v", cmp.Or(k.app, `""`), k.result, v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// checks scrapes extauth_auth_requests_total{endpoint="auth"} by app
// (empty: the top-level client) and result.
func checks(t *testing.T, metricsAddr string) checkCounts {
	t.Helper()
	f := scrape(t, metricsAddr)["extauth_auth_requests_total"]
	if f == nil {
		t.Fatal("no extauth_auth_requests_total in /metrics")
	}
	out := checkCounts{}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["endpoint"] == "auth" {
			out[key{labels["app"], labels["result"]}] += m.GetCounter().GetValue()
		}
	}
	return out
}
