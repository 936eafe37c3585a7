package handlers

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

func TestSignInFlow(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := jar{}
	authURL := e.startSignIn(j, "/app/page?x=1&y=2#frag")

	// The authorization request carries everything the spec lists.
	q := authURL.Query()
	if got := authURL.Scheme + "://" + authURL.Host + authURL.Path; got != e.idp.Issuer+"/authorize" {
		t.Errorf("authorization endpoint = %s", got)
	}
	for key, want := range map[string]string{
		"response_type":         "code",
		"client_id":             e.idp.ClientID,
		"redirect_uri":          "http://" + testHost + "/oauth2/callback",
		"scope":                 "openid profile email offline_access",
		"code_challenge_method": "S256",
	} {
		if q.Get(key) != want {
			t.Errorf("%s = %q, want %q", key, q.Get(key), want)
		}
	}
	for _, key := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(key)) < 43 {
			t.Errorf("%s = %q, want 32 random bytes", key, q.Get(key))
		}
	}
	flowCookie := j["_extauth_csrf"]
	if flowCookie == nil || !flowCookie.HttpOnly || flowCookie.MaxAge != 900 || flowCookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("flow cookie: %+v", flowCookie)
	}

	cb := e.idp.Login(t, t.Context(), authURL.String())
	rec := e.callback(j, cb)
	if rec.Code != http.StatusFound {
		t.Fatalf("callback status %d: %s", rec.Code, rec.Body.String())
	}
	if loc := rec.Header().Get("Location"); loc != "/app/page?x=1&y=2#frag" {
		t.Errorf("callback Location = %q", loc)
	}
	sessionCookie := j["_extauth"]
	if sessionCookie == nil || !sessionCookie.HttpOnly || !sessionCookie.Secure || sessionCookie.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie: %+v", sessionCookie)
	}
	if _, ok := j["_extauth_csrf"]; ok {
		t.Error("flow cookie not cleared after the callback")
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("callback answer is cacheable")
	}

	// Every later request passes from the cookie alone.
	before := e.idp.Calls(providertest.EndpointToken) + e.idp.Calls(providertest.EndpointKeys) + e.idp.Calls(providertest.EndpointUserinfo)
	check := e.check(j.list(), "", nil)
	if check.Code != http.StatusOK {
		t.Fatalf("check status %d", check.Code)
	}
	after := e.idp.Calls(providertest.EndpointToken) + e.idp.Calls(providertest.EndpointKeys) + e.idp.Calls(providertest.EndpointUserinfo)
	if after != before {
		t.Errorf("the check called the provider: %d calls", after-before)
	}
	user := providertest.DefaultUser()
	for h, want := range map[string]string{
		"X-Auth-Request-User":               user.Subject,
		"X-Auth-Request-Email":              user.Email,
		"X-Auth-Request-Preferred-Username": user.PreferredUsername,
		"X-Auth-Request-Groups":             strings.Join(user.Groups, ","),
		"Cache-Control":                     "no-store",
	} {
		if got := check.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	for _, h := range []string{"X-Auth-Request-Access-Token", "Authorization", "Location", "Set-Cookie"} {
		if check.Header().Get(h) != "" {
			t.Errorf("check answered %s by default", h)
		}
	}
	if check.Body.Len() != 0 {
		t.Errorf("check has a body: %q", check.Body.String())
	}

	// userinfo: identity, never a token.
	info := e.do(http.MethodGet, "/oauth2/userinfo", j.list(), nil)
	var got map[string]any
	if err := json.Unmarshal(info.Body.Bytes(), &got); err != nil || info.Code != http.StatusOK {
		t.Fatalf("userinfo %d %s", info.Code, info.Body.String())
	}
	if got["user"] != user.Subject || got["email"] != user.Email || got["preferredUsername"] != user.PreferredUsername || len(got) != 4 {
		t.Errorf("userinfo = %v", got)
	}
	if strings.Contains(info.Body.String(), "eyJ") {
		t.Error("userinfo leaks a token")
	}
	if e.do(http.MethodGet, "/oauth2/userinfo", nil, nil).Code != http.StatusUnauthorized {
		t.Error("userinfo without a session must be 401")
	}

	if v := testutil.ToFloat64(e.metrics.Callbacks.WithLabelValues("", metrics.CallbackSuccess)); v != 1 {
		t.Errorf("callbacks success = %v", v)
	}
	if v := testutil.ToFloat64(e.metrics.Signins.WithLabelValues("", metrics.SigninRedirected)); v != 1 {
		t.Errorf("signins redirected = %v", v)
	}
	if v := testutil.ToFloat64(e.metrics.AuthRequests.WithLabelValues("", metrics.CheckNginx, metrics.AuthAuthenticated)); v != 1 {
		t.Errorf("auth authenticated = %v", v)
	}
}

func TestPKCEChallengeIsVerifiersHash(t *testing.T) {
	// The fake provider checks S256(verifier) == challenge at the token
	// endpoint; a sign-in that completes proves both halves agree. Here we
	// also check the challenge's shape: base64url of a SHA-256.
	e := newTestEnv(t, nil).discover()
	authURL := e.startSignIn(jar{}, "")
	ch, err := base64.RawURLEncoding.DecodeString(authURL.Query().Get("code_challenge"))
	if err != nil || len(ch) != sha256.Size {
		t.Fatalf("code_challenge is not a base64url SHA-256: %v %d", err, len(ch))
	}
}

func TestSeveralTabsSignInAtOnce(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := jar{}
	urlA := e.startSignIn(j, "/a")
	urlB := e.startSignIn(j, "/b")
	urlC := e.startSignIn(j, "/c")
	// The provider answers in another order than they started.
	for _, tc := range []struct {
		auth *url.URL
		want string
	}{{urlB, "/b"}, {urlA, "/a"}, {urlC, "/c"}} {
		cb := e.idp.Login(t, t.Context(), tc.auth.String())
		rec := e.callback(j, cb)
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != tc.want {
			t.Fatalf("tab %s: status %d Location %q: %s", tc.want, rec.Code, rec.Header().Get("Location"), rec.Body.String())
		}
	}
}

func TestStartReturnURL(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	tests := []struct {
		name   string
		target string
		header http.Header
		want   string
		result string
	}{
		{"rd path", "/oauth2/start?rd=%2Fdash%3Fa%3D1", nil, "/dash?a=1", metrics.SigninRedirected},
		{"rd own host", "/oauth2/start?rd=" + url.QueryEscape("https://app.example.com/x"), nil, "https://app.example.com/x", metrics.SigninRedirected},
		{"rd allowed domain", "/oauth2/start?rd=" + url.QueryEscape("https://other.example.com/"), nil, "https://other.example.com/", metrics.SigninRedirected},
		{"header when no rd", "/oauth2/start", http.Header{"X-Auth-Request-Redirect": {"/from-header"}}, "/from-header", metrics.SigninRedirected},
		{"rd wins over header", "/oauth2/start?rd=%2Frd", http.Header{"X-Auth-Request-Redirect": {"/from-header"}}, "/rd", metrics.SigninRedirected},
		{"default", "/oauth2/start", nil, "/", metrics.SigninRedirected},
		{"open redirect", "/oauth2/start?rd=%2F%2Fevil.com", nil, "/", metrics.SigninInvalidRedirect},
		{"foreign host", "/oauth2/start?rd=" + url.QueryEscape("https://evil.com/"), nil, "/", metrics.SigninInvalidRedirect},
		{"hostile header", "/oauth2/start", http.Header{"X-Auth-Request-Redirect": {"https://example.com.evil.com/"}}, "/", metrics.SigninInvalidRedirect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.metrics.Signins.WithLabelValues("", tc.result))
			j := jar{}
			rec := e.do(http.MethodGet, tc.target, nil, tc.header)
			if rec.Code != http.StatusFound {
				t.Fatalf("status %d", rec.Code)
			}
			j.update(rec)
			if got := testutil.ToFloat64(e.metrics.Signins.WithLabelValues("", tc.result)); got != before+1 {
				t.Errorf("signins{%s} did not count", tc.result)
			}
			auth, _ := url.Parse(rec.Header().Get("Location"))
			cb := e.idp.Login(t, t.Context(), auth.String())
			done := e.callback(j, cb)
			if done.Header().Get("Location") != tc.want {
				t.Errorf("return URL = %q, want %q", done.Header().Get("Location"), tc.want)
			}
		})
	}
}

func TestStartBeforeDiscoveryIs503(t *testing.T) {
	e := newTestEnv(t, nil) // not discovered
	rec := e.do(http.MethodGet, "/oauth2/start", nil, nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Location") != "" {
		t.Errorf("status %d, Location %q", rec.Code, rec.Header().Get("Location"))
	}
}

func TestReadiness(t *testing.T) {
	e := newTestEnv(t, nil)
	e.idp.SetFault(providertest.EndpointDiscovery, providertest.Fault503)
	if err := e.provider.Discover(t.Context()); err == nil {
		t.Fatal("discovery succeeded against a failing provider")
	}
	if rec := e.do(http.MethodGet, "/readyz", nil, nil); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("readyz = %d while the provider is down", rec.Code)
	}
	if rec := e.do(http.MethodGet, "/healthz", nil, nil); rec.Code != http.StatusOK {
		t.Errorf("healthz = %d while the provider is down", rec.Code)
	}
	e.idp.SetFault(providertest.EndpointDiscovery, providertest.FaultNone)
	e.idp.SetFault(providertest.EndpointKeys, providertest.Fault503)
	if err := e.provider.Discover(t.Context()); err == nil {
		t.Fatal("ready without keys")
	}
	e.idp.SetFault(providertest.EndpointKeys, providertest.FaultNone)
	e.discover()
	if rec := e.do(http.MethodGet, "/readyz", nil, nil); rec.Code != http.StatusOK {
		t.Errorf("readyz = %d after discovery", rec.Code)
	}
}

func TestClaimsFromUserinfo(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithClaimsOnlyInUserinfo()).discover()
	j := e.signIn("/")
	rec := e.check(j.list(), "", nil)
	user := providertest.DefaultUser()
	if rec.Code != http.StatusOK || rec.Header().Get("X-Auth-Request-Email") != user.Email ||
		rec.Header().Get("X-Auth-Request-Groups") != strings.Join(user.Groups, ",") {
		t.Errorf("claims not taken from userinfo: %d %v", rec.Code, rec.Header())
	}
	if e.idp.Calls(providertest.EndpointUserinfo) != 1 {
		t.Errorf("userinfo calls = %d, want exactly 1", e.idp.Calls(providertest.EndpointUserinfo))
	}
}

func TestUserinfoSubjectMustMatch(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithClaimsOnlyInUserinfo()).discover()
	e.idp.SetUserinfoOverride(map[string]any{"sub": "someone-else"})
	j := jar{}
	cb := e.idp.Login(t, t.Context(), e.startSignIn(j, "/").String())
	rec := e.callback(j, cb)
	if rec.Code != http.StatusBadRequest || j["_extauth"] != nil {
		t.Errorf("status %d, session %v", rec.Code, j["_extauth"])
	}
}

func TestUnverifiedEmailIsNotTrusted(t *testing.T) {
	user := providertest.DefaultUser()
	user.EmailVerified = false
	e := newTestEnv(t, func(c *config.Config) {
		c.Authorization.EmailDomains = []string{"example.com"}
	}, providertest.WithUser(user)).discover()
	j := jar{}
	cb := e.idp.Login(t, t.Context(), e.startSignIn(j, "/").String())
	rec := e.callback(j, cb)
	if rec.Code != http.StatusForbidden || j["_extauth"] != nil {
		t.Errorf("an unverified email passed a domain rule: %d", rec.Code)
	}
}

func TestForbiddenAtCallback(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) {
		c.Authorization.Groups = []string{"payroll"}
	}).discover()
	j := jar{}
	cb := e.idp.Login(t, t.Context(), e.startSignIn(j, "/").String())
	rec := e.callback(j, cb)
	if rec.Code != http.StatusForbidden || j["_extauth"] != nil {
		t.Errorf("status %d, session %v", rec.Code, j["_extauth"])
	}
	if v := testutil.ToFloat64(e.metrics.Callbacks.WithLabelValues("", metrics.CallbackForbidden)); v != 1 {
		t.Errorf("callbacks forbidden = %v", v)
	}
}
