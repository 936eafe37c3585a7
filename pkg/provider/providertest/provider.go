// Package providertest runs an in-process fake OpenID Connect provider on
// httptest for fast unit tests.
//
// The fake implements discovery, JWKS, the authorization code flow with PKCE,
// the token endpoint (authorization_code and refresh_token grants with
// rotation and reuse detection), userinfo, RFC 7009 revocation and
// RP-initiated logout. Its clock is injected, its answers are scriptable (user,
// token response overrides, ID-token tampering, faults) and every call is
// counted and recorded so that tests can assert on them.
//
// A typical test:
//
//	p := providertest.New(t) // outside a test: p, err := providertest.Start(); defer p.Close()
//	provider, _ := oidc.NewProvider(ctx, p.Issuer)
//	conf := oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret,
//		Endpoint: provider.Endpoint(), RedirectURL: "https://app.example/callback",
//		Scopes: []string{oidc.ScopeOpenID}}
//	verifier := oauth2.GenerateVerifier()
//	cb := p.Login(t, ctx, conf.AuthCodeURL("state", oauth2.S256ChallengeOption(verifier)))
//	tok, _ := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier))
//	idt, _ := provider.Verifier(&oidc.Config{ClientID: p.ClientID, Now: p.Now}).
//		Verify(ctx, tok.Extra("id_token").(string))
package providertest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Endpoint names accepted by SetFault and Calls.
const (
	EndpointDiscovery  = "discovery"
	EndpointKeys       = "keys"
	EndpointAuthorize  = "authorize"
	EndpointToken      = "token"
	EndpointUserinfo   = "userinfo"
	EndpointRevoke     = "revoke"
	EndpointEndSession = "end_session"
)

var endpointPaths = map[string]string{
	EndpointDiscovery:  "/.well-known/openid-configuration",
	EndpointKeys:       "/keys",
	EndpointAuthorize:  "/authorize",
	EndpointToken:      "/token",
	EndpointUserinfo:   "/userinfo",
	EndpointRevoke:     "/revoke",
	EndpointEndSession: "/end_session",
}

// Client authentication methods at the token and revocation endpoints.
const (
	AuthMethodBasic = "client_secret_basic"
	AuthMethodPost  = "client_secret_post"
	AuthMethodNone  = "none"
)

// Grant types accepted by the token endpoint.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
)

// Default lifetimes.
const (
	DefaultAccessTokenTTL  = time.Hour
	DefaultRefreshTokenTTL = 24 * time.Hour
	IDTokenTTL             = time.Hour
	CodeTTL                = 10 * time.Minute
)

// startTime is where the provider's own fake clock starts.
var startTime = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// Fault makes an endpoint misbehave; see Provider.SetFault.
type Fault int

const (
	// FaultNone serves normally.
	FaultNone Fault = iota
	// Fault503 answers 503 Service Unavailable.
	Fault503
	// FaultHang blocks until the request's context is done or the provider
	// is closed, then drops the request without an answer.
	FaultHang
	// FaultInvalidGrant answers 400 {"error":"invalid_grant"} (meant for the
	// token endpoint).
	FaultInvalidGrant
	// FaultInvalidRequest answers 400 {"error":"invalid_request"}: what Dex
	// answers a reused, deleted or expired refresh token with.
	FaultInvalidRequest
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case Fault503:
		return "503"
	case FaultHang:
		return "hang"
	case FaultInvalidGrant:
		return "invalid_grant"
	case FaultInvalidRequest:
		return "invalid_request"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// User is who signs in at the authorization endpoint.
type User struct {
	Subject           string
	Email             string
	EmailVerified     bool
	PreferredUsername string
	Name              string
	Groups            []string
	// Extra claims are added to the ID token and userinfo answer; they may
	// override the profile claims above but never the protocol claims (iss,
	// aud, exp, iat, nonce, sid, ...) of an ID token.
	Extra map[string]any
}

// DefaultUser is the user who signs in unless WithUser or SetUser says
// otherwise.
func DefaultUser() User {
	return User{
		Subject:           "248289761001",
		Email:             "jane.doe@example.com",
		EmailVerified:     true,
		PreferredUsername: "jane",
		Name:              "Jane Doe",
		Groups:            []string{"staff", "admins"},
	}
}

func (u User) clone() User {
	if u.Groups != nil {
		u.Groups = append([]string(nil), u.Groups...)
	}
	if u.Extra != nil {
		extra := make(map[string]any, len(u.Extra))
		for k, v := range u.Extra {
			extra[k] = v
		}
		u.Extra = extra
	}
	return u
}

// Revocation is one authenticated call to the revocation endpoint.
type Revocation struct {
	Token      string
	TypeHint   string // token_type_hint as sent, may be empty
	ClientID   string
	AuthMethod string // client_secret_basic, client_secret_post or none
	// Kind is what the token actually was: "refresh_token", "access_token"
	// or "" when the provider did not know it.
	Kind string
}

// Option configures New.
type Option func(*config)

type config struct {
	clock             func() time.Time
	clientID          string
	clientSecret      string
	redirectURIs      []string
	postLogoutURIs    []string
	accessTTL         time.Duration
	refreshTTL        time.Duration
	user              User
	revocation        bool
	endSession        bool
	authMethods       []string
	challengeMethods  []string
	pkceRequired      bool
	refreshAlways     bool
	refreshIDToken    bool
	rotation          bool
	claimsOnlyUserinf bool
	offlineConsent    bool
	tls               bool
}

// WithClock makes the provider use clock for every time it issues or checks
// (iat, exp, code and refresh-token expiry). Advance then panics.
func WithClock(clock func() time.Time) Option { return func(c *config) { c.clock = clock } }

// WithClient sets the registered client. An empty secret registers a public
// client, which authenticates with client_id alone (method "none").
func WithClient(id, secret string) Option {
	return func(c *config) { c.clientID, c.clientSecret = id, secret }
}

// WithRedirectURIs registers exact redirect URIs. Without it any absolute
// http(s) redirect_uri is accepted.
func WithRedirectURIs(uris ...string) Option {
	return func(c *config) { c.redirectURIs = append([]string(nil), uris...) }
}

// WithPostLogoutRedirectURIs registers exact post_logout_redirect_uri values
// for the end-session endpoint. Without it any absolute http(s) URI is
// accepted.
func WithPostLogoutRedirectURIs(uris ...string) Option {
	return func(c *config) { c.postLogoutURIs = append([]string(nil), uris...) }
}

// WithAccessTokenTTL sets the access-token lifetime (default 1h).
func WithAccessTokenTTL(d time.Duration) Option { return func(c *config) { c.accessTTL = d } }

// WithRefreshTokenTTL sets the refresh-token lifetime (default 24h); each
// rotated refresh token gets a fresh lifetime.
func WithRefreshTokenTTL(d time.Duration) Option { return func(c *config) { c.refreshTTL = d } }

// WithUser sets who signs in (default DefaultUser()).
func WithUser(u User) Option { return func(c *config) { c.user = u.clone() } }

// WithoutRevocation removes the revocation endpoint (not advertised, 404).
func WithoutRevocation() Option { return func(c *config) { c.revocation = false } }

// WithoutEndSession removes the end-session endpoint (not advertised, 404).
func WithoutEndSession() Option { return func(c *config) { c.endSession = false } }

// WithAuthMethods sets token_endpoint_auth_methods_supported; only these
// methods are accepted. Default: client_secret_basic and client_secret_post,
// or "none" for a public client.
func WithAuthMethods(methods ...string) Option {
	return func(c *config) { c.authMethods = append([]string(nil), methods...) }
}

// WithCodeChallengeMethods sets code_challenge_methods_supported (default
// S256). "plain" is understood too.
func WithCodeChallengeMethods(methods ...string) Option {
	return func(c *config) { c.challengeMethods = append([]string(nil), methods...) }
}

// WithPKCERequired makes the authorization endpoint reject requests without
// a code_challenge.
func WithPKCERequired() Option { return func(c *config) { c.pkceRequired = true } }

// WithRefreshTokens chooses when refresh tokens are issued: always (the
// default) or only when the authorization request's scope included
// offline_access.
func WithRefreshTokens(always bool) Option { return func(c *config) { c.refreshAlways = always } }

// WithOfflineAccessOnlyWithConsent drops offline_access from an
// authorization request without prompt=consent, as OpenID Connect Core §11
// asks and node oidc-provider and Google do: combined with
// WithRefreshTokens(false), such a sign-in gets no refresh token.
func WithOfflineAccessOnlyWithConsent() Option { return func(c *config) { c.offlineConsent = true } }

// WithRefreshIDToken chooses whether a refresh answer carries a new ID
// token (default true).
func WithRefreshIDToken(on bool) Option { return func(c *config) { c.refreshIDToken = on } }

// WithRotation chooses refresh-token rotation (default true). Without it a
// refresh answer has no refresh_token field and the old one stays valid.
func WithRotation(on bool) Option { return func(c *config) { c.rotation = on } }

// WithClaimsOnlyInUserinfo makes ID tokens carry only sub, iss, aud, exp,
// iat, nonce and sid; the profile claims are then only in userinfo.
func WithClaimsOnlyInUserinfo() Option { return func(c *config) { c.claimsOnlyUserinf = true } }

// WithTLS serves over https (httptest.NewTLSServer). Clients must then use
// p.Server.Client(), e.g. through oidc.ClientContext.
func WithTLS() Option { return func(c *config) { c.tls = true } }

type faultState struct {
	fault     Fault
	remaining int // 0: until changed
}

// Provider is a fake OpenID provider. All methods are safe for concurrent
// use; the exported fields are read-only.
type Provider struct {
	// Issuer is the server URL, which is also the issuer.
	Issuer string
	// ClientID and ClientSecret are the registered client.
	ClientID, ClientSecret string
	// Server serves the provider.
	Server *httptest.Server

	cfg       config
	closed    chan struct{}
	closeOnce sync.Once

	clockMu sync.Mutex
	now     time.Time

	mu               sync.Mutex
	user             User
	codes            map[string]*authCode
	refreshTokens    map[string]*refreshRecord
	accessTokens     map[string]*accessRecord
	calls            map[string]int
	tokenRequests    map[string]int
	faults           map[string]faultState
	revocations      []Revocation
	endSessions      []url.Values
	authorizations   []url.Values
	authorizeError   string
	tokenResponse    func(grant string) map[string]any
	idTokenMutator   func(claims map[string]any)
	idTokenOtherKey  bool
	idTokenAlgNone   bool
	userinfoOverride map[string]any
	rotatedKID       string // a second published key (RotateKey)
}

// New starts a fake provider for a test; t.Cleanup closes it.
func New(t testing.TB, opts ...Option) *Provider {
	t.Helper()
	p, err := Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// Start starts a fake provider outside a test (the load benchmark is a
// program); the caller closes it.
func Start(opts ...Option) (*Provider, error) {
	cfg := config{
		clientID:         "extauth-test",
		clientSecret:     "test-secret",
		accessTTL:        DefaultAccessTokenTTL,
		refreshTTL:       DefaultRefreshTokenTTL,
		user:             DefaultUser(),
		revocation:       true,
		endSession:       true,
		challengeMethods: []string{"S256"},
		refreshAlways:    true,
		refreshIDToken:   true,
		rotation:         true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.authMethods == nil {
		if cfg.clientSecret == "" {
			cfg.authMethods = []string{AuthMethodNone}
		} else {
			cfg.authMethods = []string{AuthMethodBasic, AuthMethodPost}
		}
	}
	if err := loadKeys(); err != nil {
		return nil, err
	}

	p := &Provider{
		ClientID:      cfg.clientID,
		ClientSecret:  cfg.clientSecret,
		cfg:           cfg,
		closed:        make(chan struct{}),
		now:           startTime,
		user:          cfg.user.clone(),
		codes:         map[string]*authCode{},
		refreshTokens: map[string]*refreshRecord{},
		accessTokens:  map[string]*accessRecord{},
		calls:         map[string]int{},
		tokenRequests: map[string]int{},
		faults:        map[string]faultState{},
	}
	// httptest.NewUnstartedServer, but with the listener's error returned
	// instead of a panic.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("providertest: %w", err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: p.routes()}}
	scheme := "http"
	if cfg.tls {
		scheme = "https"
	}
	// The listener exists already, so the issuer is known before the first
	// request can arrive.
	p.Issuer = scheme + "://" + srv.Listener.Addr().(*net.TCPAddr).String()
	if cfg.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	p.Server = srv
	return p, nil
}

// Close stops the provider, releasing hanging requests first. New calls it
// through t.Cleanup; it may be called earlier to simulate an outage, and
// more than once.
func (p *Provider) Close() {
	p.closeOnce.Do(func() {
		close(p.closed) // Server.Close waits for handlers, so release them first
		p.Server.Close()
	})
}

// URL returns the absolute URL of an endpoint ("token", "keys", ...).
func (p *Provider) URL(endpoint string) string {
	path, ok := endpointPaths[endpoint]
	if !ok {
		panic("providertest: unknown endpoint " + endpoint)
	}
	return p.Issuer + path
}

// Now returns the provider's current time.
func (p *Provider) Now() time.Time {
	if p.cfg.clock != nil {
		return p.cfg.clock()
	}
	p.clockMu.Lock()
	defer p.clockMu.Unlock()
	return p.now
}

// Advance moves the provider's own clock. It panics if WithClock was used.
func (p *Provider) Advance(d time.Duration) {
	p.ownClock("Advance")
	p.clockMu.Lock()
	defer p.clockMu.Unlock()
	p.now = p.now.Add(d)
}

func (p *Provider) ownClock(method string) {
	if p.cfg.clock != nil {
		panic("providertest: " + method + " called on a provider created WithClock; move that clock instead")
	}
}

// SetUser changes who signs in next. Sessions of the same subject see the
// new profile on refresh and at userinfo, as after a profile change at a
// real provider; sessions of other subjects keep theirs.
func (p *Provider) SetUser(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = u.clone()
}

// User returns who signs in next.
func (p *Provider) User() User {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.user.clone()
}

// SetFault makes endpoint misbehave until changed (FaultNone restores it).
func (p *Provider) SetFault(endpoint string, f Fault) { p.SetFaultN(endpoint, f, 0) }

// SetFaultN makes endpoint misbehave for its next n calls only (n <= 0:
// until changed).
func (p *Provider) SetFaultN(endpoint string, f Fault, n int) {
	checkEndpoint(endpoint)
	p.mu.Lock()
	defer p.mu.Unlock()
	if f == FaultNone {
		delete(p.faults, endpoint)
		return
	}
	p.faults[endpoint] = faultState{fault: f, remaining: max(n, 0)}
}

// takeFaultLocked returns the fault for one call of endpoint.
func (p *Provider) takeFaultLocked(endpoint string) Fault {
	fs, ok := p.faults[endpoint]
	if !ok {
		return FaultNone
	}
	if fs.remaining > 0 {
		fs.remaining--
		if fs.remaining == 0 {
			delete(p.faults, endpoint)
		} else {
			p.faults[endpoint] = fs
		}
	}
	return fs.fault
}

// Calls returns how many requests reached endpoint (faulted ones included).
func (p *Provider) Calls(endpoint string) int {
	checkEndpoint(endpoint)
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[endpoint]
}

// TokenRequests returns how many token requests had grant_type grant
// (faulted and failed ones included).
func (p *Provider) TokenRequests(grant string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokenRequests[grant]
}

// Revocations returns the authenticated revocation calls so far.
func (p *Provider) Revocations() []Revocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Revocation(nil), p.revocations...)
}

// Authorizations are the query parameters of every authorization request
// the provider accepted, oldest first.
func (p *Provider) Authorizations() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]url.Values, len(p.authorizations))
	for i, v := range p.authorizations {
		out[i] = cloneValues(v)
	}
	return out
}

// EndSessions returns the parameters of each end-session call so far.
func (p *Provider) EndSessions() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]url.Values, len(p.endSessions))
	for i, v := range p.endSessions {
		out[i] = cloneValues(v)
	}
	return out
}

// AuthorizeError makes the next authorization request that passes client
// and redirect_uri validation redirect back with error=code (and state)
// instead of a code.
func (p *Provider) AuthorizeError(code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.authorizeError = code
}

// SetTokenResponse installs f, called (outside the provider's lock) for each
// successful token answer with the grant type; its result is merged over
// the generated JSON answer, and a nil value removes a field. Strings
// returned as access_token or refresh_token become valid aliases of the
// generated ones, so userinfo, refresh and revocation accept them. A nil f
// removes the override.
func (p *Provider) SetTokenResponse(f func(grant string) map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tokenResponse = f
}

// ServeTokens makes the token endpoint answer with these access and refresh
// token strings (a real provider's sizes, say), each answer's refresh token
// made unique by a suffix as a rotating provider's would be. The ID token
// stays the provider's own, signed and verifiable.
func (p *Provider) ServeTokens(accessToken, refreshToken string) {
	var mu sync.Mutex
	issued := 0
	p.SetTokenResponse(func(string) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		issued++
		return map[string]any{"access_token": accessToken, "refresh_token": fmt.Sprintf("%s.%d", refreshToken, issued)}
	})
}

// SetIDTokenMutator installs f, applied to the claims of the next issued
// ID token just before signing (once).
func (p *Provider) SetIDTokenMutator(f func(claims map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idTokenMutator = f
}

// SignNextIDTokenWithOtherKey signs the next issued ID token with a key
// that is not in the JWKS (but with the published kid): a bad signature.
func (p *Provider) SignNextIDTokenWithOtherKey() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idTokenOtherKey = true
}

// SetIDTokenAlgNone makes the next issued ID token unsigned (alg "none").
func (p *Provider) SetIDTokenAlgNone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idTokenAlgNone = true
}

// SetUserinfoOverride sets claims merged over every userinfo answer (nil
// values remove claims; a nil map removes the override).
func (p *Provider) SetUserinfoOverride(claims map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.userinfoOverride = cloneMap(claims)
}

// FamilyRevoked reports whether the sign-in that refreshToken belongs to
// has been revoked (reuse detected, code replayed or revoked at /revoke).
// It is false for tokens the provider never issued.
func (p *Provider) FamilyRevoked(refreshToken string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	rt, ok := p.refreshTokens[refreshToken]
	return ok && rt.fam.revoked
}

// Login GETs authURL without following redirects and returns the Location
// of the redirect, which for the fake's authorization endpoint is the
// client's callback with code and state (or error and state). It fails the
// test unless the answer is a redirect.
func (p *Provider) Login(t testing.TB, ctx context.Context, authURL string) *url.URL {
	t.Helper()
	client := &http.Client{
		Transport: p.Server.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		t.Fatalf("providertest: Login: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("providertest: Login: %v", err)
	}
	defer resp.Body.Close()
	body := readSmall(resp.Body)
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		t.Fatalf("providertest: Login: GET %s: status %d, want a redirect: %s", authURL, resp.StatusCode, body)
	}
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("providertest: Login: redirect without a usable Location: %v", err)
	}
	return loc
}

func checkEndpoint(endpoint string) {
	if _, ok := endpointPaths[endpoint]; !ok {
		panic("providertest: unknown endpoint " + endpoint)
	}
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vv := range v {
		out[k] = append([]string(nil), vv...)
	}
	return out
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
