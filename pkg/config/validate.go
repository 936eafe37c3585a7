package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MinSecretLen is the least number of bytes a session secret decodes to.
const MinSecretLen = 32

// problems collects validation errors, each prefixed with its YAML path.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (p problems) err() error {
	return errors.Join(p...)
}

// Validate reports every problem in c at once (errors.Join), each starting
// with its YAML path. It changes nothing: what is derived from the file
// (Session.DecodeKeys, ParseTrustedProxies, Session.SameSite, ReadCA) is
// derived by those functions, which Validate checks with. It does not read
// files: Parse and Load do that first, and report the files' problems
// themselves, so Validate does not ask for a secret whose …File key is set.
func (c *Config) Validate() error {
	var p problems
	c.validate(&p)
	return p.err()
}

func (c *Config) validate(p *problems) {
	c.Server.validate(p)
	if len(c.Apps) == 0 || c.HasClient() {
		c.OIDC.validate(p)
	} else {
		c.OIDC.validateShared(p)
	}
	c.validateApps(p)
	c.Session.validate(p)
	c.Authorization.validate(p)
	c.validateHeaders(p)
	c.Assertion.validate(p)
	c.Logging.validate(p)
}

// identityHeaderNames are the headers the check sets besides the assertion.
var identityHeaderNames = []string{"X-Auth-Request-User", "X-Auth-Request-Email",
	"X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups", "X-Auth-Request-Access-Token",
	"Authorization", "Set-Cookie", "Location", "Content-Type", "Content-Length"}

func (a *Assertion) validate(p *problems) {
	if !a.Enabled {
		return
	}
	switch {
	case a.Header == "":
		p.add("assertion.header", "required")
	case !isToken(a.Header) || len(a.Header) > 64:
		p.add("assertion.header", "%q is not a header name", a.Header)
	case slices.ContainsFunc(identityHeaderNames, func(n string) bool { return strings.EqualFold(n, a.Header) }):
		p.add("assertion.header", "%q is a header extauth sets for something else", a.Header)
	}
	if a.KeyFile == "" {
		p.add("assertion.keyFile", "required when assertion.enabled: a PEM EC P-256 or Ed25519 key (extauth keygen --assertion)")
	}
	if a.Issuer == "" {
		p.add("assertion.issuer", "required when assertion.enabled: the tokens' iss, e.g. https://auth.example.com")
	}
	if d := a.Lifetime.Duration; d < 30*time.Second || d > time.Hour {
		p.add("assertion.lifetime", "must be between 30s and 1h, got %s", d)
	}
}

func (s *Server) validate(p *problems) {
	checkHostPort(p, "server.address", s.Address)
	checkHostPort(p, "server.metricsAddress", s.MetricsAddress)
	if s.Address != "" && s.Address == s.MetricsAddress {
		p.add("server.metricsAddress", "must differ from server.address, so that /metrics stays off the main listener")
	}
	if msg := pathPrefixProblem(s.PathPrefix); msg != "" {
		p.add("server.pathPrefix", "%q %s", s.PathPrefix, msg)
	}
	if s.ShutdownTimeout.Duration <= 0 {
		p.add("server.shutdownTimeout", "must be greater than 0")
	}
	parseTrustedProxies(p, s.TrustedProxies)
}

func checkHostPort(p *problems, path, addr string) {
	if addr == "" {
		p.add(path, "required")
		return
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		p.add(path, "%q is not host:port (e.g. \":4180\")", addr)
	}
}

// pathPrefixProblem says what is wrong with a path prefix, or "". Every
// endpoint path is prefix+"/name", so a trailing slash would double it.
func pathPrefixProblem(s string) string {
	switch {
	case !strings.HasPrefix(s, "/"):
		return `must start with "/"`
	case strings.HasSuffix(s, "/"):
		return `must not end with "/"`
	case strings.ContainsAny(s, "?# ") || hasControl(s):
		return `must not contain "?", "#", spaces or control characters`
	}
	return ""
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// ParseTrustedProxies parses server.trustedProxies: each a CIDR or a
// single IP, which becomes a /32 or /128. Every entry that is neither is
// reported at its YAML path. Validate checks the list with it;
// handlers.NewRouter takes its prefixes.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var p problems
	prefixes := parseTrustedProxies(&p, list)
	if err := p.err(); err != nil {
		return nil, err
	}
	return prefixes, nil
}

// parseTrustedProxies parses list, reporting each entry that is neither a
// CIDR nor an IP address.
func parseTrustedProxies(p *problems, list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for i, raw := range list {
		prefix, err := parsePrefix(raw)
		if err != nil {
			p.add(fmt.Sprintf("server.trustedProxies[%d]", i), "%q is neither a CIDR nor an IP address", raw)
			continue
		}
		out = append(out, prefix)
	}
	return out
}

// parsePrefix accepts a CIDR or a single IP, which becomes a /32 or /128.
func parsePrefix(s string) (netip.Prefix, error) {
	if prefix, err := netip.ParsePrefix(s); err == nil {
		return prefix.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// reservedAuthParams are set by extauth itself; letting extraAuthParams
// override them would break state, nonce or PKCE checks.
var reservedAuthParams = []string{
	"client_id", "code_challenge", "code_challenge_method", "nonce",
	"redirect_uri", "response_type", "scope", "state",
}

// validate checks a client: issuer, client ID and secret are required.
func (o *OIDC) validate(p *problems) {
	if o.IssuerURL == "" {
		p.add("oidc.issuerURL", "required")
	}
	if o.ClientID == "" {
		p.add("oidc.clientID", "required")
	}
	o.validateShared(p)
}

// validateShared checks what the top-level oidc holds for apps to inherit
// when it names no client of its own: every key that is set.
func (o *OIDC) validateShared(p *problems) {
	if o.IssuerURL != "" && checkURL(p, "oidc.issuerURL", o.IssuerURL) {
		// Discovery appends /.well-known/openid-configuration to the issuer,
		// and the ID token's iss must equal it exactly.
		if u, _ := url.Parse(o.IssuerURL); u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
			p.add("oidc.issuerURL", "must not have a query or fragment")
		}
	}
	if o.ClientID != "" && o.ClientSecret == "" && o.ClientSecretFile == "" && !o.PKCE {
		p.add("oidc.clientSecret", "required unless oidc.pkce is true (public client)")
	}
	for _, u := range []struct{ path, value string }{
		{"oidc.redirectURL", o.RedirectURL},
		{"oidc.revocationURL", o.RevocationURL},
		{"oidc.endSessionURL", o.EndSessionURL},
		{"oidc.postLogoutRedirectURL", o.PostLogoutRedirectURL},
		{"oidc.microsoftGraphURL", o.MicrosoftGraphURL},
	} {
		if u.value != "" {
			checkURL(p, u.path, u.value)
		}
	}
	o.validateScopes(p)
	switch o.PromptConsent {
	case PromptConsentAuto, PromptConsentAlways, PromptConsentNever:
	default:
		p.add("oidc.promptConsent", "%q is not auto, always or never", o.PromptConsent)
	}
	for key := range o.ExtraAuthParams {
		if slices.Contains(reservedAuthParams, key) {
			p.add("oidc.extraAuthParams."+key, "is set by extauth and cannot be overridden")
		}
	}
	for _, c := range []struct{ path, value string }{
		{"oidc.claims.user", o.Claims.User},
		{"oidc.claims.email", o.Claims.Email},
		{"oidc.claims.groups", o.Claims.Groups},
		{"oidc.claims.preferredUsername", o.Claims.PreferredUsername},
	} {
		if c.value == "" {
			p.add(c.path, "required")
		}
	}
}

func (o *OIDC) validateScopes(p *problems) {
	if !slices.Contains(o.Scopes, "openid") {
		p.add("oidc.scopes", `must contain "openid"`)
	}
	for i, s := range o.Scopes {
		// Scopes are sent space-separated, so one entry must be one scope.
		if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			p.add(fmt.Sprintf("oidc.scopes[%d]", i), "%q is not a single scope", s)
		}
	}
}

// checkURL requires an absolute http or https URL with a host, and reports
// whether it was one.
func checkURL(p *problems, path, raw string) bool {
	u, err := url.Parse(raw)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
		p.add(path, "%q is not an absolute http or https URL", raw)
		return false
	case u.User != nil:
		// Not quoted: the user info may hold a password.
		p.add(path, "must not contain user info")
		return false
	}
	return true
}

// cookieSuffixRE matches the suffixes extauth appends to the session cookie's
// name for split parts ("_0", "_1", …); the flow cookie ends in "_csrf".
var cookieSuffixRE = regexp.MustCompile(`_[0-9]+$`)

func (s *Session) validate(p *problems) {
	// Parse reports a secretsFile it could not read; then Secrets is empty.
	if len(s.Secrets) == 0 && s.SecretsFile == "" {
		p.add("session.secrets", "%s", secretsRequired)
	}
	s.decodeKeys(p)
	s.validateCookie(p)
	if s.MaxAge.Duration <= 0 {
		p.add("session.maxAge", "must be greater than 0")
	}
	if s.RefreshBefore.Duration < 0 {
		p.add("session.refreshBefore", "must not be negative")
	}
	if s.RefreshGrace.Duration < 0 {
		p.add("session.refreshGrace", "must not be negative")
	}
	if s.RefreshReuseWindow.Duration < 0 || s.RefreshReuseWindow.Duration > maxReuseWindow {
		p.add("session.refreshReuseWindow", "must be between 0 and 10m")
	}
	switch s.Store {
	case StoreCookie, StoreRedis:
	default:
		p.add("session.store", "must be %q or %q, got %q", StoreCookie, StoreRedis, s.Store)
	}
	if s.RedisUsed() {
		s.Redis.validate(p)
	}
}

func (r *Redis) validate(p *problems) {
	if r.Sentinel.MasterName == "" {
		checkHostPort(p, "session.redis.address", r.Address)
		if len(r.Sentinel.Addresses) > 0 {
			p.add("session.redis.sentinel.masterName", "required with session.redis.sentinel.addresses")
		}
	} else {
		if len(r.Sentinel.Addresses) == 0 {
			p.add("session.redis.sentinel.addresses", "required with session.redis.sentinel.masterName")
		}
		for i, a := range r.Sentinel.Addresses {
			checkHostPort(p, fmt.Sprintf("session.redis.sentinel.addresses[%d]", i), a)
		}
	}
	if r.DB < 0 {
		p.add("session.redis.db", "must not be negative")
	}
	if r.KeyPrefix == "" {
		p.add("session.redis.keyPrefix", "required: extauth's keys must not mix with others")
	}
	if !r.TLS.Enabled && (r.TLS.CAFile != "" || r.TLS.ServerName != "" || r.TLS.InsecureSkipVerify) {
		p.add("session.redis.tls.enabled", "must be true when other session.redis.tls keys are set")
	}
}

// DecodeKeys decodes Secrets into the session keys, in order: the first
// encodes, all decode. Each secret that does not decode is reported at its
// YAML path (or its session.secretsFile line); no error quotes a secret.
// Validate checks the secrets with it; server.New takes its keys.
func (s *Session) DecodeKeys() ([][]byte, error) {
	var p problems
	keys := s.decodeKeys(&p)
	if err := p.err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if s.SecretsFile != "" {
			return nil, errors.New("session.secretsFile: not read: Load or Parse reads it into session.secrets")
		}
		return nil, errors.New("session.secrets: " + secretsRequired)
	}
	return keys, nil
}

const secretsRequired = `required: set session.secrets or session.secretsFile (generate one with "extauth keygen")`

// MustDecodeKeys is DecodeKeys for a configuration that Parse or Validate
// accepted; it panics otherwise.
func (s *Session) MustDecodeKeys() [][]byte {
	keys, err := s.DecodeKeys()
	if err != nil {
		panic("config: " + err.Error())
	}
	return keys
}

// decodeKeys decodes Secrets, in order, reporting each one that does not
// decode.
func (s *Session) decodeKeys(p *problems) [][]byte {
	keys := make([][]byte, 0, len(s.Secrets))
	for i, secret := range s.Secrets {
		key, err := decodeSecret(secret)
		if err != nil {
			p.add(s.secretPath(i), "%v", err)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// secretPath names where Secrets[i] came from: the file's line, or the list.
func (s *Session) secretPath(i int) string {
	if len(s.secretLines) == len(s.Secrets) {
		return fmt.Sprintf("session.secretsFile line %d", s.secretLines[i])
	}
	return fmt.Sprintf("session.secrets[%d]", i)
}

// decodeSecret decodes standard or URL-safe base64, padded or not. The
// error never quotes the secret.
func decodeSecret(secret string) ([]byte, error) {
	secret = strings.TrimRight(strings.TrimSpace(secret), "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(secret, "-_") {
		enc = base64.RawURLEncoding
	}
	key, err := enc.DecodeString(secret)
	if err != nil {
		return nil, errors.New("not valid base64 (standard or URL-safe)")
	}
	if len(key) < MinSecretLen {
		return nil, fmt.Errorf("decodes to %d bytes, need %d or more", len(key), MinSecretLen)
	}
	return key, nil
}

func (s *Session) validateCookie(p *problems) {
	switch name := s.CookieName; {
	case name == "":
		p.add("session.cookieName", "required")
	case !isToken(name):
		p.add("session.cookieName", "%q may contain only RFC 6265 token characters", name)
	case strings.HasSuffix(name, "_csrf"):
		p.add("session.cookieName", `%q must not end in "_csrf" (the flow cookie's suffix)`, name)
	case cookieSuffixRE.MatchString(name):
		p.add("session.cookieName", `%q must not end in "_<digits>" (the suffix of split cookie parts)`, name)
	}
	switch s.SameSite() {
	case http.SameSiteLaxMode, http.SameSiteStrictMode:
	case http.SameSiteNoneMode:
		// Browsers drop SameSite=None cookies without Secure.
		if !s.CookieSecure {
			p.add("session.cookieSameSite", `"none" requires session.cookieSecure: true`)
		}
	default:
		p.add("session.cookieSameSite", "must be lax, strict or none, got %q", s.CookieSameSite)
	}
	if !strings.HasPrefix(s.CookiePath, "/") {
		p.add("session.cookiePath", "%q must start with \"/\"", s.CookiePath)
	}
	if d := s.CookieDomain; d != "" && !validHostname(strings.TrimPrefix(d, ".")) {
		p.add("session.cookieDomain", "%q is not a hostname (optionally with a leading dot)", d)
	}
}

// SameSite is session.cookieSameSite, in any case, as the cookie attribute;
// 0 when it is none of lax, strict and none (which Validate rejects).
func (s *Session) SameSite() http.SameSite {
	switch strings.ToLower(s.CookieSameSite) {
	case "lax":
		return http.SameSiteLaxMode
	case "strict":
		return http.SameSiteStrictMode
	case "none":
		return http.SameSiteNoneMode
	}
	return 0
}

// isToken reports whether s is an RFC 6265 cookie-name token: visible ASCII
// without separators.
func isToken(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return false
		}
	}
	return s != ""
}

// validHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits and inner hyphens.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (a *Authorization) validate(p *problems) {
	for i, d := range a.EmailDomains {
		if !validEmailDomain(d) {
			p.add(fmt.Sprintf("authorization.emailDomains[%d]", i),
				`%q is not "*", a domain, or ".domain" / "*.domain" for its subdomains`, d)
		}
	}
	for i, e := range a.Emails {
		local, domain, _ := strings.Cut(e, "@")
		if strings.Count(e, "@") != 1 || local == "" || domain == "" {
			p.add(fmt.Sprintf("authorization.emails[%d]", i), "%q is not an email address", e)
		}
	}
	for i, g := range a.Groups {
		if g == "" {
			p.add(fmt.Sprintf("authorization.groups[%d]", i), "must not be empty")
		}
	}
	for i, d := range a.RedirectDomains {
		if msg := redirectDomainProblem(d); msg != "" {
			p.add(fmt.Sprintf("authorization.redirectDomains[%d]", i), "%q %s", d, msg)
		}
	}
	for i, aud := range a.BearerAudiences {
		if aud == "" {
			p.add(fmt.Sprintf("authorization.bearerAudiences[%d]", i), "must not be empty")
		}
	}
}

func validEmailDomain(d string) bool {
	if d == "*" {
		return true
	}
	if rest, ok := strings.CutPrefix(d, "*."); ok {
		return validHostname(rest)
	}
	return validHostname(strings.TrimPrefix(d, "."))
}

// redirectDomainProblem says what is wrong with a redirectDomains entry
// ("host", ".domain", either with ":port" or ":*"), or "".
func redirectDomainProblem(d string) string {
	host, port, hasPort := strings.Cut(d, ":")
	if !validHostname(strings.TrimPrefix(host, ".")) {
		return `is not a hostname or ".domain"`
	}
	if hasPort && port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' {
			return `has a port that is not 1-65535 or "*"`
		}
	}
	return ""
}

// validateHeaders checks that the token headers have a token to send.
func (c *Config) validateHeaders(p *problems) {
	if c.Session.StoreTokens.AccessToken {
		return
	}
	if c.Headers.AccessToken {
		p.add("headers.accessToken", "requires session.storeTokens.accessToken: true")
	}
	if c.Headers.Authorization {
		p.add("headers.authorization", "requires session.storeTokens.accessToken: true")
	}
}

func (l *Logging) validate(p *problems) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("logging.level", "must be debug, info, warn or error, got %q", l.Level)
	}
	switch l.Format {
	case "json", "text":
	default:
		p.add("logging.format", "must be json or text, got %q", l.Format)
	}
}

// maxReuseWindow bounds session.refreshReuseWindow: a refreshed token set
// is kept in memory that long.
const maxReuseWindow = 10 * time.Minute
