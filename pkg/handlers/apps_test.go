package handlers

import (
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// appsEnv is a deployment with three apps at two providers: grafana (an
// exact host and a wildcard) and wiki at provider A with their own
// clients, docs at provider B; no top-level client.
type appsEnv struct {
	t       *testing.T
	cfg     *config.Config
	a, b    *providertest.Provider
	router  http.Handler
	clock   *clock
	logs    *syncBuffer
	metrics *metrics.Metrics
}

func newAppsEnv(t *testing.T) *appsEnv { return newAppsEnvWith(t, nil) }

// newAppsEnvWith edits the YAML before it is parsed.
func newAppsEnvWith(t *testing.T, edit func(yaml string) string) *appsEnv {
	t.Helper()
	clk := testenv.NewClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	user := providertest.DefaultUser()
	user.Extra = map[string]any{"department": []any{"finance", "platform"}, "level": 3}
	a := providertest.New(t, providertest.WithClock(clk.Now), providertest.WithClient("grafana", "grafana-secret"), providertest.WithUser(user))
	b := providertest.New(t, providertest.WithClock(clk.Now), providertest.WithClient("docs", "docs-secret"))
	yaml := `
oidc: {issuerURL: ` + a.Issuer + `}
session: {secrets: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="], cookieDomain: .example.com}
authorization: {redirectDomains: [.example.com]}
apps:
  - name: grafana
    hosts: [grafana.example.com, "*.grafana.example.com"]
    oidc: {clientID: grafana, clientSecret: grafana-secret, claims: {keep: [acr]}}
    session: {cookieName: _extauth_grafana}
    authorization:
      claims: [{claim: department, values: [platform, security]}, {claim: level, values: ["3", "4"]}]
      preflight: allow
      skip: [{methods: [GET], path: /api/health}, {methods: [GET, HEAD], pathPrefix: /public/}]
  - {name: wiki, hosts: [wiki.example.com], oidc: {clientID: grafana, clientSecret: grafana-secret}, session: {cookieName: _extauth_wiki}, authorization: {groups: [no-such-group]}}
  - {name: docs, hosts: [docs.example.com], oidc: {issuerURL: ` + b.Issuer + `, clientID: docs, clientSecret: docs-secret}, session: {cookieName: _extauth_docs}}
`
	if edit != nil {
		// Edits name the providers' issuers ISSUER_A and ISSUER_B.
		yaml = strings.NewReplacer("ISSUER_A", a.Issuer, "ISSUER_B", b.Issuer).Replace(edit(yaml))
	}
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New(prometheus.NewRegistry(), "test", "grafana", "wiki", "docs")
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := Deps{Config: cfg, Logouts: logout.NewMemory(clk.Now), Metrics: m, Log: log, Now: clk.Now, Rand: rand.Reader,
		Assertions: testAssertions(t, cfg, clk.Now)}
	for _, ac := range cfg.Apps {
		p, err := provider.New(provider.Config{IssuerURL: ac.OIDC.IssuerURL, ClientID: ac.OIDC.ClientID,
			ClientSecret: ac.OIDC.ClientSecret, Scopes: ac.OIDC.Scopes, PKCE: ac.OIDC.PKCE}, clk.Now, log, m)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Discover(t.Context()); err != nil {
			t.Fatal(err)
		}
		opts := session.Options{Name: ac.Session.CookieName, Domain: ac.Session.CookieDomain, Path: "/", Secure: true, SameSite: http.SameSiteLaxMode}
		bound := codec.For(ac.Name)
		ad := AppDeps{Name: ac.Name, Provider: p,
			Sessions: session.NewStore(bound, opts, clk.Now), Flows: session.NewFlowStore(bound, opts, clk.Now)}
		if len(ac.Authorization.Bearer) > 0 {
			var issuers []provider.BearerIssuer
			for _, b := range ac.Authorization.Bearer {
				issuers = append(issuers, provider.BearerIssuer{IssuerURL: b.IssuerURL, Audiences: b.Audiences, JWKSURL: b.JWKSURL})
			}
			if ad.Bearers, err = provider.NewBearers(issuers, provider.BearerOptions{Now: clk.Now, Log: log, Metrics: m}); err != nil {
				t.Fatal(err)
			}
		}
		d.Apps = append(d.Apps, ad)
	}
	router, err := NewRouter(d)
	if err != nil {
		t.Fatal(err)
	}
	return &appsEnv{t: t, cfg: cfg, a: a, b: b, router: router, clock: clk, logs: logs, metrics: m}
}

// do serves a request for host (the Host header extauth sees).
func (e *appsEnv) do(method, host, target string, cookies []*http.Cookie, header http.Header) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	e.router.ServeHTTP(rec, req)
	return rec
}

// check asks /oauth2/auth as nginx does for a page of host.
func (e *appsEnv) check(host, query string, cookies []*http.Cookie) *httptest.ResponseRecorder {
	e.t.Helper()
	target := "/oauth2/auth"
	if query != "" {
		target += "?" + query
	}
	return e.do(http.MethodGet, host, target, cookies, http.Header{
		"X-Original-Url": {"https://" + host + "/page"}, "X-Original-Method": {"GET"}})
}

// signIn signs in to the app of host at idp and returns the cookies.
func (e *appsEnv) signIn(host string, idp *providertest.Provider) jar {
	e.t.Helper()
	j := jar{}
	rec := e.do(http.MethodGet, host, "/oauth2/start?rd="+url.QueryEscape("https://"+host+"/"), nil, nil)
	if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), idp.Issuer) {
		e.t.Fatalf("start on %s: %d to %q, want %s", host, rec.Code, rec.Header().Get("Location"), idp.Issuer)
	}
	j.update(rec)
	cb := idp.Login(e.t, e.t.Context(), rec.Header().Get("Location"))
	rec = e.do(http.MethodGet, host, cb.RequestURI(), j.list(), nil)
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://"+host+"/" {
		e.t.Fatalf("callback on %s: %d to %q: %s", host, rec.Code, rec.Header().Get("Location"), rec.Body.String())
	}
	j.update(rec)
	return j
}

// TestAppsChosenByHost: each app signs in at its own provider with its own
// client and cookie; its session passes its own hosts (exact and one
// wildcard label) and no other app's; ?app= wins over the host; a host no
// app has, without a top-level client, is refused.
func TestAppsChosenByHost(t *testing.T) {
	e := newAppsEnv(t)
	grafana := e.signIn("grafana.example.com", e.a)
	if _, ok := grafana["_extauth_grafana"]; !ok || len(e.a.Authorizations()) != 1 || e.a.Authorizations()[0].Get("client_id") != "grafana" {
		t.Fatalf("grafana's sign-in: cookies %v, authorizations %v", grafana, e.a.Authorizations())
	}
	for _, host := range []string{"grafana.example.com", "eu.grafana.example.com", "GRAFANA.example.com:443"} {
		if rec := e.check(host, "", grafana.list()); rec.Code != http.StatusOK {
			t.Errorf("grafana's session on %s: %d", host, rec.Code)
		}
	}
	for _, host := range []string{"wiki.example.com", "docs.example.com"} {
		if rec := e.check(host, "", grafana.list()); rec.Code != http.StatusUnauthorized {
			t.Errorf("grafana's session on %s: %d, want 401", host, rec.Code)
		}
	}
	// ?app= in the auth URL wins over the host.
	if rec := e.check("wiki.example.com", "app=grafana", grafana.list()); rec.Code != http.StatusOK {
		t.Errorf("?app=grafana on wiki's host: %d", rec.Code)
	}
	if rec := e.check("grafana.example.com", "app=nope", grafana.list()); rec.Code != http.StatusForbidden {
		t.Errorf("?app= naming no app: %d, want 403", rec.Code)
	}
	for _, host := range []string{"other.example.com", "a.b.grafana.example.com"} {
		if rec := e.check(host, "", grafana.list()); rec.Code != http.StatusForbidden {
			t.Errorf("%s, a host of no app: %d, want 403", host, rec.Code)
		}
	}

	// docs signs in at provider B with its own client.
	docs := e.signIn("docs.example.com", e.b)
	if rec := e.check("docs.example.com", "", docs.list()); rec.Code != http.StatusOK || e.b.Authorizations()[0].Get("client_id") != "docs" {
		t.Errorf("docs: %d, client %q", rec.Code, e.b.Authorizations()[0].Get("client_id"))
	}
	// wiki's own rules: the same user at the same provider and client is
	// not in wiki's group, so its sign-in is refused.
	j := jar{}
	rec := e.do(http.MethodGet, "wiki.example.com", "/oauth2/start", nil, nil)
	j.update(rec)
	cb := e.a.Login(t, t.Context(), rec.Header().Get("Location"))
	if rec := e.do(http.MethodGet, "wiki.example.com", cb.RequestURI(), j.list(), nil); rec.Code != http.StatusForbidden {
		t.Errorf("wiki's callback without its group: %d, want 403", rec.Code)
	}
	if !strings.Contains(e.logs.String(), `"app":"docs"`) {
		t.Error("the log lines do not name the app")
	}
	// The metrics count per app: grafana's four 200s above, docs' one.
	for app, want := range map[string]float64{"grafana": 4, "docs": 1, "wiki": 0} {
		if got := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues(app, metrics.CheckNginx, metrics.AuthAuthenticated)); got != want {
			t.Errorf("authenticated checks of %s = %v, want %v", app, got, want)
		}
	}
	if got := testutil.ToFloat64(e.metrics.Callbacks.WithLabelValues("wiki", metrics.CallbackForbidden)); got != 1 {
		t.Errorf("wiki's forbidden callbacks = %v, want 1", got)
	}
}

// TestAppsCookieReplayRefused: a cookie sealed for one app is refused by
// another even under the same cookie name: here every app's cookie is
// _extauth (host-only), and grafana's, sent to docs' host, would open as
// docs' but for the app's name bound into it.
func TestAppsCookieReplayRefused(t *testing.T) {
	e := newAppsEnvWith(t, func(y string) string {
		y = strings.ReplaceAll(y, ", cookieDomain: .example.com", "")
		for _, app := range []string{"grafana", "wiki", "docs"} {
			y = strings.ReplaceAll(y, "cookieName: _extauth_"+app, "cookieName: _extauth")
		}
		return y
	})
	grafana := e.signIn("grafana.example.com", e.a)
	if rec := e.check("grafana.example.com", "", grafana.list()); rec.Code != http.StatusOK {
		t.Fatalf("grafana's own check: %d", rec.Code)
	}
	rec := e.check("docs.example.com", "", grafana.list())
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("grafana's cookie replayed to docs: %d, want 401", rec.Code)
	}
	if !strings.Contains(e.logs.String(), "invalid session cookie") {
		t.Errorf("the replay is not logged as an invalid cookie:\n%s", e.logs.String())
	}
}

// TestAppsSignOutAndLogout: sign-out revokes at the app's own provider;
// a back-channel logout from provider B ends docs' session only, though
// the user has the same sub at provider A.
func TestAppsSignOutAndLogout(t *testing.T) {
	e := newAppsEnv(t)
	grafana := e.signIn("grafana.example.com", e.a)
	docs := e.signIn("docs.example.com", e.b)
	e.clock.Advance(time.Second)

	st := e.loadState("docs", docs)
	form := url.Values{"logout_token": {e.b.LogoutToken(st.Subject, "")}}
	req := httptest.NewRequest(http.MethodPost, "/oauth2/backchannel_logout", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	e.router.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("back-channel logout from provider B: %d %s", rec.Code, rec.Body.String())
	}
	if rec := e.check("docs.example.com", "", docs.list()); rec.Code != http.StatusUnauthorized {
		t.Errorf("docs after B's logout: %d, want 401", rec.Code)
	}
	if rec := e.check("grafana.example.com", "", grafana.list()); rec.Code != http.StatusOK {
		t.Errorf("grafana after B's logout of the same sub: %d, want 200", rec.Code)
	}

	rec = e.do(http.MethodGet, "grafana.example.com", "/oauth2/sign_out", grafana.list(), nil)
	if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), e.a.Issuer) {
		t.Errorf("sign-out: %d to %q, want provider A's end_session", rec.Code, rec.Header().Get("Location"))
	}
	if len(e.a.Revocations()) != 2 || len(e.b.Revocations()) != 0 {
		t.Errorf("revocations at A %d, at B %d; want 2 and 0", len(e.a.Revocations()), len(e.b.Revocations()))
	}
}

// loadState opens an app's session cookie.
func (e *appsEnv) loadState(app string, j jar) *session.State {
	e.t.Helper()
	codec, err := session.NewCodec(e.cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	var st session.State
	name := "_extauth_" + app
	if _, ok := j[name]; !ok {
		name = "_extauth"
	}
	if err := codec.For(app).Decode(name, j[name].Value, &st); err != nil {
		e.t.Fatalf("open %s: %v", name, err)
	}
	return &st
}

// checkPath asks about a request for method and uri (path and query as
// the client sent them) on host.
func (e *appsEnv) checkPath(host, method, uri, query string, cookies []*http.Cookie, extra http.Header) *httptest.ResponseRecorder {
	e.t.Helper()
	h := http.Header{"X-Original-Url": {"https://" + host + uri}, "X-Original-Method": {method}}
	for k, v := range extra {
		h[k] = v
	}
	target := "/oauth2/auth"
	if query != "" {
		target += "?" + query
	}
	return e.do(http.MethodGet, host, target, cookies, h)
}

// TestAppsSkipAndPreflight: an app's skip rules and allowed preflights
// pass without a session and without identity headers; tricks that would
// turn a protected path into a skipped one do not; another app's rules
// are not this one's.
func TestAppsSkipAndPreflight(t *testing.T) {
	e := newAppsEnv(t)
	preflight := http.Header{"Origin": {"https://other.example.com"}, "Access-Control-Request-Method": {"PUT"}}
	for _, tc := range []struct {
		host, method, uri string
		header            http.Header
		want              int
	}{
		{"grafana.example.com", "GET", "/api/health", nil, http.StatusOK},
		{"grafana.example.com", "GET", "/api/health?verbose=1", nil, http.StatusOK},
		{"grafana.example.com", "HEAD", "/public/logo.png", nil, http.StatusOK},
		{"grafana.example.com", "GET", "/public/My%20File.pdf", nil, http.StatusOK},
		{"grafana.example.com", "OPTIONS", "/api/dashboards", preflight, http.StatusOK},
		{"grafana.example.com", "POST", "/api/health", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "/public/../admin", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "/public/%2e%2e/admin", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "/public/..%2fadmin", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "/public;/../admin", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "//public/../admin", nil, http.StatusUnauthorized},
		{"grafana.example.com", "GET", "/API/health", nil, http.StatusUnauthorized},
		{"grafana.example.com", "OPTIONS", "/api/dashboards", http.Header{"Origin": {"https://x.example.com"}}, http.StatusUnauthorized},
		{"docs.example.com", "GET", "/api/health", nil, http.StatusUnauthorized},
		{"docs.example.com", "OPTIONS", "/api/dashboards", preflight, http.StatusUnauthorized},
	} {
		rec := e.checkPath(tc.host, tc.method, tc.uri, "", nil, tc.header)
		if rec.Code != tc.want {
			t.Errorf("%s %s on %s: %d, want %d", tc.method, tc.uri, tc.host, rec.Code, tc.want)
		}
		if rec.Code == http.StatusOK && rec.Header().Get("X-Auth-Request-User") != "" {
			t.Errorf("%s %s: a skipped request carries identity headers", tc.method, tc.uri)
		}
	}
	if got := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("grafana", metrics.CheckNginx, metrics.AuthSkipped)); got != 5 {
		t.Errorf("skipped checks of grafana = %v, want 5", got)
	}
}

// TestAppsClaimRules: every claim rule must hold, a rule holds with any of
// its values, against string, array and number claims; allowed_claims in
// the auth URL narrows them; a user outside the rules cannot sign in.
func TestAppsClaimRules(t *testing.T) {
	e := newAppsEnv(t)
	j := e.signIn("grafana.example.com", e.a)
	st := e.loadState("grafana", j)
	if got := st.Claims["department"]; len(got) != 2 || got[1] != "platform" || st.Claims["level"][0] != "3" {
		t.Fatalf("kept claims = %v", st.Claims)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", http.StatusOK},
		{"allowed_claims=department:platform|security", http.StatusOK},
		{"allowed_claims=department:finance;level:3", http.StatusOK},
		{"allowed_claims=department:security", http.StatusForbidden},
		{"allowed_claims=department:platform;level:4", http.StatusForbidden},
		{"allowed_claims=acr:silver", http.StatusForbidden}, // kept, but the user has none
		{"allowed_claims=department", http.StatusForbidden}, // malformed: closed
	} {
		if rec := e.checkPath("grafana.example.com", "GET", "/", tc.query, j.list(), nil); rec.Code != tc.want {
			t.Errorf("?%s: %d, want %d", tc.query, rec.Code, tc.want)
		}
	}
	// A user in another department is refused at sign-in.
	u := providertest.DefaultUser()
	u.Extra = map[string]any{"department": "sales", "level": 3}
	e.a.SetUser(u)
	k := jar{}
	rec := e.do(http.MethodGet, "grafana.example.com", "/oauth2/start", nil, nil)
	k.update(rec)
	cb := e.a.Login(t, t.Context(), rec.Header().Get("Location"))
	if rec := e.do(http.MethodGet, "grafana.example.com", cb.RequestURI(), k.list(), nil); rec.Code != http.StatusForbidden {
		t.Errorf("sign-in of a user in sales: %d, want 403", rec.Code)
	}
	if !strings.Contains(e.logs.String(), "claim not allowed") {
		t.Error("the refusal's reason is not logged")
	}
}

// TestAppsBearerIssuers: each app accepts the bearer tokens of its own
// issuers for its own audiences: grafana takes provider A's tokens for
// grafana-ci, docs provider B's for docs-ci (its keys at a JWKS URL), wiki
// none. A token of issuer A is refused by docs, whatever its audience, and
// an accepted token still meets the app's rules (grafana's claim rules).
func TestAppsBearerIssuers(t *testing.T) {
	e := newAppsEnvWith(t, func(y string) string {
		y = strings.Replace(y, "      preflight: allow\n", "      preflight: allow\n      bearer: [{issuerURL: ISSUER_A, audiences: [grafana-ci]}]\n", 1)
		y = strings.Replace(y, "session: {cookieName: _extauth_docs}}",
			"session: {cookieName: _extauth_docs}, authorization: {bearer: [{issuerURL: ISSUER_B, audiences: [docs-ci], jwksURL: ISSUER_B/keys}, {issuerURL: https://ci.example.com, audiences: [grafana-ci]}]}}", 1)
		return y
	})
	token := func(idp *providertest.Provider, aud string, extra map[string]any) string {
		now := e.clock.Now()
		c := map[string]any{"iss": idp.Issuer, "sub": "ci-job-" + aud, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"department": "platform", "level": 3}
		for k, v := range extra {
			c[k] = v
		}
		return idp.SignJWT(c)
	}
	bearer := func(host, tok string) *httptest.ResponseRecorder {
		return e.do(http.MethodGet, host, "/oauth2/auth", nil, http.Header{
			"X-Original-Url": {"https://" + host + "/api/dashboards"}, "X-Original-Method": {"GET"},
			"Authorization": {"Bearer " + tok}})
	}
	for _, tc := range []struct {
		name, host, token string
		want              int
		user              string
	}{
		{"A's token at grafana", "grafana.example.com", token(e.a, "grafana-ci", nil), http.StatusOK, "ci-job-grafana-ci"},
		{"B's token at docs", "docs.example.com", token(e.b, "docs-ci", nil), http.StatusOK, "ci-job-docs-ci"},
		{"A's token at docs", "docs.example.com", token(e.a, "docs-ci", nil), http.StatusUnauthorized, ""},
		{"A's token for grafana at docs", "docs.example.com", token(e.a, "grafana-ci", nil), http.StatusUnauthorized, ""},
		{"B's token at grafana", "grafana.example.com", token(e.b, "grafana-ci", nil), http.StatusUnauthorized, ""},
		{"A's token for docs' audience at grafana", "grafana.example.com", token(e.a, "docs-ci", nil), http.StatusUnauthorized, ""},
		{"A's token at wiki (no bearer issuers)", "wiki.example.com", token(e.a, "grafana-ci", nil), http.StatusUnauthorized, ""},
		{"A's expired token at grafana", "grafana.example.com", token(e.a, "grafana-ci", map[string]any{"exp": e.clock.Now().Add(-time.Minute).Unix()}), http.StatusUnauthorized, ""},
		{"A's token outside grafana's claim rules", "grafana.example.com", token(e.a, "grafana-ci", map[string]any{"department": "sales"}), http.StatusForbidden, ""},
	} {
		rec := bearer(tc.host, tc.token)
		if rec.Code != tc.want || rec.Header().Get("X-Auth-Request-User") != tc.user {
			t.Errorf("%s: %d user %q, want %d user %q", tc.name, rec.Code, rec.Header().Get("X-Auth-Request-User"), tc.want, tc.user)
		}
	}
	for _, reason := range []string{"bearer token's issuer is not accepted", "bearer token's audience is not accepted", "bearer token expired"} {
		if !strings.Contains(e.logs.String(), reason) {
			t.Errorf("no log line says %q", reason)
		}
	}
	if strings.Contains(e.logs.String(), token(e.a, "grafana-ci", nil)[:40]) {
		t.Error("a bearer token is in the log")
	}
	if n := e.b.Calls(providertest.EndpointDiscovery); n != 1 {
		// docs' own client discovers B once; its bearer issuer B uses the JWKS URL.
		t.Errorf("provider B discovery calls = %d, want 1", n)
	}
}
