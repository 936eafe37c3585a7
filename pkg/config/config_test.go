package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/extauth/extauth/internal/testenv"
)

// key is a 32-byte session key; the bytes 0xfb 0xff make its standard and
// URL-safe base64 forms differ ("+/" vs "-_").
var key = bytes.Repeat([]byte{0xfb, 0xff}, 16)

var (
	stdSecret = base64.StdEncoding.EncodeToString(key)
	urlSecret = base64.RawURLEncoding.EncodeToString(key)
)

// minimal is the smallest valid file.
var minimal = `
oidc:
  issuerURL: https://idp.example.com/realms/x
  clientID: extauth
session:
  secrets: ["` + stdSecret + `"]
`

// validConfig is Default plus the required keys, for Validate tests.
func validConfig() *Config {
	c := Default()
	c.OIDC.IssuerURL = "https://idp.example.com"
	c.OIDC.ClientID = "extauth"
	c.Session.Secrets = []string{stdSecret}
	return c
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireErrors fails unless err contains every want.
func requireErrors(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q\ndoes not contain %q", err, w)
		}
	}
}

// mustParse parses YAML that must be valid.
func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

// parseError parses YAML that must be invalid and checks that no Config
// comes back with the error.
func parseError(t *testing.T, yaml string) error {
	t.Helper()
	cfg, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("Parse: got no error")
	}
	if cfg != nil {
		t.Error("Parse returned a Config along with an error")
	}
	return err
}

func TestDefault(t *testing.T) {
	c := Default()
	tests := []struct {
		key       string
		got, want any
	}{
		{"server.address", c.Server.Address, ":4180"},
		{"server.metricsAddress", c.Server.MetricsAddress, ":9090"},
		{"server.pathPrefix", c.Server.PathPrefix, "/oauth2"},
		{"server.shutdownTimeout", c.Server.ShutdownTimeout.Duration, 15 * time.Second},
		{"oidc.scopes", c.OIDC.Scopes, []string{"openid", "profile", "email", "offline_access"}},
		{"oidc.pkce", c.OIDC.PKCE, true},
		{"oidc.claims", c.OIDC.Claims, Claims{User: "sub", Email: "email", Groups: "groups", PreferredUsername: "preferred_username"}},
		{"session.cookieName", c.Session.CookieName, "_extauth"},
		{"session.cookiePath", c.Session.CookiePath, "/"},
		{"session.cookieSecure", c.Session.CookieSecure, true},
		{"session.cookieSameSite", c.Session.CookieSameSite, "lax"},
		{"session.maxAge", c.Session.MaxAge.Duration, 168 * time.Hour},
		{"session.refreshBefore", c.Session.RefreshBefore.Duration, 60 * time.Second},
		{"session.refreshGrace", c.Session.RefreshGrace.Duration, 5 * time.Minute},
		{"session.storeTokens", c.Session.StoreTokens, StoreTokens{AccessToken: true, IDToken: true, RefreshToken: true}},
		{"session.store", c.Session.Store, "cookie"},
		{"session.redis", c.Session.Redis, Redis{Address: "127.0.0.1:6379", KeyPrefix: "extauth:"}},
		{"authorization.emailDomains", c.Authorization.EmailDomains, []string{"*"}},
		{"headers", c.Headers, Headers{User: true, Email: true, PreferredUsername: true, Groups: true}},
		{"logging", c.Logging, Logging{Level: "info", Format: "json"}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
}

func TestParseMinimalKeepsDefaults(t *testing.T) {
	got := mustParse(t, minimal)

	want := Default()
	want.OIDC.IssuerURL = "https://idp.example.com/realms/x"
	want.OIDC.ClientID = "extauth"
	want.Session.Secrets = []string{stdSecret}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParsePartialObjectsKeepDefaults(t *testing.T) {
	cfg := mustParse(t, `
server:
  address: ":8080"
oidc:
  issuerURL: https://idp.example.com
  clientID: extauth
  claims: {email: mail}
session:
  secrets: ["`+stdSecret+`"]
  storeTokens: {idToken: false}
  redis: {db: 2}
headers:
  accessToken: true
logging: {level: debug}
`)
	tests := []struct {
		key       string
		got, want any
	}{
		{"server.address (given)", cfg.Server.Address, ":8080"},
		{"server.metricsAddress", cfg.Server.MetricsAddress, ":9090"},
		{"server.pathPrefix", cfg.Server.PathPrefix, "/oauth2"},
		{"oidc.claims.email (given)", cfg.OIDC.Claims.Email, "mail"},
		{"oidc.claims.user", cfg.OIDC.Claims.User, "sub"},
		{"oidc.claims.groups", cfg.OIDC.Claims.Groups, "groups"},
		{"oidc.scopes", cfg.OIDC.Scopes, []string{"openid", "profile", "email", "offline_access"}},
		{"oidc.pkce", cfg.OIDC.PKCE, true},
		{"session.storeTokens", cfg.Session.StoreTokens, StoreTokens{AccessToken: true, IDToken: false, RefreshToken: true}},
		{"session.redis", cfg.Session.Redis, Redis{Address: "127.0.0.1:6379", DB: 2, KeyPrefix: "extauth:"}},
		{"session.cookieName", cfg.Session.CookieName, "_extauth"},
		{"session.maxAge", cfg.Session.MaxAge.Duration, 168 * time.Hour},
		{"headers.accessToken (given)", cfg.Headers.AccessToken, true},
		{"headers.user", cfg.Headers.User, true},
		{"logging.level (given)", cfg.Logging.Level, "debug"},
		{"logging.format", cfg.Logging.Format, "json"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v, want %v", tt.key, tt.got, tt.want)
		}
	}
}

func TestParseUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "top level",
			yaml: minimal + "servre: {}\n",
			want: []string{`unknown key "servre"`},
		},
		{
			name: "nested",
			yaml: minimal + "server:\n  adress: \":1\"\n",
			want: []string{`unknown key "server.adress"`},
		},
		{
			name: "deeply nested",
			yaml: strings.Replace(minimal, "clientID: extauth", "clientID: extauth\n  claims: {mail: email}", 1),
			want: []string{`unknown key "oidc.claims.mail"`},
		},
		{
			name: "several at once",
			yaml: minimal + "bogus: 1\nserver: {adress: x, metricsAdress: y}\nheaders: {token: true}\n",
			want: []string{
				`unknown key "bogus"`,
				`unknown key "server.adress"`,
				`unknown key "server.metricsAdress"`,
				`unknown key "headers.token"`,
			},
		},
		{
			name: "derived field is not a key",
			yaml: minimal + "server: {trustedPrefixes: [10.0.0.0/8]}\n",
			want: []string{`unknown key "server.trustedPrefixes"`},
		},
		{
			name: "keys are case-sensitive",
			yaml: minimal + "logging: {Level: debug}\n",
			want: []string{`unknown key "logging.Level"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireErrors(t, parseError(t, tt.yaml), tt.want...)
		})
	}
}

func TestParseMapAcceptsAnyKey(t *testing.T) {
	cfg := mustParse(t, strings.Replace(minimal, "clientID: extauth",
		"clientID: extauth\n  extraAuthParams: {audience: \"api://default\", prompt: login}", 1))
	want := map[string]string{"audience": "api://default", "prompt": "login"}
	if !reflect.DeepEqual(cfg.OIDC.ExtraAuthParams, want) {
		t.Errorf("extraAuthParams = %v, want %v", cfg.OIDC.ExtraAuthParams, want)
	}
}

func TestParseDuplicateKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"top level", minimal + "logging: {}\nlogging: {}\n", `duplicate key "logging"`},
		{"nested", minimal + "server:\n  address: \":1\"\n  address: \":2\"\n", `duplicate key "address"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireErrors(t, parseError(t, tt.yaml), tt.want)
		})
	}
}

func TestParseTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"bad duration", "session: {maxAge: 5 minutes}", `session.maxAge: invalid duration "5 minutes"`},
		{"duration without unit", "server: {shutdownTimeout: 15}", `server.shutdownTimeout: expected a duration such as "90s"`},
		{"string for list", "oidc: {scopes: openid}", "oidc.scopes: expected a list, got a string"},
		{"number in list", "oidc: {scopes: [openid, 5]}", "oidc.scopes[1]: expected a string, got a number"},
		{"list for string", "server: {address: [a]}", "server.address: expected a string, got a list"},
		{"string for bool", `oidc: {pkce: "yes"}`, "oidc.pkce: expected true or false, got a string"},
		{"fraction for int", "session: {redis: {db: 1.5}}", "session.redis.db: expected an integer, got 1.5"},
		{"scalar for object", "server: 5", "server: expected a mapping, got a number"},
		{"list in map", "oidc: {extraAuthParams: {a: [1]}}", "oidc.extraAuthParams.a: expected a string, got a list"},
		{"list at top level", "- a", "(top level): expected a mapping, got a list"},
		{"syntax error", "server: [", "parse YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireErrors(t, parseError(t, tt.yaml), tt.want)
		})
	}
}

func TestParseEmptyFileIsAllDefaults(t *testing.T) {
	for _, yaml := range []string{"", "# only a comment\n"} {
		err := parseError(t, yaml)
		requireErrors(t, err, "oidc.issuerURL: required", "oidc.clientID: required", "session.secrets: required")
		// The defaults are valid, so nothing else is reported.
		if n := len(strings.Split(err.Error(), "\n")); n != 3 {
			t.Errorf("Parse(%q): %d problems, want 3:\n%v", yaml, n, err)
		}
	}
}

func TestParseNullKeepsDefaults(t *testing.T) {
	cfg := mustParse(t, minimal+"server:\nheaders: {user: null}\n")
	if cfg.Server.Address != ":4180" || !cfg.Headers.User {
		t.Errorf("null changed defaults: server.address %q, headers.user %v", cfg.Server.Address, cfg.Headers.User)
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	err := parseError(t, `
oidc:
  issuerURL: ftp://idp.example.com
session:
  secrets: ["`+stdSecret+`"]
logging:
  level: verbose
`)
	requireErrors(t, err,
		`oidc.issuerURL: "ftp://idp.example.com" is not an absolute http or https URL`,
		"oidc.clientID: required",
		`logging.level: must be debug, info, warn or error, got "verbose"`,
	)
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Errorf("want 3 joined errors, got %v", err)
	}
}

func TestValidate(t *testing.T) {
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"valid", func(*Config) {}, ""},

		{"issuer required", func(c *Config) { c.OIDC.IssuerURL = "" }, "oidc.issuerURL: required"},
		{"issuer relative", func(c *Config) { c.OIDC.IssuerURL = "idp.example.com" }, "oidc.issuerURL: "},
		{"issuer scheme", func(c *Config) { c.OIDC.IssuerURL = "ftp://idp.example.com" }, "oidc.issuerURL: "},
		{"issuer without host", func(c *Config) { c.OIDC.IssuerURL = "https:///x" }, "oidc.issuerURL: "},
		{"issuer query", func(c *Config) { c.OIDC.IssuerURL = "https://idp.example.com/?a=b" }, "oidc.issuerURL: must not have a query or fragment"},
		{"issuer fragment", func(c *Config) { c.OIDC.IssuerURL = "https://idp.example.com/#x" }, "oidc.issuerURL: must not have a query or fragment"},
		{"issuer user info", func(c *Config) { c.OIDC.IssuerURL = "https://u:pw@idp.example.com" }, "oidc.issuerURL: must not contain user info"},
		{"issuer http is fine", func(c *Config) { c.OIDC.IssuerURL = "http://dex.dex.svc:5556/dex" }, ""},
		{"clientID required", func(c *Config) { c.OIDC.ClientID = "" }, "oidc.clientID: required"},
		{"public client", func(c *Config) { c.OIDC.ClientSecret = "" }, ""},
		{"confidential client needs secret", func(c *Config) { c.OIDC.PKCE = false },
			"oidc.clientSecret: required unless oidc.pkce is true (public client)"},
		{"confidential client with secret", func(c *Config) { c.OIDC.PKCE = false; c.OIDC.ClientSecret = "s" }, ""},
		{"redirectURL relative", func(c *Config) { c.OIDC.RedirectURL = "/oauth2/callback" }, "oidc.redirectURL: "},
		{"revocationURL scheme", func(c *Config) { c.OIDC.RevocationURL = "ftp://idp/revoke" }, "oidc.revocationURL: "},
		{"endSessionURL without host", func(c *Config) { c.OIDC.EndSessionURL = "https://" }, "oidc.endSessionURL: "},
		{"postLogoutRedirectURL garbage", func(c *Config) { c.OIDC.PostLogoutRedirectURL = "::nope" }, "oidc.postLogoutRedirectURL: "},
		{"optional URLs set", func(c *Config) {
			c.OIDC.RedirectURL = "https://auth.example.com/oauth2/callback"
			c.OIDC.RevocationURL = "https://idp.example.com/revoke"
			c.OIDC.EndSessionURL = "https://idp.example.com/logout"
			c.OIDC.PostLogoutRedirectURL = "https://example.com/"
		}, ""},
		{"scopes without openid", func(c *Config) { c.OIDC.Scopes = []string{"profile"} }, `oidc.scopes: must contain "openid"`},
		{"scope with space", func(c *Config) { c.OIDC.Scopes = []string{"openid", "a b"} }, `oidc.scopes[1]: "a b" is not a single scope`},
		{"reserved auth param", func(c *Config) { c.OIDC.ExtraAuthParams = map[string]string{"state": "x"} },
			"oidc.extraAuthParams.state: is set by extauth"},
		{"claims.user empty", func(c *Config) { c.OIDC.Claims.User = "" }, "oidc.claims.user: required"},
		{"claims.email empty", func(c *Config) { c.OIDC.Claims.Email = "" }, "oidc.claims.email: required"},
		{"claims.groups empty", func(c *Config) { c.OIDC.Claims.Groups = "" }, "oidc.claims.groups: required"},
		{"claims.preferredUsername empty", func(c *Config) { c.OIDC.Claims.PreferredUsername = "" }, "oidc.claims.preferredUsername: required"},

		{"address empty", func(c *Config) { c.Server.Address = "" }, "server.address: required"},
		{"address without port", func(c *Config) { c.Server.Address = "4180" }, `server.address: "4180" is not host:port`},
		{"metricsAddress empty", func(c *Config) { c.Server.MetricsAddress = "" }, "server.metricsAddress: required"},
		{"metricsAddress no port", func(c *Config) { c.Server.MetricsAddress = "localhost:" }, "server.metricsAddress: "},
		{"same addresses", func(c *Config) { c.Server.MetricsAddress = ":4180" }, "server.metricsAddress: must differ from server.address"},
		{"pathPrefix relative", func(c *Config) { c.Server.PathPrefix = "oauth2" }, `server.pathPrefix: "oauth2" must start with "/"`},
		{"pathPrefix root", func(c *Config) { c.Server.PathPrefix = "/" }, `server.pathPrefix: "/" must not end with "/"`},
		{"pathPrefix trailing slash", func(c *Config) { c.Server.PathPrefix = "/oauth2/" }, "server.pathPrefix: "},
		{"pathPrefix query", func(c *Config) { c.Server.PathPrefix = "/a?b" }, "server.pathPrefix: "},
		{"pathPrefix fragment", func(c *Config) { c.Server.PathPrefix = "/a#b" }, "server.pathPrefix: "},
		{"pathPrefix space", func(c *Config) { c.Server.PathPrefix = "/a b" }, "server.pathPrefix: "},
		{"pathPrefix nested", func(c *Config) { c.Server.PathPrefix = "/auth/oauth2" }, ""},
		{"shutdownTimeout zero", func(c *Config) { c.Server.ShutdownTimeout.Duration = 0 }, "server.shutdownTimeout: must be greater than 0"},
		{"trustedProxies bad CIDR", func(c *Config) { c.Server.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/33"} }, `server.trustedProxies[1]: "10.0.0.0/33"`},
		{"trustedProxies garbage", func(c *Config) { c.Server.TrustedProxies = []string{"proxy"} }, "server.trustedProxies[0]: "},

		{"secrets required", func(c *Config) { c.Session.Secrets = nil },
			`session.secrets: required: set session.secrets or session.secretsFile (generate one with "extauth keygen")`},
		{"secret short", func(c *Config) { c.Session.Secrets = []string{stdSecret, short} },
			"session.secrets[1]: decodes to 16 bytes, need 32 or more"},
		{"secret not base64", func(c *Config) { c.Session.Secrets = []string{"!!not base64!!"} },
			"session.secrets[0]: not valid base64"},
		{"cookieName empty", func(c *Config) { c.Session.CookieName = "" }, "session.cookieName: required"},
		{"cookieName space", func(c *Config) { c.Session.CookieName = "my cookie" }, "session.cookieName: "},
		{"cookieName separator", func(c *Config) { c.Session.CookieName = "a;b" }, "session.cookieName: "},
		{"cookieName non-ASCII", func(c *Config) { c.Session.CookieName = "séance" }, "session.cookieName: "},
		{"cookieName _csrf", func(c *Config) { c.Session.CookieName = "auth_csrf" }, `session.cookieName: "auth_csrf" must not end in "_csrf"`},
		{"cookieName _digits", func(c *Config) { c.Session.CookieName = "auth_12" }, `must not end in "_<digits>"`},
		{"cookieName __Host-", func(c *Config) { c.Session.CookieName = "__Host-extauth" }, ""},
		{"sameSite unknown", func(c *Config) { c.Session.CookieSameSite = "sometimes" }, "session.cookieSameSite: must be lax, strict or none"},
		{"sameSite none insecure", func(c *Config) { c.Session.CookieSameSite = "None"; c.Session.CookieSecure = false },
			`session.cookieSameSite: "none" requires session.cookieSecure: true`},
		{"sameSite none secure", func(c *Config) { c.Session.CookieSameSite = "none" }, ""},
		{"cookiePath relative", func(c *Config) { c.Session.CookiePath = "app" }, "session.cookiePath: "},
		{"cookieDomain bad", func(c *Config) { c.Session.CookieDomain = "exa mple.com" }, "session.cookieDomain: "},
		{"cookieDomain two dots", func(c *Config) { c.Session.CookieDomain = "..example.com" }, "session.cookieDomain: "},
		{"cookieDomain hyphen", func(c *Config) { c.Session.CookieDomain = "-x.example.com" }, "session.cookieDomain: "},
		{"cookieDomain leading dot", func(c *Config) { c.Session.CookieDomain = ".example.com" }, ""},
		{"maxAge zero", func(c *Config) { c.Session.MaxAge.Duration = 0 }, "session.maxAge: must be greater than 0"},
		{"refreshBefore negative", func(c *Config) { c.Session.RefreshBefore.Duration = -time.Second }, "session.refreshBefore: must not be negative"},
		{"refreshBefore zero", func(c *Config) { c.Session.RefreshBefore.Duration = 0 }, ""},
		{"refreshGrace negative", func(c *Config) { c.Session.RefreshGrace.Duration = -time.Second }, "session.refreshGrace: must not be negative"},
		{"store unknown", func(c *Config) { c.Session.Store = "memcached" }, `session.store: must be "cookie" or "redis", got "memcached"`},
		{"redis", func(c *Config) { c.Session.Store = "redis" }, ""},
		{"redis without address", func(c *Config) { c.Session.Store = "redis"; c.Session.Redis.Address = "" }, "session.redis.address: required"},
		{"redis negative db", func(c *Config) { c.Session.Store = "redis"; c.Session.Redis.DB = -1 }, "session.redis.db: must not be negative"},
		{"redis ignored for cookie store", func(c *Config) { c.Session.Redis.Address = "" }, ""},
		{"redis enabled for cookie store needs an address", func(c *Config) { c.Session.Redis.Enabled = true; c.Session.Redis.Address = "" }, "session.redis.address: required"},
		{"redis empty keyPrefix", func(c *Config) { c.Session.Redis.Enabled = true; c.Session.Redis.KeyPrefix = "" }, "session.redis.keyPrefix: required"},
		{"redis sentinel without addresses", func(c *Config) {
			c.Session.Store = "redis"
			c.Session.Redis.Sentinel.MasterName = "mymaster"
		}, "session.redis.sentinel.addresses: required with session.redis.sentinel.masterName"},
		{"redis sentinel bad address", func(c *Config) {
			c.Session.Store = "redis"
			c.Session.Redis.Sentinel = RedisSentinel{MasterName: "m", Addresses: []string{"10.0.0.1:26379", "nope"}}
		}, "session.redis.sentinel.addresses[1]: "},
		{"redis sentinel", func(c *Config) {
			c.Session.Store = "redis"
			c.Session.Redis.Address = ""
			c.Session.Redis.Sentinel = RedisSentinel{MasterName: "m", Addresses: []string{"10.0.0.1:26379"}}
		}, ""},
		{"redis sentinel addresses without master", func(c *Config) {
			c.Session.Store = "redis"
			c.Session.Redis.Sentinel.Addresses = []string{"10.0.0.1:26379"}
		}, "session.redis.sentinel.masterName: required with session.redis.sentinel.addresses"},
		{"redis tls keys without tls", func(c *Config) { c.Session.Store = "redis"; c.Session.Redis.TLS.ServerName = "redis" }, "session.redis.tls.enabled: must be true"},

		{"emailDomains space", func(c *Config) { c.Authorization.EmailDomains = []string{"exa mple.com"} }, "authorization.emailDomains[0]: "},
		{"emailDomains bare wildcard prefix", func(c *Config) { c.Authorization.EmailDomains = []string{"*."} }, "authorization.emailDomains[0]: "},
		{"emailDomains glob", func(c *Config) { c.Authorization.EmailDomains = []string{"example.com", "*example.com"} }, "authorization.emailDomains[1]: "},
		{"emailDomains forms", func(c *Config) {
			c.Authorization.EmailDomains = []string{"*", "example.com", ".example.org", "*.example.net"}
		}, ""},
		{"emails without @", func(c *Config) { c.Authorization.Emails = []string{"alice"} }, `authorization.emails[0]: "alice" is not an email address`},
		{"emails two @", func(c *Config) { c.Authorization.Emails = []string{"a@b.com", "a@b@c"} }, "authorization.emails[1]: "},
		{"emails empty local part", func(c *Config) { c.Authorization.Emails = []string{"@b.com"} }, "authorization.emails[0]: "},
		{"groups empty", func(c *Config) { c.Authorization.Groups = []string{""} }, "authorization.groups[0]: must not be empty"},
		{"redirectDomains port zero", func(c *Config) { c.Authorization.RedirectDomains = []string{"example.com:0"} }, "authorization.redirectDomains[0]: "},
		{"redirectDomains port too big", func(c *Config) { c.Authorization.RedirectDomains = []string{"example.com:65536"} }, "authorization.redirectDomains[0]: "},
		{"redirectDomains port text", func(c *Config) { c.Authorization.RedirectDomains = []string{"example.com:http"} }, "authorization.redirectDomains[0]: "},
		{"redirectDomains glob", func(c *Config) { c.Authorization.RedirectDomains = []string{"*.example.com"} }, "authorization.redirectDomains[0]: "},
		{"redirectDomains URL", func(c *Config) { c.Authorization.RedirectDomains = []string{"https://example.com"} }, "authorization.redirectDomains[0]: "},
		{"redirectDomains forms", func(c *Config) {
			c.Authorization.RedirectDomains = []string{"app.example.com", ".example.com", "app.example.com:8443", ".example.com:*", "localhost:65535"}
		}, ""},
		{"bearerAudiences empty", func(c *Config) { c.Authorization.BearerAudiences = []string{"api", ""} }, "authorization.bearerAudiences[1]: must not be empty"},

		{"accessToken header without token", func(c *Config) { c.Headers.AccessToken = true; c.Session.StoreTokens.AccessToken = false },
			"headers.accessToken: requires session.storeTokens.accessToken: true"},
		{"authorization header without token", func(c *Config) { c.Headers.Authorization = true; c.Session.StoreTokens.AccessToken = false },
			"headers.authorization: requires session.storeTokens.accessToken: true"},

		{"level unknown", func(c *Config) { c.Logging.Level = "verbose" }, "logging.level: "},
		{"format unknown", func(c *Config) { c.Logging.Format = "xml" }, `logging.format: must be json or text, got "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			requireErrors(t, err, tt.want)
			// Each case breaks one rule, so exactly one problem is reported.
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 1 {
				t.Errorf("got %d problems, want 1: %v", n, err)
			}
		})
	}
}

// TestValidateChangesNothing: Validate only reports. A config validated
// (twice, and a copy of it) equals one built the same way and never
// validated, and every call gives the same answer.
func TestValidateChangesNothing(t *testing.T) {
	secrets := writeFile(t, "secrets", "# current\n"+urlSecret+"\n"+stdSecret+"\n")
	ca := writeFile(t, "ca.pem", string(testenv.SelfSignedCAPEM(t, "test CA")))
	tests := []struct {
		name  string
		build func() *Config
		valid bool
	}{
		{"derived values", func() *Config {
			c := validConfig()
			c.Server.TrustedProxies = []string{"10.1.2.3/8", "192.0.2.7", "2001:db8::1"}
			c.Session.CookieSameSite = "Strict"
			c.Session.Secrets = []string{urlSecret, stdSecret}
			return c
		}, true},
		{"parsed from files", func() *Config {
			return mustParse(t, `
server: {trustedProxies: ["10.0.0.0/8"]}
oidc: {issuerURL: "https://idp.example.com", clientID: extauth, caFile: "`+ca+`"}
session:
  cookieSameSite: NONE
  secretsFile: "`+secrets+`"
  redis: {address: "redis:6379", tls: {enabled: true, caFile: "`+ca+`"}}
`)
		}, true},
		{"invalid", func() *Config {
			c := validConfig()
			c.Server.TrustedProxies = []string{"10.0.0.0/8", "nope"}
			c.Session.CookieSameSite = "Sometimes"
			c.Session.Secrets = []string{stdSecret, "short"}
			return c
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, untouched := tt.build(), tt.build()
			first := c.Validate()
			if (first == nil) != tt.valid {
				t.Fatalf("Validate: %v", first)
			}
			if !reflect.DeepEqual(c, untouched) {
				t.Errorf("Validate changed the config:\n%+v\nwas\n%+v", c, untouched)
			}
			cp := *c
			for _, again := range []error{c.Validate(), cp.Validate()} {
				if fmt.Sprint(again) != fmt.Sprint(first) {
					t.Errorf("Validate again: %v, first %v", again, first)
				}
			}
			if !reflect.DeepEqual(c, untouched) || !reflect.DeepEqual(&cp, untouched) {
				t.Error("validating again changed the config")
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.1.2.3/8", "192.0.2.7", "2001:db8::1", "2001:db8::/32"})
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("2001:db8::/32"),
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ParseTrustedProxies = %v, %v; want %v", got, err, want)
	}
	if got, err := ParseTrustedProxies(nil); err != nil || len(got) != 0 {
		t.Errorf("ParseTrustedProxies(nil) = %v, %v", got, err)
	}
	got, err = ParseTrustedProxies([]string{"10.0.0.0/8", "nope", "192.0.2.1/33"})
	if got != nil {
		t.Errorf("prefixes along with an error: %v", got)
	}
	requireErrors(t, err, `server.trustedProxies[1]: "nope" is neither a CIDR nor an IP address`,
		`server.trustedProxies[2]: "192.0.2.1/33" is neither`)
}

func TestSameSite(t *testing.T) {
	for value, want := range map[string]http.SameSite{
		"lax": http.SameSiteLaxMode, "Strict": http.SameSiteStrictMode, "NONE": http.SameSiteNoneMode,
		"sometimes": 0, "": 0,
	} {
		s := Session{CookieSameSite: value}
		if got := s.SameSite(); got != want {
			t.Errorf("SameSite(%q) = %v, want %v", value, got, want)
		}
	}
}

func TestDecodeKeys(t *testing.T) {
	s := validConfig().Session
	s.Secrets = []string{urlSecret, stdSecret}
	if keys, err := s.DecodeKeys(); err != nil || !reflect.DeepEqual(keys, [][]byte{key, key}) {
		t.Errorf("DecodeKeys = %x, %v; want the key twice", keys, err)
	}
	if keys := s.MustDecodeKeys(); !reflect.DeepEqual(keys, [][]byte{key, key}) {
		t.Errorf("MustDecodeKeys = %x, want the key twice", keys)
	}

	s.Secrets = []string{stdSecret, "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 20))}
	keys, err := s.DecodeKeys()
	if keys != nil {
		t.Errorf("DecodeKeys returned keys along with an error: %x", keys)
	}
	requireErrors(t, err, "session.secrets[1]: not valid base64", "session.secrets[2]: decodes to 20 bytes, need 32 or more")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustDecodeKeys did not panic on a bad secret")
			}
		}()
		s.MustDecodeKeys()
	}()

	s.Secrets = nil
	if _, err := s.DecodeKeys(); err == nil || !strings.HasPrefix(err.Error(), "session.secrets: required") {
		t.Errorf("no secrets: %v", err)
	}
	s.SecretsFile = "/run/secrets/session"
	if _, err := s.DecodeKeys(); err == nil || !strings.HasPrefix(err.Error(), "session.secretsFile: not read") {
		t.Errorf("secretsFile not read: %v", err)
	}
}

func TestSecretEncodings(t *testing.T) {
	tests := []struct {
		name   string
		secret string
	}{
		{"standard padded", stdSecret},
		{"standard unpadded", base64.RawStdEncoding.EncodeToString(key)},
		{"URL-safe padded", base64.URLEncoding.EncodeToString(key)},
		{"URL-safe unpadded", urlSecret},
		{"surrounding spaces", "  " + stdSecret + " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, strings.Replace(minimal, stdSecret, tt.secret, 1))
			if keys, err := cfg.Session.DecodeKeys(); err != nil || len(keys) != 1 || !bytes.Equal(keys[0], key) {
				t.Errorf("DecodeKeys = %x, %v; want [%x]", keys, err, key)
			}
		})
	}
}

func TestSecretsFile(t *testing.T) {
	other := bytes.Repeat([]byte{7}, 48)
	path := writeFile(t, "secrets", "# current key first\n\n  "+urlSecret+"  \n# previous\n"+
		base64.StdEncoding.EncodeToString(other)+"\n")
	cfg := mustParse(t, `
oidc: {issuerURL: "https://idp.example.com", clientID: extauth}
session: {secretsFile: "`+path+`"}
`)
	if keys, err := cfg.Session.DecodeKeys(); err != nil || !reflect.DeepEqual(keys, [][]byte{key, other}) {
		t.Errorf("DecodeKeys = %x, %v; want %x", keys, err, [][]byte{key, other})
	}
}

func TestSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	short := writeFile(t, "short", "# keys\n"+stdSecret+"\n"+base64.StdEncoding.EncodeToString(make([]byte, 20))+"\n")
	comments := writeFile(t, "comments", "# nothing here\n\n")
	empty := writeFile(t, "empty", "\n")

	tests := []struct {
		name string
		oidc string // extra keys under oidc
		sess string // keys under session
		want []string
	}{
		{
			name: "secrets inline and from file",
			sess: `secrets: ["` + stdSecret + `"], secretsFile: "` + short + `"`,
			want: []string{"session.secrets: set together with session.secretsFile"},
		},
		{
			name: "secrets file missing",
			sess: `secretsFile: "` + missing + `"`,
			want: []string{"session.secretsFile: open " + missing + ": no such file or directory"},
		},
		{
			name: "secrets file with a short secret",
			sess: `secretsFile: "` + short + `"`,
			want: []string{"session.secretsFile line 3: decodes to 20 bytes, need 32 or more"},
		},
		{
			name: "secrets file with only comments",
			sess: `secretsFile: "` + comments + `"`,
			want: []string{"session.secretsFile: no secret in " + comments},
		},
		{
			name: "client secret inline and from file",
			oidc: `, clientSecret: s, clientSecretFile: "` + missing + `"`,
			sess: `secrets: ["` + stdSecret + `"]`,
			want: []string{"oidc.clientSecret: set together with oidc.clientSecretFile"},
		},
		{
			name: "client secret file missing",
			oidc: `, pkce: false, clientSecretFile: "` + missing + `"`,
			sess: `secrets: ["` + stdSecret + `"]`,
			want: []string{"oidc.clientSecretFile: open " + missing + ": no such file or directory"},
		},
		{
			name: "client secret file empty",
			oidc: `, clientSecretFile: "` + empty + `"`,
			sess: `secrets: ["` + stdSecret + `"]`,
			want: []string{"oidc.clientSecretFile: " + empty + " is empty"},
		},
		{
			name: "redis password file missing",
			sess: `secrets: ["` + stdSecret + `"], redis: {passwordFile: "` + missing + `"}`,
			want: []string{"session.redis.passwordFile: open " + missing},
		},
		{
			name: "file errors with validation errors",
			oidc: `, clientSecretFile: "` + missing + `"`,
			sess: `secretsFile: "` + missing + `", cookieName: "a b"`,
			want: []string{"oidc.clientSecretFile: open", "session.secretsFile: open", "session.cookieName: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "oidc: {issuerURL: \"https://idp.example.com\", clientID: extauth" + tt.oidc + "}\n" +
				"session: {" + tt.sess + "}\n"
			err := parseError(t, yaml)
			requireErrors(t, err, tt.want...)
			// A secret whose file failed is not also reported as missing.
			if strings.Contains(err.Error(), "required") {
				t.Errorf("unexpected 'required' in %v", err)
			}
		})
	}
}

func TestSecretsFromFiles(t *testing.T) {
	clientSecret := writeFile(t, "client-secret", "s3cr3t\n")
	redisPassword := writeFile(t, "redis-password", "  hunter2\n")
	cfg := mustParse(t, `
oidc:
  issuerURL: https://idp.example.com
  clientID: extauth
  pkce: false
  clientSecretFile: `+clientSecret+`
session:
  secrets: ["`+stdSecret+`"]
  store: redis
  redis: {passwordFile: `+redisPassword+`}
`)
	if cfg.OIDC.ClientSecret != "s3cr3t" {
		t.Errorf("clientSecret = %q, want the file's content trimmed", cfg.OIDC.ClientSecret)
	}
	if cfg.Session.Redis.Password != "hunter2" {
		t.Errorf("redis password = %q, want the file's content trimmed", cfg.Session.Redis.Password)
	}
	// Parse resolved the file, so validating again must not complain.
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate after Parse: %v", err)
	}
}

func TestRedisSecretsInlineOrFile(t *testing.T) {
	pw := writeFile(t, "redis-password", "hunter2\n")
	err := parseError(t, strings.Replace(minimal, "session:", "session:\n  redis: {password: x, passwordFile: "+pw+"}", 1))
	if !strings.Contains(err.Error(), "session.redis.password: set together with session.redis.passwordFile") {
		t.Errorf("both password and passwordFile: %v", err)
	}
	cfg := mustParse(t, strings.Replace(minimal, "session:", "session:\n  redis: {sentinel: {passwordFile: "+pw+"}, tls: {enabled: true}}", 1))
	if cfg.Session.Redis.Sentinel.Password != "hunter2" || !cfg.Session.Redis.TLS.Enabled {
		t.Errorf("sentinel password %q, tls %v", cfg.Session.Redis.Sentinel.Password, cfg.Session.Redis.TLS.Enabled)
	}
}

func TestSecretsNotInErrors(t *testing.T) {
	err := parseError(t, strings.Replace(minimal, `["`+stdSecret+`"]`, `"`+stdSecret+`"`, 1))
	if strings.Contains(err.Error(), stdSecret) {
		t.Errorf("error quotes the secret: %v", err)
	}
	requireErrors(t, err, "session.secrets: expected a list, got a string")
}

func TestCAFile(t *testing.T) {
	cert := testenv.SelfSignedCAPEM(t, "test CA")
	withCA := func(path string) string {
		return strings.Replace(minimal, "clientID: extauth", "clientID: extauth\n  caFile: "+path, 1)
	}

	t.Run("certificate", func(t *testing.T) {
		path := writeFile(t, "ca.pem", string(cert))
		cfg := mustParse(t, withCA(path))
		if cfg.OIDC.CAFile != path {
			t.Errorf("caFile = %q, want %q", cfg.OIDC.CAFile, path)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		path := writeFile(t, "ca.pem", "not a certificate\n")
		requireErrors(t, parseError(t, withCA(path)), "oidc.caFile: no PEM certificate in "+path)
	})
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.pem")
		requireErrors(t, parseError(t, withCA(path)), "oidc.caFile: open "+path)
	})
	t.Run("redis", func(t *testing.T) {
		path := writeFile(t, "redis-ca.pem", "not a certificate\n")
		err := parseError(t, strings.Replace(minimal, "session:", "session:\n  redis: {tls: {enabled: true, caFile: "+path+"}}", 1))
		requireErrors(t, err, "session.redis.tls.caFile: no PEM certificate in "+path)
	})
}

func TestReadCA(t *testing.T) {
	cert := testenv.SelfSignedCAPEM(t, "test CA")
	path := writeFile(t, "ca.pem", string(cert))
	if got, err := ReadCA(path); err != nil || !bytes.Equal(got, cert) {
		t.Errorf("ReadCA(certificate) = %q, %v; want the file's content", got, err)
	}
	if got, err := ReadCA(""); got != nil || err != nil {
		t.Errorf(`ReadCA("") = %q, %v; want nil, nil`, got, err)
	}
	garbage := writeFile(t, "garbage.pem", "not a certificate\n")
	if _, err := ReadCA(garbage); err == nil || err.Error() != "no PEM certificate in "+garbage {
		t.Errorf("ReadCA(garbage): %v", err)
	}
	missing := filepath.Join(t.TempDir(), "none.pem")
	if _, err := ReadCA(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadCA(missing): %v, want fs.ErrNotExist", err)
	}
}

func TestEmailDomainsDefault(t *testing.T) {
	tests := []struct {
		name  string
		authz string
		want  []string
	}{
		{"neither set", "", []string{"*"}},
		{"other keys only", "authorization: {groups: [admins]}", []string{"*"}},
		{"emails only", "authorization: {emails: [alice@x.com]}", nil},
		{"emails empty", "authorization: {emails: []}", nil},
		{"emailDomains explicit empty", "authorization: {emailDomains: []}", []string{}},
		{"emailDomains given", "authorization: {emailDomains: [example.com], emails: [alice@x.com]}", []string{"example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, minimal+tt.authz+"\n")
			if !reflect.DeepEqual(cfg.Authorization.EmailDomains, tt.want) {
				t.Errorf("emailDomains = %#v, want %#v", cfg.Authorization.EmailDomains, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		cfg, err := Load(writeFile(t, "extauth.yaml", minimal))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OIDC.ClientID != "extauth" {
			t.Errorf("clientID = %q", cfg.OIDC.ClientID)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.yaml")
		_, err := Load(path)
		requireErrors(t, err, path)
	})
	t.Run("invalid file", func(t *testing.T) {
		path := writeFile(t, "extauth.yaml", minimal+"servre: {}\n")
		cfg, err := Load(path)
		requireErrors(t, err, path, `unknown key "servre"`)
		if cfg != nil {
			t.Error("Load returned a Config along with an error")
		}
	})
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{`"90s"`, 90 * time.Second, ""},
		{`"168h"`, 168 * time.Hour, ""},
		{`"1h30m"`, 90 * time.Minute, ""},
		{`0`, 0, ""},
		{`"5 minutes"`, 0, `invalid duration "5 minutes"`},
		{`300`, 0, "expected a duration"},
		{`true`, 0, "expected a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				requireErrors(t, err, tt.wantErr)
				return
			}
			if err != nil || d.Duration != tt.want {
				t.Fatalf("got %v, %v; want %v", d, err, tt.want)
			}
			// It round-trips through MarshalJSON.
			b, err := json.Marshal(d)
			var back Duration
			if err != nil || json.Unmarshal(b, &back) != nil || back != d {
				t.Errorf("round trip: %s -> %v (%v)", b, back, err)
			}
		})
	}
	if b, _ := json.Marshal(Duration{90 * time.Second}); string(b) != `"1m30s"` {
		t.Errorf("Marshal(90s) = %s, want \"1m30s\"", b)
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		level string
		want  slog.Level
	}{
		{"debug", slog.LevelDebug},
		{"info", slog.LevelInfo},
		{"warn", slog.LevelWarn},
		{"error", slog.LevelError},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			c := Config{Logging: Logging{Level: tt.level}}
			if got := c.LogLevel(); got != tt.want {
				t.Errorf("LogLevel() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRedisAddressTurnsRedisOn: a file that says where Redis is uses it
// (in either store mode) unless it says enabled: false, which check-config
// then warns about.
func TestRedisAddressTurnsRedisOn(t *testing.T) {
	withRedis := func(redis string) string {
		return strings.Replace(minimal, "session:", "session:\n  redis: "+redis, 1)
	}
	tests := []struct {
		name    string
		redis   string
		used    bool
		warning bool
	}{
		{"address, no enabled", "{address: redis.auth:6379}", true, false},
		{"sentinel, no enabled", "{sentinel: {masterName: m, addresses: [s:26379]}}", true, false},
		{"address, enabled true", "{enabled: true, address: redis.auth:6379}", true, false},
		{"address, enabled false", "{enabled: false, address: redis.auth:6379}", false, true},
		{"other keys only", "{keyPrefix: \"x:\"}", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, withRedis(tc.redis))
			if cfg.Session.RedisUsed() != tc.used {
				t.Errorf("RedisUsed = %v, want %v", cfg.Session.RedisUsed(), tc.used)
			}
			if w := cfg.Warnings(); (len(w) > 0) != tc.warning {
				t.Errorf("warnings %q", w)
			}
			summary := strings.Join(cfg.Summary(), "\n")
			if tc.used != !strings.Contains(summary, "redis: not used") {
				t.Errorf("summary does not say whether Redis is used:\n%s", summary)
			}
		})
	}
	if cfg := mustParse(t, minimal); cfg.Session.RedisUsed() {
		t.Error("no session.redis: Redis used")
	}
	err := parseError(t, strings.Replace(minimal, "session:", "session:\n  store: redis\n  redis: {enabled: false, address: r:6379}", 1))
	requireErrors(t, err, "session.redis.enabled: false contradicts session.store: redis")
}

// TestPromptConsent: oidc.promptConsent is auto by default, takes always
// and never, refuses anything else, and the summary says how sign-ins ask
// for a refresh token.
func TestPromptConsent(t *testing.T) {
	if cfg := mustParse(t, minimal); cfg.OIDC.PromptConsent != PromptConsentAuto ||
		!strings.Contains(strings.Join(cfg.Summary(), "\n"), "prompt=consent once the provider withholds a refresh token") {
		t.Errorf("default %q, summary %q", cfg.OIDC.PromptConsent, cfg.Summary())
	}
	for value, want := range map[string]string{
		"always": "prompt=consent on every sign-in",
		"never":  "never with prompt=consent",
	} {
		cfg := mustParse(t, strings.Replace(minimal, "oidc:", "oidc:\n  promptConsent: "+value, 1))
		if got := strings.Join(cfg.Summary(), "\n"); !strings.Contains(got, want) {
			t.Errorf("%s: summary %q", value, got)
		}
	}
	err := parseError(t, strings.Replace(minimal, "oidc:", "oidc:\n  promptConsent: sometimes", 1))
	requireErrors(t, err, `oidc.promptConsent: "sometimes" is not auto, always or never`)
}
