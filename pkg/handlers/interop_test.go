package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// consentProvider behaves as node oidc-provider and Google do (OpenID
// Connect Core §11): offline_access, and with it a refresh token, only for
// an authorization request with prompt=consent.
var consentProvider = []providertest.Option{providertest.WithRefreshTokens(false), providertest.WithOfflineAccessOnlyWithConsent()}

func noRefreshTokenWarnings(e *testEnv) float64 {
	return testutil.ToFloat64(e.metrics.SigninWarnings.WithLabelValues(metrics.WarningNoRefreshToken))
}

func prompts(e *testEnv) []string {
	var out []string
	for _, q := range e.idp.Authorizations() {
		out = append(out, q.Get("prompt"))
	}
	return out
}

// TestNoRefreshTokenRestartsWithConsent: in oidc.promptConsent auto, a
// callback without the refresh token that offline_access asked for sends
// the browser back to the provider once with prompt=consent, warns and
// counts; the session then has a refresh token, and later sign-ins ask
// with prompt=consent from the start.
func TestNoRefreshTokenRestartsWithConsent(t *testing.T) {
	e := newTestEnv(t, nil, consentProvider...).discover()
	j := jar{}
	authURL := e.startSignIn(j, "https://app.example.com/page")
	rec := e.callback(j, e.idp.Login(t, t.Context(), authURL.String()))
	retry, err := url.Parse(rec.Header().Get("Location"))
	if rec.Code != http.StatusFound || err != nil || !strings.HasPrefix(retry.String(), e.idp.Issuer) || retry.Query().Get("prompt") != "consent" {
		t.Fatalf("callback without a refresh token: %d to %q, want a new sign-in with prompt=consent", rec.Code, rec.Header().Get("Location"))
	}
	if noRefreshTokenWarnings(e) != 1 || !strings.Contains(e.logs.String(), "restarting the sign-in with prompt=consent") {
		t.Errorf("warnings = %v; logs:\n%s", noRefreshTokenWarnings(e), e.logs.String())
	}
	if revs := e.idp.Revocations(); len(revs) != 1 || revs[0].Kind != "access_token" {
		t.Errorf("revocations of the replaced sign-in = %+v, want its access token", revs)
	}
	rec = e.callback(j, e.idp.Login(t, t.Context(), retry.String()))
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://app.example.com/page" {
		t.Fatalf("callback after consent: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	if rt := mustLoad(t, e, j.list()).Tokens().RefreshToken; rt == "" {
		t.Error("the session after prompt=consent has no refresh token")
	}

	// Another browser's sign-in asks with prompt=consent at once.
	e.signIn("")
	if got := prompts(e); len(got) != 3 || got[0] != "" || got[1] != "consent" || got[2] != "consent" {
		t.Errorf("prompts sent = %q, want none, then consent for the retry and every later sign-in", got)
	}
	if noRefreshTokenWarnings(e) != 1 {
		t.Errorf("warnings = %v, want 1", noRefreshTokenWarnings(e))
	}
}

// TestNoRefreshTokenModes: never and an explicit prompt never restart (the
// sign-in goes on, warned and counted); always sends prompt=consent from
// the first sign-in; a client that asks no offline_access is not warned.
func TestNoRefreshTokenModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		update   func(*config.Config)
		prompt   string  // sent with the first authorization request
		warnings float64 // after one sign-in
	}{
		{"never", func(c *config.Config) { c.OIDC.PromptConsent = config.PromptConsentNever }, "", 1},
		{"extraAuthParams prompt", func(c *config.Config) { c.OIDC.ExtraAuthParams = map[string]string{"prompt": "login"} }, "login", 1},
		{"always", func(c *config.Config) { c.OIDC.PromptConsent = config.PromptConsentAlways }, "consent", 0},
		{"no offline_access", func(c *config.Config) { c.OIDC.Scopes = []string{"openid", "email"} }, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.update, consentProvider...).discover()
			j := e.signIn("")
			if got := prompts(e); len(got) != 1 || got[0] != tc.prompt {
				t.Errorf("prompts sent = %q, want one sign-in with %q", got, tc.prompt)
			}
			if got := noRefreshTokenWarnings(e); got != tc.warnings {
				t.Errorf("no_refresh_token warnings = %v, want %v", got, tc.warnings)
			}
			hasRT := mustLoad(t, e, j.list()).Tokens().RefreshToken != ""
			if hasRT != (tc.prompt == "consent") {
				t.Errorf("refresh token in the session: %v", hasRT)
			}
			if tc.warnings > 0 && !strings.Contains(e.logs.String(), "this session ends when its access token expires") {
				t.Errorf("no warning naming the consequence:\n%s", e.logs.String())
			}
		})
	}
}

// graphFake is Microsoft Graph's getMemberObjects for one access token:
// the groups it answers, or a failure.
type graphFake struct {
	mu     sync.Mutex
	groups []string
	fail   bool
	calls  int
	tokens []string // the bearer tokens it was called with
}

func (g *graphFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	g.tokens = append(g.tokens, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if r.Method != http.MethodPost || r.URL.Path != "/v1.0/me/getMemberObjects" {
		http.NotFound(w, r)
		return
	}
	if g.fail {
		http.Error(w, `{"error":{"code":"ServiceUnavailable"}}`, http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"value": g.groups})
}

func (g *graphFake) set(groups []string, fail bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.groups, g.fail = groups, fail
}

// overageUser is an Entra ID user in too many groups: the ID token names
// Graph in _claim_names instead of a groups claim.
func overageUser() providertest.User {
	u := providertest.DefaultUser()
	u.Groups = nil
	u.Extra = map[string]any{
		"_claim_names":   map[string]any{"groups": "src1"},
		"_claim_sources": map[string]any{"src1": map[string]any{"endpoint": "https://graph.windows.net/tenant/users/oid/getMemberObjects"}},
	}
	return u
}

func manyGroups(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
	}
	return out
}

func overage(e *testEnv, result string) float64 {
	return testutil.ToFloat64(e.metrics.GroupsOverage.WithLabelValues(result))
}

// TestGroupOverage: an Entra ID token without groups but with _claim_names
// has its groups read from Microsoft Graph (oidc.microsoftGraphURL) with
// the access token, once at sign-in and again at a refresh whose ID token
// says so; the groups live in the session, so checks never call Graph.
// Graph down at sign-in: group rules refuse (403), never a 5xx; at a
// refresh: the session keeps its groups.
func TestGroupOverage(t *testing.T) {
	graph := &graphFake{groups: manyGroups(250)}
	srv := httptest.NewServer(graph)
	defer srv.Close()
	wanted := manyGroups(250)[249]
	e := newTestEnv(t, func(c *config.Config) {
		c.OIDC.MicrosoftGraphURL = srv.URL
		c.Authorization.Groups = []string{wanted}
	}, providertest.WithUser(overageUser()), providertest.WithAccessTokenTTL(10*time.Minute)).discover()

	j := e.signIn("")
	st := mustLoad(t, e, j.list()).(*session.State)
	if len(st.Groups) != 250 || graph.calls != 1 || graph.tokens[0] != st.Tokens().AccessToken {
		t.Fatalf("session groups %d after %d Graph calls (token sent %v)", len(st.Groups), graph.calls, graph.tokens[0] == st.Tokens().AccessToken)
	}
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusOK || graph.calls != 1 {
		t.Errorf("check: %d, Graph calls %d (want 200 and no new call)", rec.Code, graph.calls)
	}
	if overage(e, metrics.OverageFetched) != 1 || !strings.Contains(e.logs.String(), "group overage: groups read from Microsoft Graph") {
		t.Errorf("fetched = %v; logs:\n%s", overage(e, metrics.OverageFetched), e.logs.String())
	}

	// A refresh whose ID token has the overage again reads Graph again.
	graph.set(manyGroups(240), false)
	e.idp.SetUser(overageUser())
	e.clock.Advance(10 * time.Minute)
	if rec := e.check(j.list(), "", nil); rec.Code != http.StatusForbidden {
		t.Errorf("check after a refresh that removed the wanted group: %d, want 403", rec.Code)
	}
	if graph.calls != 2 {
		t.Errorf("Graph calls = %d, want 2", graph.calls)
	}

	// Graph down at a refresh: the groups stay what they were.
	e2 := newTestEnv(t, func(c *config.Config) { c.OIDC.MicrosoftGraphURL = srv.URL },
		providertest.WithUser(overageUser()), providertest.WithAccessTokenTTL(10*time.Minute)).discover()
	graph.set(manyGroups(250), false)
	j2 := e2.signIn("")
	graph.set(nil, true)
	e2.clock.Advance(10 * time.Minute)
	rec := e2.check(j2.list(), "", nil)
	if rec.Code != http.StatusOK || len(strings.Split(rec.Header().Get("X-Auth-Request-Groups"), ",")) != 250 {
		t.Errorf("check after a refresh with Graph down: %d, %d groups", rec.Code, len(strings.Split(rec.Header().Get("X-Auth-Request-Groups"), ",")))
	}
	if overage(e2, metrics.OverageError) != 1 {
		t.Errorf("error = %v, want 1", overage(e2, metrics.OverageError))
	}

	// Graph down at sign-in: the user has no groups, and a group rule
	// refuses with a page, not a 5xx.
	e3 := newTestEnv(t, func(c *config.Config) {
		c.OIDC.MicrosoftGraphURL = srv.URL
		c.Authorization.Groups = []string{wanted}
	}, providertest.WithUser(overageUser())).discover()
	j3 := jar{}
	rec = e3.callback(j3, e3.idp.Login(t, t.Context(), e3.startSignIn(j3, "").String()))
	if rec.Code != http.StatusForbidden {
		t.Errorf("sign-in with Graph down and a group rule: %d, want 403", rec.Code)
	}
	if !strings.Contains(e3.logs.String(), "group rules refuse this user") {
		t.Errorf("no warning:\n%s", e3.logs.String())
	}
}

// TestNoOverageNoGraph: a token with its groups claim never calls Graph.
func TestNoOverageNoGraph(t *testing.T) {
	graph := &graphFake{groups: manyGroups(3)}
	srv := httptest.NewServer(graph)
	defer srv.Close()
	e := newTestEnv(t, func(c *config.Config) { c.OIDC.MicrosoftGraphURL = srv.URL }).discover()
	e.signIn("")
	if graph.calls != 0 {
		t.Errorf("Graph calls = %d, want 0", graph.calls)
	}
}

// TestProviderProfiles: each provider's quirk, with providertest scripted
// to behave as it does and extauth configured as docs/providers says.
func TestProviderProfiles(t *testing.T) {
	const postLogout = "https://app.example.com/bye"
	t.Run("google: access_type=offline and prompt=consent, no end_session", func(t *testing.T) {
		e := newTestEnv(t, func(c *config.Config) {
			c.OIDC.Scopes = []string{"openid", "email", "profile"}
			c.OIDC.ExtraAuthParams = map[string]string{"access_type": "offline", "prompt": "consent"}
		}, providertest.WithoutEndSession()).discover()
		j := e.signIn("")
		q := e.idp.Authorizations()[0]
		if q.Get("access_type") != "offline" || q.Get("prompt") != "consent" || strings.Contains(q.Get("scope"), "offline_access") {
			t.Errorf("authorization request %v", q)
		}
		rec := e.do(http.MethodGet, "/oauth2/sign_out?rd=/bye", j.list(), nil)
		if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/bye" {
			t.Errorf("sign-out without end_session: %d to %q, want /bye", rec.Code, rec.Header().Get("Location"))
		}
		if len(e.idp.Revocations()) != 2 {
			t.Errorf("revocations = %d, want both tokens", len(e.idp.Revocations()))
		}
	})
	t.Run("auth0: audience, logout at /v2/logout with returnTo", func(t *testing.T) {
		e := newTestEnv(t, func(c *config.Config) {
			c.OIDC.ExtraAuthParams = map[string]string{"audience": "https://api.example.com"}
			c.OIDC.EndSessionURL = "https://tenant.example.auth0.com/v2/logout"
			c.OIDC.PostLogoutRedirectURL = postLogout
		}, providertest.WithoutEndSession()).discover()
		j := e.signIn("")
		if got := e.idp.Authorizations()[0].Get("audience"); got != "https://api.example.com" {
			t.Errorf("audience sent = %q", got)
		}
		rec := e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
		loc, _ := url.Parse(rec.Header().Get("Location"))
		if rec.Code != http.StatusFound || loc.Host != "tenant.example.auth0.com" || loc.Path != "/v2/logout" ||
			loc.Query().Get("returnTo") != postLogout || loc.Query().Get("client_id") != e.cfg.OIDC.ClientID {
			t.Errorf("sign-out: %d to %s", rec.Code, loc)
		}
	})
	t.Run("okta: revocation with client authentication, id_token_hint at logout", func(t *testing.T) {
		e := newTestEnv(t, func(c *config.Config) { c.OIDC.PostLogoutRedirectURL = postLogout },
			providertest.WithAuthMethods("client_secret_basic")).discover()
		j := e.signIn("")
		rec := e.do(http.MethodGet, "/oauth2/sign_out", j.list(), nil)
		loc, _ := url.Parse(rec.Header().Get("Location"))
		if loc.Query().Get("id_token_hint") == "" || loc.Query().Get("post_logout_redirect_uri") != postLogout {
			t.Errorf("end_session %s lacks id_token_hint or post_logout_redirect_uri", loc)
		}
		revs := e.idp.Revocations()
		if len(revs) != 2 || revs[0].AuthMethod != "client_secret_basic" || revs[0].TypeHint != "refresh_token" {
			t.Errorf("revocations = %+v, want the refresh token first, with client_secret_basic", revs)
		}
	})
	t.Run("keycloak: back-channel logout by sid", func(t *testing.T) {
		e := newTestEnv(t, nil).discover()
		j := e.signIn("")
		st := e.backchannelSession(j)
		e.clock.Advance(time.Second) // the logout ends sessions created before it
		if rec := e.backchannelPost(e.idp.LogoutToken("", st.SID)); rec.Code != http.StatusOK {
			t.Fatalf("logout token with sid only: %d %s", rec.Code, rec.Body.String())
		}
		if rec := e.check(j.list(), "", nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("check after a logout by sid: %d, want 401", rec.Code)
		}
	})
}
