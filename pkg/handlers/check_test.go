package handlers

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

func TestCheckWithoutSession(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec := e.do(method, "/oauth2/auth", nil, nil)
		if rec.Code != http.StatusUnauthorized || rec.Header().Get("Location") != "" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: status %d, headers %v", method, rec.Code, rec.Header())
		}
	}
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthUnauthenticated)); v != 2 {
		t.Errorf("unauthenticated = %v, want 2", v)
	}
}

func TestCheckHead(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	rec := e.do(http.MethodHead, "/oauth2/auth", j.list(), nil)
	if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-User") == "" {
		t.Errorf("HEAD: %d %v", rec.Code, rec.Header())
	}
}

// TestCheckHostileCookies: whatever the cookie, the answer is 401, never a
// 5xx or a panic.
func TestCheckHostileCookies(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	good := j["_extauth"].Value
	flipped := []byte(good)
	flipped[100] = map[bool]byte{true: 'B', false: 'A'}[flipped[100] == 'A']
	garbage := strings.Repeat("Zm9v", 2560) // 10 KB of valid base64
	otherEnv := newTestEnv(t, func(c *config.Config) {
		c.Session.Secrets = []string{base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}
	}).discover()
	other := otherEnv.signIn("/")["_extauth"].Value

	cases := map[string]string{
		"tampered":           "_extauth=" + string(flipped),
		"truncated":          "_extauth=" + good[:len(good)/2],
		"extended":           "_extauth=" + good + "AAAA",
		"empty":              "_extauth=",
		"10KB garbage":       "_extauth=" + garbage,
		"binary garbage":     "_extauth=\x00\x01\xff",
		"other secret":       "_extauth=" + other,
		"split with a gap":   "_extauth_0=" + good[:100] + "; _extauth_2=" + good[100:],
		"split parts only 9": "_extauth_0=a; _extauth_1=b; _extauth_2=c; _extauth_3=d; _extauth_4=e; _extauth_5=f; _extauth_6=g; _extauth_7=h; _extauth_8=i",
		"flow cookie as session": "_extauth=" + func() string {
			jj := jar{}
			e.startSignIn(jj, "/")
			return jj["_extauth_csrf"].Value
		}(),
		"quoted":      `_extauth="` + good + `"x`,
		"many values": strings.Repeat("_extauth=x; ", 500),
	}
	for name, cookie := range cases {
		t.Run(name, func(t *testing.T) {
			rec := e.check(nil, "", http.Header{"Cookie": {cookie}})
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", rec.Code)
			}
		})
	}
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthError)); v != 0 {
		t.Errorf("hostile cookies counted as errors: %v", v)
	}
}

func TestCheckExpiredSession(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) { c.Session.MaxAge = config.Duration{Duration: 2 * time.Hour} }).discover()
	j := e.signIn("/")
	e.clock.Advance(2*time.Hour - time.Second)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK {
		t.Fatalf("before maxAge: %d", rec.Code)
	}
	e.clock.Advance(time.Second)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("at maxAge: %d, want 401", rec.Code)
	}
}

func TestCheckOriginalRequestHeaders(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	tests := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"nginx headers", nil, http.StatusOK},
		{"no X-Original-URL", http.Header{"X-Original-Url": nil}, http.StatusOK},
		{"path only", http.Header{"X-Original-Url": {"/app?x=1"}}, http.StatusOK},
		{"client X-Forwarded-Uri changes nothing", http.Header{"X-Forwarded-Uri": {"/oauth2/callback"}, "X-Forwarded-Host": {"evil.com"}}, http.StatusOK},
		{"unparsable X-Original-URL", http.Header{"X-Original-Url": {"http://[::1"}}, http.StatusUnauthorized},
		{"X-Original-URL with spaces", http.Header{"X-Original-Url": {"https://app.example.com/a b"}}, http.StatusUnauthorized},
		{"X-Original-URL with CRLF", http.Header{"X-Original-Url": {"https://app.example.com/\r\nX: y"}}, http.StatusUnauthorized},
		{"X-Original-URL javascript", http.Header{"X-Original-Url": {"javascript:alert(1)"}}, http.StatusUnauthorized},
		{"X-Original-URL bad escape", http.Header{"X-Original-Url": {"https://app.example.com/%zz"}}, http.StatusUnauthorized},
		{"X-Original-Method garbage", http.Header{"X-Original-Method": {"GET /x"}}, http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if rec := e.check(j.list(), "", tc.header); rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
		})
	}
	// Without a session, client X-Forwarded-* do not help either.
	rec := e.check(nil, "", http.Header{"X-Forwarded-Uri": {"/healthz"}, "X-Forwarded-Host": {testHost}, "User-Agent": {"kube-probe/1.30"}})
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("forwarded headers skipped the check: %d", rec.Code)
	}
}

func TestCheckPolicy(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) {
		c.Authorization.EmailDomains = []string{"example.com"}
	}).discover()
	j := e.signIn("/") // jane.doe@example.com, groups staff, admins
	tests := []struct {
		query string
		want  int
	}{
		{"", http.StatusOK},
		{"allowed_groups=admins", http.StatusOK},
		{"allowed_groups=payroll,staff", http.StatusOK},
		{"allowed_groups=payroll", http.StatusForbidden},
		{"allowed_emails=jane.doe@example.com", http.StatusOK},
		{"allowed_emails=bob@example.com", http.StatusForbidden},
		{"allowed_email_domains=example.org", http.StatusForbidden},
		{"allowed_email_domains=example.com&allowed_groups=payroll", http.StatusForbidden},
		{"allowed_groups=%zz", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			rec := e.check(j.list(), tc.query, nil)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want == http.StatusForbidden && rec.Header().Get("X-Auth-Request-User") != "" {
				t.Error("a forbidden answer carries identity headers")
			}
		})
	}
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthForbidden)); v != 5 {
		t.Errorf("forbidden = %v, want 5", v)
	}
}

func TestEmailWithSeveralAtSigns(t *testing.T) {
	user := providertest.DefaultUser()
	user.Email = "attacker@evil.com@example.com"
	e := newTestEnv(t, func(c *config.Config) {
		c.Authorization.EmailDomains = []string{"example.com"}
	}, providertest.WithUser(user)).discover()
	j := jar{}
	rec := e.callback(j, e.idp.Login(t, t.Context(), e.startSignIn(j, "/").String()))
	if rec.Code != http.StatusForbidden || j["_extauth"] != nil {
		t.Errorf("an email with several @ passed a domain rule: %d", rec.Code)
	}
}

func TestCheckHeadersConfigurable(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) {
		c.Headers.Groups = false
		c.Headers.AccessToken = true
		c.Headers.Authorization = true
	}).discover()
	j := e.signIn("/")
	rec := e.check(j.list(), "", nil)
	if rec.Header().Get("X-Auth-Request-Groups") != "" {
		t.Error("groups header sent while off")
	}
	at := rec.Header().Get("X-Auth-Request-Access-Token")
	if at == "" || rec.Header().Get("Authorization") != "Bearer "+at {
		t.Errorf("access token headers: %q / %q", at, rec.Header().Get("Authorization"))
	}
	if strings.Contains(e.logs.String(), at) {
		t.Error("the access token reached the log")
	}
}

func TestBearerTokens(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) {
		c.Authorization.BearerTokens = true
		c.Authorization.BearerAudiences = []string{"api://default"}
	}).discover()
	now := e.clock.Now()
	claims := func(aud string, exp time.Time) map[string]any {
		return map[string]any{"iss": e.idp.Issuer, "sub": "svc-1", "aud": aud, "exp": exp.Unix(), "iat": now.Unix(), "email": "svc@example.com", "email_verified": true}
	}
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"valid", e.idp.SignJWT(claims("api://default", now.Add(time.Hour))), http.StatusOK},
		{"wrong audience", e.idp.SignJWT(claims("other", now.Add(time.Hour))), http.StatusUnauthorized},
		{"expired", e.idp.SignJWT(claims("api://default", now.Add(-time.Minute))), http.StatusUnauthorized},
		{"other key", e.idp.SignJWTWithOtherKey(claims("api://default", now.Add(time.Hour))), http.StatusUnauthorized},
		{"not a JWT", "opaque-token", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.check(nil, "", http.Header{"Authorization": {"Bearer " + tc.token}})
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d", rec.Code, tc.want)
			}
			if tc.want == http.StatusOK && rec.Header().Get("X-Auth-Request-User") != "svc-1" {
				t.Errorf("user header %q", rec.Header().Get("X-Auth-Request-User"))
			}
		})
	}
	// Off by default.
	off := newTestEnv(t, nil).discover()
	tok := off.idp.SignJWT(map[string]any{"iss": off.idp.Issuer, "sub": "x", "aud": off.idp.ClientID, "exp": now.Add(time.Hour).Unix()})
	if rec := off.check(nil, "", http.Header{"Authorization": {"Bearer " + tok}}); rec.Code != http.StatusUnauthorized {
		t.Errorf("bearer tokens accepted while off: %d", rec.Code)
	}
}

// TestEntraSizedSession: a token set too large for one cookie keeps its ID
// token apart, so the check's refresh still travels in one Set-Cookie (all
// nginx passes on), and sign-out still finds the ID token for its hint.
func TestEntraSizedSession(t *testing.T) {
	entra := testenv.LoadTokenSet(t, "entra")
	user := providertest.DefaultUser()
	user.Groups = testenv.EntraGroups()
	e := newTestEnv(t, nil, providertest.WithUser(user)).discover()
	e.idp.ServeTokens(entra.AccessToken, entra.RefreshToken)
	j := e.signIn("/")
	idToken := j["_extauth_id"]
	if idToken == nil || j["_extauth"] == nil {
		t.Fatalf("want _extauth and _extauth_id, got %v", j.list())
	}
	for name, c := range j {
		if n := len(c.Name) + 1 + len(c.Value); n > session.DefaultMaxCookieBytes {
			t.Errorf("%s is %d bytes", name, n)
		}
	}
	rec := e.check(j.list(), "", nil)
	if rec.Code != http.StatusOK || len(strings.Split(rec.Header().Get("X-Auth-Request-Groups"), ",")) != 40 {
		t.Fatalf("check: %d, groups %q", rec.Code, rec.Header().Get("X-Auth-Request-Groups"))
	}

	e.clock.Advance(time.Hour)
	rec = e.check(j.list(), "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("refresh check: %d", rec.Code)
	}
	if lines := rec.Header().Values("Set-Cookie"); len(lines) != 1 || !strings.HasPrefix(lines[0], "_extauth=") {
		t.Fatalf("the refresh needs %d Set-Cookie headers; nginx passes only the first", len(lines))
	}
	j.update(rec)
	if j["_extauth_id"] != idToken {
		t.Error("the refresh touched the ID token's cookie")
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK || sessionCookie(rec) != nil {
		t.Errorf("after the refresh: %d", rec.Code)
	}

	out := e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
	loc, _ := url.Parse(out.Header().Get("Location"))
	if hint := loc.Query().Get("id_token_hint"); hint == "" || strings.Count(hint, ".") != 2 {
		t.Errorf("sign-out lost the ID token hint: %q", hint)
	}
	cleared := map[string]bool{}
	for _, c := range out.Result().Cookies() {
		cleared[c.Name] = c.MaxAge < 0
	}
	if !cleared["_extauth"] || !cleared["_extauth_id"] {
		t.Errorf("sign-out cleared %v", cleared)
	}
}

func TestLogsNeverCarrySecrets(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	e.check(j.list(), "", nil)
	e.check(nil, "", http.Header{"Cookie": {"_extauth=garbage"}})
	logs := e.logs.String()
	for _, secret := range []string{j["_extauth"].Value, e.cfg.OIDC.ClientSecret, e.cfg.Session.Secrets[0], "eyJ"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains a secret or token (%.12s…)", secret)
		}
	}
	if !strings.Contains(logs, `"route":"/oauth2/auth"`) || !strings.Contains(logs, `"request_id"`) {
		t.Errorf("request log lines missing: %s", logs)
	}
}

func TestRequestIDFromNginx(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	e.check(nil, "", http.Header{"X-Request-Id": {"abc123def"}})
	e.check(nil, "", http.Header{"X-Request-Id": {"evil\" injected"}})
	logs := e.logs.String()
	if !strings.Contains(logs, `"request_id":"abc123def"`) {
		t.Error("nginx's request ID not logged")
	}
	if strings.Contains(logs, "injected") {
		t.Error("a hostile request ID reached the log")
	}
}

// BenchmarkCheckOkta is the hot path: the whole Gin router answering
// /oauth2/auth from a valid Okta-sized cookie.
func BenchmarkCheckOkta(b *testing.B) { benchmarkCheckOkta(b, nil) }

// BenchmarkCheckOktaAssertion is the hot path with assertion.enabled: the
// session's JWT comes from the signer's cache (one signature per session
// and host every half lifetime).
func BenchmarkCheckOktaAssertion(b *testing.B) { benchmarkCheckOkta(b, withAssertion(b)) }

func benchmarkCheckOkta(b *testing.B, update func(*config.Config)) {
	e := newTestEnv(b, update)
	e.router = mustRouterWithLog(b, e)
	ts := testenv.LoadTokenSet(b, "okta")
	now := e.clock.Now()
	st := &session.State{
		Subject: "00u1a2b3c4d5e6f7g8h9", User: "00u1a2b3c4d5e6f7g8h9", Email: "jane.doe@example.com",
		PreferredUsername: "jane.doe@example.com", Groups: []string{"Everyone", "engineering", "platform-admins", "k8s-developers", "oncall"},
		AccessExpiry: now.Add(time.Hour), CreatedAt: now, ExpiresAt: now.Add(168 * time.Hour),
	}
	st.SetTokens(session.Tokens{AccessToken: ts.AccessToken, IDToken: ts.IDToken, RefreshToken: ts.RefreshToken})
	rec := httptest.NewRecorder()
	if _, err := e.sessions.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), st); err != nil {
		b.Fatal(err)
	}
	benchmarkCheck(b, e.router, rec.Result().Cookies()[:1])
}

// benchmarkCheck runs nginx's check with these cookies through router, as
// often as the benchmark wants, and fails on anything but 200.
func benchmarkCheck(b *testing.B, router http.Handler, cookies []*http.Cookie) {
	req := httptest.NewRequest(http.MethodGet, "/oauth2/auth", nil)
	req.Header.Set("X-Original-URL", "https://app.example.com/dashboard?tab=1")
	req.Header.Set("X-Original-Method", "GET")
	req.Header.Set("X-Request-ID", "5f0c1a2b3c4d5e6f")
	for _, c := range cookies {
		req.AddCookie(c)
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.code = 0
		router.ServeHTTP(w, req)
		if w.code != http.StatusOK {
			b.Fatalf("status %d", w.code)
		}
	}
}

// mustRouterWithLog rebuilds the router with a production-like logger (JSON,
// info level, discarded), so the benchmark pays for the request log line.
func mustRouterWithLog(b *testing.B, e *testEnv) *ginEngine {
	b.Helper()
	e.logs = &syncBuffer{}
	r, err := NewRouter(Deps{Config: e.cfg, Provider: e.provider, Sessions: e.sessions,
		Logouts: e.logouts, Metrics: e.metrics, Log: discardLogger(), Now: e.clock.Now,
		Assertions: testAssertions(b, e.cfg, e.clock.Now)})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// discardWriter is a ResponseWriter that keeps only the status and headers.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
