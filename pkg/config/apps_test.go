package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var twoApps = `
oidc:
  issuerURL: https://idp.example.com
  scopes: [openid, email, offline_access]
  extraAuthParams: {audience: shared}
session:
  secrets: ["` + stdSecret + `"]
  cookieDomain: .example.com
authorization:
  emailDomains: [example.com]
  groups: [staff]
apps:
  - name: grafana
    hosts: [grafana.example.com, "*.grafana.example.com"]
    oidc: {clientID: grafana, clientSecret: g-secret, scopes: [openid, email, groups]}
    session: {cookieName: _extauth_grafana}
    authorization:
      groups: [sre]
      claims: [{claim: department, values: [platform, security]}]
      bearer: [{issuerURL: https://token.actions.githubusercontent.com, audiences: [grafana-ci]}]
      preflight: allow
      skip:
        - {methods: [GET], path: /api/health}
        - {methods: [GET, HEAD], pathPrefix: /public/}
  - name: wiki
    hosts: [wiki.example.com]
    oidc: {issuerURL: https://other-idp.example.com, clientID: wiki, clientSecret: w-secret}
    session: {cookieName: _extauth_wiki}
    authorization: {emails: [alice@example.com]}
`

// TestAppsInherit: an app's oidc, session cookie and authorization keys are
// the top level's except those it states; without a top-level client the
// top level only holds what apps share.
func TestAppsInherit(t *testing.T) {
	cfg := mustParse(t, twoApps)
	if cfg.HasClient() {
		t.Error("the top level names no client, HasClient says it does")
	}
	summary := strings.Join(cfg.Summary(), "\n")
	for _, want := range []string{"provider: none at the top level", "app grafana: grafana.example.com, *.grafana.example.com; client grafana at https://idp.example.com; cookie _extauth_grafana; bearer tokens of https://token.actions.githubusercontent.com for grafana-ci", "app wiki: wiki.example.com; client wiki at https://other-idp.example.com"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	g, w := cfg.Apps[0], cfg.Apps[1]
	if g.OIDC.IssuerURL != "https://idp.example.com" || g.OIDC.ClientID != "grafana" || g.OIDC.ClientSecret != "g-secret" ||
		!slices.Equal(g.OIDC.Scopes, []string{"openid", "email", "groups"}) || g.OIDC.ExtraAuthParams["audience"] != "shared" || !g.OIDC.PKCE {
		t.Errorf("grafana's oidc = %+v", g.OIDC)
	}
	if w.OIDC.IssuerURL != "https://other-idp.example.com" || !slices.Equal(w.OIDC.Scopes, []string{"openid", "email", "offline_access"}) {
		t.Errorf("wiki's oidc = %+v", w.OIDC)
	}
	if g.Session.CookieName != "_extauth_grafana" || g.Session.CookieDomain != ".example.com" || !g.Session.CookieSecure || g.Session.CookieSameSite != "lax" {
		t.Errorf("grafana's session = %+v", g.Session)
	}
	if !slices.Equal(g.Authorization.Groups, []string{"sre"}) || !slices.Equal(g.Authorization.EmailDomains, []string{"example.com"}) ||
		g.Authorization.Preflight != PreflightAllow || len(g.Authorization.Skip) != 2 || len(g.Authorization.Bearer) != 1 {
		t.Errorf("grafana's authorization = %+v", g.Authorization)
	}
	// emails alone admit only them, as at the top level; groups inherited.
	if w.Authorization.EmailDomains != nil || !slices.Equal(w.Authorization.Groups, []string{"staff"}) || w.Authorization.Preflight != PreflightDeny {
		t.Errorf("wiki's authorization = %+v", w.Authorization)
	}
	// The app's copy is its own.
	cfg.Apps[0].OIDC.ExtraAuthParams["audience"] = "changed"
	if cfg.OIDC.ExtraAuthParams["audience"] != "shared" || cfg.Apps[1].OIDC.ExtraAuthParams["audience"] != "shared" {
		t.Error("apps share the top level's extraAuthParams map")
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestAppSecretReplacesTopLevel: an app stating its secret in one form
// drops the top level's in the other, instead of failing as "both set".
func TestAppSecretReplacesTopLevel(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "wiki-secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, `
oidc: {issuerURL: https://idp.example.com, clientID: top, clientSecret: top-secret}
session: {secrets: ["`+stdSecret+`"]}
apps:
  - {name: a, hosts: [a.example.com], oidc: {clientID: a, clientSecretFile: `+secretFile+`}, session: {cookieName: _a}}
  - {name: b, hosts: [b.example.com], oidc: {clientID: b}, session: {cookieName: _b}}
`)
	if !cfg.HasClient() || cfg.Apps[0].OIDC.ClientSecret != "from-file" || cfg.Apps[1].OIDC.ClientSecret != "top-secret" {
		t.Errorf("secrets: top %v, a %q, b %q", cfg.HasClient(), cfg.Apps[0].OIDC.ClientSecret, cfg.Apps[1].OIDC.ClientSecret)
	}
}

// TestAppsValidation: every problem of an app is reported at its YAML path.
func TestAppsValidation(t *testing.T) {
	err := parseError(t, `
oidc: {issuerURL: https://idp.example.com}
session: {secrets: ["`+stdSecret+`"], cookieDomain: .example.com}
apps:
  - {name: grafana, hosts: [grafana.example.com, "*.example.com"], oidc: {clientID: g, clientSecret: s}, session: {cookieName: _g}}
  - name: Bad_Name
    hosts: [grafana.example.com, "*.com", Upper.example.com]
    oidc: {clientSecret: s, scopes: [email], promptConsent: maybe}
    session: {cookieName: _g, cookieSameSite: sometimes}
    authorization:
      claims: [{claim: "", values: []}]
      bearer: [{issuerURL: "not a url", audiences: []}, {issuerURL: "https://ci.example.com", audiences: [a]}, {issuerURL: "https://ci.example.com", audiences: [b]}]
      preflight: maybe
      skip: [{methods: [GET], pathPrefix: /}, {methods: [], path: /a, pathPrefix: /b}, {methods: [get], path: "/a/../b"}]
  - {name: grafana, hosts: [], oidc: {clientID: x, clientSecret: s}, session: {cookieName: _x}}
`)
	requireErrors(t, err,
		`apps[1].name: "Bad_Name" must be 1 to 32 of a-z, 0-9 and -`,
		"apps[1].hosts[0]: duplicate of apps[0]",
		`apps[1].hosts[1]: "*.com" is not a lowercase host name, or *. and one`,
		`apps[1].hosts[2]: "Upper.example.com" is not a lowercase host name, or *. and one`,
		"apps[1].oidc.clientID: required",
		`apps[1].oidc.scopes: must contain "openid"`,
		`apps[1].oidc.promptConsent: "maybe" is not auto, always or never`,
		`apps[1].session.cookieSameSite: must be lax, strict or none, got "sometimes"`,
		`apps[1].session.cookieName: "_g" is also apps[0]'s cookie`,
		"apps[1].authorization.claims[0].claim: required",
		"apps[1].authorization.claims[0].values: required",
		"apps[1].authorization.bearer[0].issuerURL:",
		"apps[1].authorization.bearer[0].audiences: required",
		"apps[1].authorization.bearer[2].issuerURL: duplicate of apps[1].authorization.bearer[1]: list all its audiences there",
		`apps[1].authorization.preflight: "maybe" is not allow or deny`,
		`apps[1].authorization.skip[0].pathPrefix: "/" would skip everything`,
		"apps[1].authorization.skip[1].methods: list at least one method",
		"apps[1].authorization.skip[1]: set path or pathPrefix, not both",
		`apps[1].authorization.skip[2].methods: "get" is not an upper-case method name`,
		`apps[1].authorization.skip[2].path: "/a/../b" would match no request`,
		`apps[2].name: "grafana" is also apps[0]'s name`,
		"apps[2].hosts: required",
	)
}

// TestAppsKeepTopLevelRequiredWithoutApps: without apps the top level is
// the client and needs its keys, as before.
func TestAppsKeepTopLevelRequiredWithoutApps(t *testing.T) {
	err := parseError(t, `session: {secrets: ["`+stdSecret+`"]}`)
	requireErrors(t, err, "oidc.issuerURL: required", "oidc.clientID: required")
	cfg := mustParse(t, minimal)
	if !cfg.HasClient() || cfg.Apps != nil {
		t.Errorf("HasClient %v, apps %v", cfg.HasClient(), cfg.Apps)
	}
	before := mustParse(t, twoApps)
	again := mustParse(t, twoApps)
	if err := before.Validate(); err != nil || !reflect.DeepEqual(before, again) {
		t.Errorf("Validate changed an apps config (%v)", err)
	}
}
