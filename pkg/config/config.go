// Package config is extauth's configuration: the YAML file shape (SPEC.md,
// "Configuration"), its defaults, strict loading that names every bad key by
// its YAML path, and Validate, which reports every problem at once and
// changes nothing. What is derived from the file (session keys, trusted
// proxy prefixes, CA bundles, the SameSite attribute) comes from the
// functions that Validate checks with, called where it is used.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Session stores.
const (
	StoreCookie = "cookie" // the whole session lives in the cookie
	StoreRedis  = "redis"  // the cookie holds a ticket; the session lives in Redis
)

// Config is the whole configuration file. Every field states its default;
// Default returns a Config with all of them.
type Config struct {
	Server        Server        `json:"server"`
	OIDC          OIDC          `json:"oidc"`
	Session       Session       `json:"session"`
	Authorization Authorization `json:"authorization"`
	Headers       Headers       `json:"headers"`
	Logging       Logging       `json:"logging"`
	// Apps, when set, are the protected apps of this deployment, each with
	// its own client, cookie and rules (apps.go). Default none: the
	// top-level oidc, session and authorization are the one app.
	Apps []App `json:"apps"`
	// Assertion signs the identity of every allowed check as a short-lived
	// JWT for the upstream app to verify (pkg/assertion).
	Assertion Assertion `json:"assertion"`
}

// Server configures the listeners.
type Server struct {
	// Address is the main listener, host:port. Default ":4180".
	Address string `json:"address"`
	// MetricsAddress is the Prometheus listener, host:port, kept apart from
	// Address so that the ingress never exposes /metrics. Default ":9090".
	MetricsAddress string `json:"metricsAddress"`
	// PathPrefix is where every endpoint is mounted. Default "/oauth2", so the
	// ingress annotations known from oauth2-proxy keep working.
	PathPrefix string `json:"pathPrefix"`
	// ShutdownTimeout bounds the graceful shutdown. Default 15s.
	ShutdownTimeout Duration `json:"shutdownTimeout"`
	// TrustedProxies lists the CIDRs (or single IPs) whose X-Forwarded-*
	// headers are believed, e.g. Traefik's (ParseTrustedProxies). Default
	// empty: none.
	TrustedProxies []string `json:"trustedProxies"`
	// Pprof serves Go's profiler at /debug/pprof/ on the metrics listener,
	// which the ingress never exposes. Default false.
	Pprof bool `json:"pprof"`
}

// OIDC configures the OpenID Connect provider and this client.
type OIDC struct {
	// IssuerURL is the provider's issuer; discovery is read from
	// IssuerURL + "/.well-known/openid-configuration". Required.
	IssuerURL string `json:"issuerURL"`
	// ClientID is this client's ID at the provider. Required.
	ClientID string `json:"clientID"`
	// ClientSecret is the client secret. It may be empty only for a public
	// client (PKCE true). After Parse it holds the effective secret, also
	// when it came from ClientSecretFile. Default empty.
	ClientSecret string `json:"clientSecret"`
	// ClientSecretFile is a file holding the client secret (a mounted
	// Kubernetes Secret); surrounding whitespace is trimmed. Default empty.
	ClientSecretFile string `json:"clientSecretFile"`
	// RedirectURL is the callback URL registered at the provider. Default
	// empty: built from the request (X-Forwarded-Proto/Host).
	RedirectURL string `json:"redirectURL"`
	// Scopes are requested at sign-in; must contain "openid". Default
	// [openid profile email offline_access] (offline_access for a refresh token).
	Scopes []string `json:"scopes"`
	// PKCE sends an S256 code challenge (RFC 7636). Default true.
	PKCE bool `json:"pkce"`
	// ExtraAuthParams are added to the authorization request, e.g.
	// {audience: api://default}. Default empty.
	ExtraAuthParams map[string]string `json:"extraAuthParams"`
	// PromptConsent says when sign-ins that ask for offline_access send
	// prompt=consent, which OpenID Connect Core §11 requires for a refresh
	// token (node oidc-provider, Google) and others do without: "auto"
	// sends it once a provider answered a sign-in without a refresh token
	// (that sign-in is restarted with it), "always" on every such sign-in,
	// "never" never. extraAuthParams.prompt, when set, wins. Default "auto".
	PromptConsent string `json:"promptConsent"`
	// MicrosoftGraphURL is where Entra ID group overage is resolved: an ID
	// token that names its groups in _claim_names instead of a groups
	// claim (more than 200) has them read from Microsoft Graph with the
	// access token. Default https://graph.microsoft.com (sovereign clouds
	// have their own).
	MicrosoftGraphURL string `json:"microsoftGraphURL"`
	// RevocationURL is the RFC 7009 endpoint. Default empty: discovery's
	// revocation_endpoint.
	RevocationURL string `json:"revocationURL"`
	// EndSessionURL is the RP-initiated logout endpoint. Default empty:
	// discovery's end_session_endpoint.
	EndSessionURL string `json:"endSessionURL"`
	// PostLogoutRedirectURL is sent as post_logout_redirect_uri at sign-out.
	// Default empty: a valid rd, if any.
	PostLogoutRedirectURL string `json:"postLogoutRedirectURL"`
	// CAFile is an extra PEM CA bundle for talking to the provider (read
	// with ReadCA). Default empty: the system roots only.
	CAFile string `json:"caFile"`
	// Claims names the ID token claims extauth reads.
	Claims Claims `json:"claims"`
}

// oidc.promptConsent values.
const (
	PromptConsentAuto   = "auto"
	PromptConsentAlways = "always"
	PromptConsentNever  = "never"
)

// Claims names the claims that carry the user's identity.
type Claims struct {
	// User becomes X-Auth-Request-User. Default "sub".
	User string `json:"user"`
	// Email is checked against authorization and becomes X-Auth-Request-Email.
	// Default "email".
	Email string `json:"email"`
	// Groups is checked against authorization and becomes
	// X-Auth-Request-Groups. Default "groups".
	Groups string `json:"groups"`
	// PreferredUsername becomes X-Auth-Request-Preferred-Username. Default
	// "preferred_username".
	PreferredUsername string `json:"preferredUsername"`
	// Keep are claims kept in the session for claim rules: the
	// allowed_claims of an annotation can test only these and the claims
	// an app's authorization.claims names (kept without being listed).
	// Default empty.
	Keep []string `json:"keep"`
}

// Session configures the session cookie and its store.
type Session struct {
	// CookieName names the session cookie; the flow cookie is
	// CookieName+"_csrf" and split parts are CookieName+"_<n>". Default
	// "_extauth".
	CookieName string `json:"cookieName"`
	// CookieDomain shares one sign-in across hosts, e.g. ".example.com".
	// Default empty: host-only cookie.
	CookieDomain string `json:"cookieDomain"`
	// CookiePath is the cookie's Path. Default "/".
	CookiePath string `json:"cookiePath"`
	// CookieSecure sets the Secure attribute. Default true.
	CookieSecure bool `json:"cookieSecure"`
	// CookieSameSite is lax, strict or none, in any case (SameSite); none
	// requires CookieSecure. Default "lax".
	CookieSameSite string `json:"cookieSameSite"`
	// MaxAge is the absolute lifetime of a session. Default 168h.
	MaxAge Duration `json:"maxAge"`
	// RefreshBefore: the check refreshes the access token when it expires
	// within this long. Default 60s.
	RefreshBefore Duration `json:"refreshBefore"`
	// RefreshGrace: while the provider cannot be reached, a session keeps
	// passing this long past its access token's expiry. Default 5m.
	RefreshGrace Duration `json:"refreshGrace"`
	// RefreshReuseWindow: after a refresh, checks that still carry the old
	// cookie get the refreshed tokens for this long instead of redeeming
	// the rotated refresh token again (which reuse-detecting providers
	// punish by revoking the whole token family). Default 30s.
	RefreshReuseWindow Duration `json:"refreshReuseWindow"`
	// StoreTokens selects which provider tokens the session keeps.
	StoreTokens StoreTokens `json:"storeTokens"`
	// Secrets are base64 (standard or URL-safe, padding optional) keys of 32
	// bytes or more (DecodeKeys); the first encodes, all decode, so keys can
	// be rotated.
	// After Parse it holds the effective secrets, also when they came from
	// SecretsFile. Default empty; one is required.
	Secrets []string `json:"secrets"`
	// SecretsFile holds one secret a line; blank lines and lines starting
	// with # are ignored. Default empty.
	SecretsFile string `json:"secretsFile"`
	// Store is where sessions live: cookie or redis. Default "cookie".
	Store string `json:"store"`
	// Redis is used when Store is redis.
	Redis Redis `json:"redis"`

	// secretLines[i] is the SecretsFile line of Secrets[i], so that errors
	// point into the file; nil when the secrets were given inline.
	secretLines []int
}

// StoreTokens selects which provider tokens a session keeps, like
// mozilla-django-oidc's OIDC_STORE_* settings. Fewer tokens, smaller cookie.
type StoreTokens struct {
	// AccessToken is needed for headers.accessToken/authorization and for
	// revocation. Default true.
	AccessToken bool `json:"accessToken"`
	// IDToken is needed for id_token_hint at sign-out (Okta requires it).
	// Default true.
	IDToken bool `json:"idToken"`
	// RefreshToken is needed to refresh during the check; without it the
	// session ends with the access token. Default true.
	RefreshToken bool `json:"refreshToken"`
}

// Redis configures the Redis that replicas share. With session.store redis
// it holds the sessions; with either store it coordinates refreshes among
// replicas (one token request per rotation, whichever replica gets the
// checks) and carries back-channel logouts to every replica.
type Redis struct {
	// Enabled turns Redis on for the cookie store (refresh coordination and
	// shared logouts); session.store redis implies it, and so does a file
	// that sets address (or sentinel.masterName) and leaves enabled out.
	// false in the file turns Redis off even then. Default false.
	Enabled bool `json:"enabled"`
	// ignored: the file names a Redis and says enabled: false.
	ignored bool
	// Address is host:port. Default "127.0.0.1:6379". Unused with Sentinel.
	Address string `json:"address"`
	// Username is the ACL user (Redis 6+). Default empty: the default user.
	Username string `json:"username"`
	// Password, or PasswordFile holding it. Default empty: no password.
	Password     string `json:"password"`
	PasswordFile string `json:"passwordFile"`
	// DB is the database number. Default 0.
	DB int `json:"db"`
	// KeyPrefix prefixes every key extauth writes. Default "extauth:".
	KeyPrefix string `json:"keyPrefix"`
	// TLS connects with TLS.
	TLS RedisTLS `json:"tls"`
	// Sentinel, when MasterName is set, finds the master through Redis Sentinel.
	Sentinel RedisSentinel `json:"sentinel"`
}

// RedisTLS configures TLS to Redis (and to the Sentinels).
type RedisTLS struct {
	Enabled bool `json:"enabled"`
	// CAFile is a PEM CA bundle for the server's certificate (read with
	// ReadCA). Default: the system's.
	CAFile string `json:"caFile"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `json:"serverName"`
	// InsecureSkipVerify turns certificate checks off: for tests only.
	InsecureSkipVerify bool `json:"insecureSkipVerify"`
}

// RedisSentinel configures Redis Sentinel.
type RedisSentinel struct {
	// MasterName is the name of the monitored master; empty: no Sentinel.
	MasterName string `json:"masterName"`
	// Addresses are the Sentinels' host:port.
	Addresses []string `json:"addresses"`
	// Password, or PasswordFile holding it, for the Sentinels themselves.
	Password     string `json:"password"`
	PasswordFile string `json:"passwordFile"`
}

// RedisUsed reports whether extauth talks to Redis at all.
func (s *Session) RedisUsed() bool { return s.Store == StoreRedis || s.Redis.Enabled }

// Warnings are what a valid configuration does that its author may not
// expect; check-config prints them and serve logs them.
func (c *Config) Warnings() []string {
	var w []string
	if c.Session.Redis.ignored {
		w = append(w, "session.redis.enabled is false: the Redis at session.redis is not used, so replicas do not share refreshes "+
			"(a rotated refresh token can be replayed) nor back-channel logouts; remove enabled or set it true")
	}
	return w
}

// Summary says in a few lines what extauth will do with this configuration.
func (c *Config) Summary() []string {
	s := c.Session
	lines := []string{fmt.Sprintf("provider: %s (client %s)", c.OIDC.IssuerURL, c.OIDC.ClientID)}
	where := s.Redis.Address
	if s.Redis.Sentinel.MasterName != "" {
		where = "sentinel master " + s.Redis.Sentinel.MasterName
	}
	switch {
	case s.Store == StoreRedis:
		lines = append(lines, "sessions: in Redis ("+where+"), a ticket in the cookie "+s.CookieName,
			"redis: sessions, one refresh across replicas, shared back-channel logouts")
	case s.Redis.Enabled:
		lines = append(lines, "sessions: in the cookie "+s.CookieName,
			"redis: "+where+": one refresh across replicas, shared back-channel logouts")
	default:
		lines = append(lines, "sessions: in the cookie "+s.CookieName,
			"redis: not used: each replica refreshes and keeps back-channel logouts on its own (fine for one replica)")
	}
	lines = append(lines, c.OIDC.refreshSummary())
	if len(c.Apps) > 0 && !c.HasClient() {
		lines[0] = "provider: none at the top level: a host no app has is refused (403)"
	}
	if a := c.Assertion; a.Enabled {
		lines = append(lines, fmt.Sprintf("assertion: %s on every allowed check, iss %s, lifetime %s, signed with %s (%d previous keys published); JWKS at /.well-known/jwks.json",
			a.Header, a.Issuer, a.Lifetime.Duration, a.KeyFile, len(a.PreviousKeyFiles)))
	}
	for _, a := range c.Apps {
		line := fmt.Sprintf("app %s: %s; client %s at %s; cookie %s", a.Name,
			strings.Join(a.Hosts, ", "), a.OIDC.ClientID, a.OIDC.IssuerURL, a.Session.CookieName)
		for _, b := range a.Authorization.Bearer {
			line += fmt.Sprintf("; bearer tokens of %s for %s", b.IssuerURL, strings.Join(b.Audiences, ", "))
		}
		lines = append(lines, line)
	}
	return lines
}

// refreshSummary says how sign-ins ask for a refresh token.
func (o *OIDC) refreshSummary() string {
	prompt, chosen := o.ExtraAuthParams["prompt"]
	switch {
	case !slices.Contains(o.Scopes, "offline_access"):
		return "refresh tokens: offline_access not in oidc.scopes; only providers that issue them anyway (or for access_type=offline) give one"
	case chosen:
		return "refresh tokens: offline_access asked, with prompt=" + prompt + " from oidc.extraAuthParams"
	case o.PromptConsent == PromptConsentAlways:
		return "refresh tokens: offline_access asked, with prompt=consent on every sign-in"
	case o.PromptConsent == PromptConsentNever:
		return "refresh tokens: offline_access asked, never with prompt=consent (a sign-in without a refresh token is only warned about)"
	}
	return "refresh tokens: offline_access asked; prompt=consent once the provider withholds a refresh token (oidc.promptConsent: auto)"
}

// Authorization decides who may pass once signed in, and where sign-in may
// return to.
type Authorization struct {
	// EmailDomains admits emails in these domains: "*" for any,
	// "example.com" exactly, ".example.com" or "*.example.com" for any
	// subdomain. Default ["*"], but only when the file sets neither
	// emailDomains nor emails: a file listing emails alone admits only them.
	EmailDomains []string `json:"emailDomains"`
	// Emails admits these addresses. Default empty.
	Emails []string `json:"emails"`
	// Groups admits members of any of these groups. Default empty: no
	// group requirement.
	Groups []string `json:"groups"`
	// RedirectDomains are hosts, besides the request's own, that sign-in
	// may return to: "app.example.com" exactly, ".example.com" for any
	// subdomain, optionally with ":port" or ":*". Default empty.
	RedirectDomains []string `json:"redirectDomains"`
	// BearerTokens lets a request without a session pass with
	// "Authorization: Bearer <JWT>" signed by the provider. Default false.
	BearerTokens bool `json:"bearerTokens"`
	// BearerAudiences are the audiences a bearer token may carry. Default
	// empty: the client ID.
	BearerAudiences []string `json:"bearerAudiences"`
}

// Headers switches the check's X-Auth-Request-* response headers.
type Headers struct {
	// User sends X-Auth-Request-User. Default true.
	User bool `json:"user"`
	// Email sends X-Auth-Request-Email. Default true.
	Email bool `json:"email"`
	// PreferredUsername sends X-Auth-Request-Preferred-Username. Default true.
	PreferredUsername bool `json:"preferredUsername"`
	// Groups sends X-Auth-Request-Groups, comma-separated. Default true.
	Groups bool `json:"groups"`
	// AccessToken sends X-Auth-Request-Access-Token. Default false: tokens
	// leave extauth only when asked for.
	AccessToken bool `json:"accessToken"`
	// Authorization sends "Authorization: Bearer <access token>". Default
	// false.
	Authorization bool `json:"authorization"`
}

// Assertion configures the signed identity header.
type Assertion struct {
	// Enabled puts the header on every 200 of every check endpoint (not
	// on skipped routes). Default false.
	Enabled bool `json:"enabled"`
	// Header is the header's name. Default "X-Auth-Request-Jwt".
	Header string `json:"header"`
	// KeyFile is the PEM signing key: PKCS#8 EC P-256 (ES256) or Ed25519
	// (EdDSA); `extauth keygen --assertion` writes one. Every replica reads
	// the same file. Required when enabled.
	KeyFile string `json:"keyFile"`
	// PreviousKeyFiles are keys no longer signing but still published in
	// the JWKS while tokens they signed may be in use (a rotation).
	PreviousKeyFiles []string `json:"previousKeyFiles"`
	// Issuer is the tokens' iss, e.g. https://auth.example.com. Required
	// when enabled.
	Issuer string `json:"issuer"`
	// Lifetime is how long a token is valid (exp - iat). Default 5m; 30s
	// to 1h.
	Lifetime Duration `json:"lifetime"`
}

// Logging configures the process logger.
type Logging struct {
	// Level is debug, info, warn or error. Default "info".
	Level string `json:"level"`
	// Format is json or text. Default "json".
	Format string `json:"format"`
}

// Default returns the configuration with every default from SPEC.md. The
// required keys (oidc.issuerURL, oidc.clientID, session secrets) are empty.
func Default() *Config {
	return &Config{
		Server: Server{
			Address:         ":4180",
			MetricsAddress:  ":9090",
			PathPrefix:      "/oauth2",
			ShutdownTimeout: Duration{15 * time.Second},
		},
		OIDC: OIDC{
			Scopes:            []string{"openid", "profile", "email", "offline_access"},
			PKCE:              true,
			PromptConsent:     PromptConsentAuto,
			MicrosoftGraphURL: "https://graph.microsoft.com",
			Claims: Claims{
				User:              "sub",
				Email:             "email",
				Groups:            "groups",
				PreferredUsername: "preferred_username",
			},
		},
		Session: Session{
			CookieName:         "_extauth",
			CookiePath:         "/",
			CookieSecure:       true,
			CookieSameSite:     "lax",
			MaxAge:             Duration{168 * time.Hour},
			RefreshBefore:      Duration{60 * time.Second},
			RefreshGrace:       Duration{5 * time.Minute},
			RefreshReuseWindow: Duration{30 * time.Second},
			StoreTokens:        StoreTokens{AccessToken: true, IDToken: true, RefreshToken: true},
			Store:              StoreCookie,
			Redis:              Redis{Address: "127.0.0.1:6379", KeyPrefix: "extauth:"},
		},
		Authorization: Authorization{EmailDomains: []string{"*"}},
		Headers:       Headers{User: true, Email: true, PreferredUsername: true, Groups: true},
		Logging:       Logging{Level: "info", Format: "json"},
		Assertion:     Assertion{Header: "X-Auth-Request-Jwt", Lifetime: Duration{5 * time.Minute}},
	}
}

// LogLevel is Logging.Level as a slog.Level; info when unset or unknown
// (Validate rejects unknown levels).
func (c *Config) LogLevel() slog.Level {
	switch c.Logging.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Duration is a time.Duration written as a Go duration string ("90s",
// "168h") in the file, since encoding/json would otherwise want nanoseconds.
type Duration struct {
	time.Duration
}

// UnmarshalJSON accepts a Go duration string, or the number 0.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		// A bare 0 is unambiguous; any other number lacks its unit.
		if strings.TrimSpace(string(b)) == "0" {
			d.Duration = 0
			return nil
		}
		return fmt.Errorf("expected a duration such as \"90s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}
