package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
)

func revocations(e *testEnv, tokenType, result string) float64 {
	return testutil.ToFloat64(e.metrics.TokenRevocations.WithLabelValues(tokenType, result))
}

func TestSignOut(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			j := e.signIn("/")
			tokens := mustLoad(t, e, j.list()).Tokens()
			cookies := j.list()

			rec := e.do(method, "/oauth2/sign_out?rd="+url.QueryEscape("/bye"), cookies, nil)
			if rec.Code != http.StatusFound {
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}

			// Both tokens revoked, refresh token first, with client auth.
			revs := e.idp.Revocations()
			if len(revs) != 2 || revs[0].Token != tokens.RefreshToken || revs[0].TypeHint != "refresh_token" ||
				revs[1].Token != tokens.AccessToken || revs[1].TypeHint != "access_token" {
				t.Fatalf("revocations = %+v", revs)
			}
			for _, r := range revs {
				if r.ClientID != e.idp.ClientID || r.AuthMethod != providertest.AuthMethodBasic {
					t.Errorf("revocation without client_secret_basic: %+v", r)
				}
			}
			if revocations(e, "refresh_token", metrics.RevocationSuccess) != 1 || revocations(e, "access_token", metrics.RevocationSuccess) != 1 {
				t.Error("revocations not counted")
			}

			// Cookies cleared.
			if c := sessionCookie(rec); c == nil || c.MaxAge >= 0 {
				t.Errorf("session cookie not cleared: %v", rec.Header().Values("Set-Cookie"))
			}

			// 302 to the end-session endpoint with the exact id_token_hint.
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if got := loc.Scheme + "://" + loc.Host + loc.Path; got != e.idp.Issuer+"/end_session" {
				t.Fatalf("Location = %s", rec.Header().Get("Location"))
			}
			q := loc.Query()
			if q.Get("id_token_hint") != tokens.IDToken || q.Get("client_id") != e.idp.ClientID ||
				q.Get("post_logout_redirect_uri") != "http://"+testHost+"/bye" {
				t.Errorf("end-session query = %v", q)
			}

			// The old cookie no longer passes, even if someone kept a copy.
			if rec := e.check(cookies, "", nil); rec.Code != http.StatusUnauthorized {
				t.Errorf("the signed-out cookie still passes: %d", rec.Code)
			}
			// The revoked refresh token is dead at the provider.
			if !e.idp.FamilyRevoked(tokens.RefreshToken) {
				t.Error("the provider does not consider the refresh token revoked")
			}
			if strings.Contains(e.logs.String(), tokens.RefreshToken) {
				t.Error("a token reached the log")
			}
		})
	}
}

func TestSignOutWithRevocationDown(t *testing.T) {
	for _, fault := range []providertest.Fault{providertest.Fault503, providertest.FaultHang} {
		t.Run(fault.String(), func(t *testing.T) {
			e := newTestEnv(t, nil).discover()
			j := e.signIn("/")
			e.idp.SetFault(providertest.EndpointRevoke, fault)
			rec := e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
			if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), e.idp.Issuer+"/end_session") {
				t.Fatalf("sign-out did not complete: %d %s", rec.Code, rec.Header().Get("Location"))
			}
			if c := sessionCookie(rec); c == nil || c.MaxAge >= 0 {
				t.Error("session cookie not cleared")
			}
			if revocations(e, "refresh_token", metrics.RevocationFailure) != 1 || revocations(e, "access_token", metrics.RevocationFailure) != 1 {
				t.Error("revocation failures not counted")
			}
		})
	}
}

func TestSignOutWithoutEndSession(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithoutEndSession(), providertest.WithoutRevocation()).discover()
	j := e.signIn("/")
	tests := []struct{ rd, want string }{
		{"", "/"},
		{"/bye", "/bye"},
		{"https://other.example.com/x", "https://other.example.com/x"},
		{"//evil.com", "/"},
		{"https://evil.com/", "/"},
	}
	for _, tc := range tests {
		rec := e.do(http.MethodGet, "/oauth2/sign_out?rd="+url.QueryEscape(tc.rd), j.list(), nil)
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != tc.want {
			t.Errorf("rd %q: %d %q, want %q", tc.rd, rec.Code, rec.Header().Get("Location"), tc.want)
		}
	}
	if revocations(e, "refresh_token", metrics.RevocationUnsupported) != 1 {
		t.Error("revocation without an endpoint not counted as unsupported")
	}
}

func TestSignOutPostLogoutRedirectConfigured(t *testing.T) {
	e := newTestEnv(t, func(c *config.Config) { c.OIDC.PostLogoutRedirectURL = "https://www.example.com/signed-out" }).discover()
	j := e.signIn("/")
	rec := e.do(http.MethodGet, "/oauth2/sign_out?rd=%2Fignored", j.list(), nil)
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if loc.Query().Get("post_logout_redirect_uri") != "https://www.example.com/signed-out" {
		t.Errorf("post_logout_redirect_uri = %q", loc.Query().Get("post_logout_redirect_uri"))
	}
}

func TestSignOutWithoutSession(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	rec := e.do(http.MethodGet, "/oauth2/sign_out", nil, nil)
	if rec.Code != http.StatusFound || len(e.idp.Revocations()) != 0 {
		t.Errorf("status %d, revocations %d", rec.Code, len(e.idp.Revocations()))
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if loc.Query().Has("id_token_hint") {
		t.Error("id_token_hint without a session")
	}
}

func TestSignOutClientSecretPost(t *testing.T) {
	e := newTestEnv(t, nil, providertest.WithAuthMethods(providertest.AuthMethodPost)).discover()
	j := e.signIn("/")
	e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
	for _, r := range e.idp.Revocations() {
		if r.AuthMethod != providertest.AuthMethodPost {
			t.Errorf("auth method %q, want client_secret_post", r.AuthMethod)
		}
	}
	if len(e.idp.Revocations()) != 2 {
		t.Errorf("revocations = %d", len(e.idp.Revocations()))
	}
}

func TestNewSignInAfterSignOutPasses(t *testing.T) {
	e := newTestEnv(t, nil).discover()
	j := e.signIn("/")
	e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
	j2 := e.signIn("/")
	if rec := e.check(j2.list(), "", nil); rec.Code != http.StatusOK {
		t.Errorf("a new sign-in after sign-out: %d", rec.Code)
	}
}
