// Package provider talks to the OpenID Connect provider: discovery, the
// authorization URL, the code exchange, ID-token verification and userinfo.
// It wraps go-oidc and x/oauth2 behind a few methods, with one HTTP client
// (timeouts, the optional CA bundle, metrics) used by both libraries.
package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/extauth/extauth/pkg/metrics"
)

var (
	// ErrNotReady means discovery has not succeeded yet.
	ErrNotReady = errors.New("provider: discovery not complete")
	// ErrRefreshRejected means the provider answered invalid_grant to a
	// refresh: the refresh token is expired, revoked or already used, and
	// the session is over.
	ErrRefreshRejected = errors.New("provider: refresh token rejected (invalid_grant)")
	// ErrUnsupported means the provider has no endpoint for the call.
	ErrUnsupported = errors.New("provider: endpoint not supported")
)

// Config is what the provider needs from the oidc.* configuration.
type Config struct {
	IssuerURL       string
	ClientID        string
	ClientSecret    string
	Scopes          []string
	PKCE            bool
	ExtraAuthParams map[string]string
	RevocationURL   string // overrides discovery's revocation_endpoint
	EndSessionURL   string // overrides discovery's end_session_endpoint
	CAPEM           []byte // extra CA bundle
	// BearerAudiences are the accepted aud values of bearer tokens (default: the client ID).
	BearerAudiences []string
	// MicrosoftGraphURL resolves Entra ID's group overage (graph.go);
	// empty: https://graph.microsoft.com.
	MicrosoftGraphURL string
	// RequestTimeout bounds each call to the provider (default 10s).
	RequestTimeout time.Duration
}

// Tokens is what the token endpoint answered.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	// Expiry is the access token's expiry by our clock (expires_in from
	// now, else the JWT's exp); zero when unknown.
	Expiry time.Time
	// Lifetime is how long the access token was issued for: expires_in,
	// else the JWT's exp - iat; zero when unknown.
	Lifetime time.Duration
}

// Endpoints are the discovered (or configured) URLs beyond what go-oidc reads.
type Endpoints struct {
	Revocation string
	EndSession string
	Userinfo   string
	// RevocationAuthMethods are revocation_endpoint_auth_methods_supported,
	// else token_endpoint_auth_methods_supported.
	RevocationAuthMethods []string
}

// Provider is the OpenID provider as extauth uses it.
type Provider struct {
	cfg     Config
	client  *http.Client
	now     func() time.Time
	log     *slog.Logger
	metrics *metrics.Metrics
	d       atomic.Pointer[discovered]
}

// discovered is what a successful discovery yields; immutable once stored.
type discovered struct {
	oidc      *oidc.Provider
	verifier  *oidc.IDTokenVerifier
	bearer    *oidc.IDTokenVerifier
	logout    *oidc.IDTokenVerifier
	oauth2    oauth2.Config
	endpoints Endpoints
	pkce      bool
}

// discoveryDoc holds the discovery fields go-oidc does not read itself.
type discoveryDoc struct {
	JWKSURI                    string   `json:"jwks_uri"`
	RevocationEndpoint         string   `json:"revocation_endpoint"`
	EndSessionEndpoint         string   `json:"end_session_endpoint"`
	CodeChallengeMethods       []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMeth []string `json:"revocation_endpoint_auth_methods_supported"`
	IDTokenSigningAlgs         []string `json:"id_token_signing_alg_values_supported"`
}

// New builds the provider and its HTTP client. It does no network I/O:
// call Run (or Discover) to load the discovery document.
func New(cfg Config, now func() time.Time, log *slog.Logger, m *metrics.Metrics) (*Provider, error) {
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	transport.TLSHandshakeTimeout = 5 * time.Second
	transport.ResponseHeaderTimeout = cfg.RequestTimeout
	transport.MaxIdleConnsPerHost = 16
	if len(cfg.CAPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("provider: CA bundle has no certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	p := &Provider{cfg: cfg, now: now, log: log, metrics: m}
	p.client = &http.Client{
		Transport: &instrumented{next: transport, p: p},
		Timeout:   cfg.RequestTimeout,
		// The provider's answers are never followed elsewhere: a redirect from
		// a token endpoint is a misconfiguration, not something to chase.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p, nil
}

// Ready reports whether discovery has succeeded.
func (p *Provider) Ready() bool { return p.d.Load() != nil }

// Run retries discovery with exponential backoff (1s doubling to 30s) until it
// succeeds or ctx ends, so a provider that is down at start-up delays
// readiness instead of crashing the process.
func (p *Provider) Run(ctx context.Context) {
	backoff := time.Second
	for {
		err := p.Discover(ctx)
		if err == nil {
			return
		}
		p.log.Warn("provider discovery failed; retrying", "issuer", p.cfg.IssuerURL, "retry_in", backoff.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// Discover loads the discovery document once.
func (p *Provider) Discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointDiscovery), p.cfg.RequestTimeout)
	defer cancel()
	op, err := oidc.NewProvider(oidc.ClientContext(ctx, p.client), p.cfg.IssuerURL)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	var doc discoveryDoc
	if err := op.Claims(&doc); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	// Readiness means keys too: fetch them once now, so a provider whose
	// jwks_uri is broken is not reported ready.
	keys, err := p.fetchKeys(ctx, doc.JWKSURI)
	if err != nil {
		return err
	}
	d := &discovered{oidc: op}
	// The key set lives as long as the process; see keySet for when it
	// asks the provider again.
	ks := newKeySet(keys, p.now(), func(ctx context.Context) ([]jose.JSONWebKey, error) {
		return p.fetchKeys(ctx, doc.JWKSURI)
	}, p.now, p.countRefetch)
	algs := supportedAlgs(doc.IDTokenSigningAlgs)
	d.verifier = oidc.NewVerifier(p.cfg.IssuerURL, ks, &oidc.Config{ClientID: p.cfg.ClientID, Now: p.now, SupportedSigningAlgs: algs})
	d.bearer = oidc.NewVerifier(p.cfg.IssuerURL, ks, &oidc.Config{SkipClientIDCheck: true, Now: p.now, SupportedSigningAlgs: algs})
	// Logout tokens of older providers carry no exp: the caller checks iat
	// and exp itself.
	d.logout = oidc.NewVerifier(p.cfg.IssuerURL, ks, &oidc.Config{ClientID: p.cfg.ClientID, SkipExpiryCheck: true, Now: p.now, SupportedSigningAlgs: algs})

	d.endpoints = Endpoints{
		Revocation: firstNonEmpty(p.cfg.RevocationURL, doc.RevocationEndpoint),
		EndSession: firstNonEmpty(p.cfg.EndSessionURL, doc.EndSessionEndpoint),
		Userinfo:   op.UserInfoEndpoint(),
	}
	d.endpoints.RevocationAuthMethods = doc.RevocationEndpointAuthMeth
	if len(d.endpoints.RevocationAuthMethods) == 0 {
		d.endpoints.RevocationAuthMethods = doc.TokenEndpointAuthMethods
	}

	// PKCE S256 (RFC 7636) unless the provider lists challenge methods
	// without S256; providers that list none mostly support it anyway.
	d.pkce = p.cfg.PKCE && (len(doc.CodeChallengeMethods) == 0 || slices.Contains(doc.CodeChallengeMethods, "S256"))
	if p.cfg.PKCE && !d.pkce {
		p.log.Warn("provider does not support PKCE S256; signing in without PKCE", "code_challenge_methods_supported", doc.CodeChallengeMethods)
	}

	endpoint := op.Endpoint()
	endpoint.AuthStyle = authStyle(p.cfg.ClientSecret, doc.TokenEndpointAuthMethods)
	d.oauth2 = oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     endpoint,
		Scopes:       p.cfg.Scopes,
	}
	p.d.Store(d)
	p.log.Info("provider discovered", "issuer", p.cfg.IssuerURL, "pkce", d.pkce,
		"revocation", d.endpoints.Revocation != "", "end_session", d.endpoints.EndSession != "")
	return nil
}

// supportedAlgs are the provider's ID-token signing algorithms that
// extauth verifies; none listed (or none known) leaves go-oidc's default,
// RS256, the one OpenID Connect requires.
func supportedAlgs(listed []string) []string {
	var algs []string
	for _, a := range listed {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			algs = append(algs, a)
		}
	}
	return algs
}

// countRefetch counts a JWKS refetch by result.
func (p *Provider) countRefetch(result string) {
	if p.metrics != nil {
		p.metrics.KeyRefetches.WithLabelValues(result).Inc()
	}
}

// authStyle picks client authentication at the token endpoint:
// client_secret_basic unless the provider lists only client_secret_post; a
// public client sends its ID in the form.
func authStyle(secret string, methods []string) oauth2.AuthStyle {
	if secret == "" {
		return oauth2.AuthStyleInParams
	}
	if len(methods) > 0 && !slices.Contains(methods, "client_secret_basic") && slices.Contains(methods, "client_secret_post") {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

func (p *Provider) get() (*discovered, error) {
	d := p.d.Load()
	if d == nil {
		return nil, ErrNotReady
	}
	return d, nil
}

// Endpoints returns the revocation, end-session and userinfo URLs.
func (p *Provider) Endpoints() (Endpoints, error) {
	d, err := p.get()
	if err != nil {
		return Endpoints{}, err
	}
	return d.endpoints, nil
}

// AuthCodeURL is where /oauth2/start sends the browser: response_type=code,
// client_id, redirect_uri, scope, state, nonce and, with PKCE, the S256
// challenge of verifier.
func (p *Provider) AuthCodeURL(redirectURL, state, nonce, verifier string) (string, error) {
	return p.AuthCodeURLWith(redirectURL, state, nonce, verifier, nil)
}

// AuthCodeURLWith is AuthCodeURL with extra parameters (prompt=consent)
// added after oidc.extraAuthParams.
func (p *Provider) AuthCodeURLWith(redirectURL, state, nonce, verifier string, extra map[string]string) (string, error) {
	d, err := p.get()
	if err != nil {
		return "", err
	}
	conf := d.oauth2
	conf.RedirectURL = redirectURL
	opts := []oauth2.AuthCodeOption{oidc.Nonce(nonce)}
	if d.pkce && verifier != "" {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	for k, v := range p.cfg.ExtraAuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	for k, v := range extra {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	return conf.AuthCodeURL(state, opts...), nil
}

// PKCE reports whether sign-ins use PKCE.
func (p *Provider) PKCE() bool {
	d := p.d.Load()
	return d != nil && d.pkce
}

// Exchange redeems an authorization code. A provider's refusal is an
// *oauth2.RetrieveError inside the returned error.
func (p *Provider) Exchange(ctx context.Context, code, verifier, redirectURL string) (*Tokens, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	conf := d.oauth2
	conf.RedirectURL = redirectURL
	var opts []oauth2.AuthCodeOption
	if d.pkce && verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointToken), p.cfg.RequestTimeout)
	defer cancel()
	tok, err := conf.Exchange(oidc.ClientContext(ctx, p.client), code, opts...)
	if err != nil {
		return nil, fmt.Errorf("exchange code: %w", err)
	}
	return p.tokens(tok), nil
}

// tokens converts x/oauth2's token, deciding expiry with our clock: x/oauth2
// computes Expiry with the wall clock.
func (p *Provider) tokens(tok *oauth2.Token) *Tokens {
	t := &Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken}
	if id, ok := tok.Extra("id_token").(string); ok {
		t.IDToken = id
	}
	switch {
	case tok.ExpiresIn > 0:
		t.Lifetime = time.Duration(tok.ExpiresIn) * time.Second
		t.Expiry = p.now().Add(t.Lifetime)
	default:
		t.Expiry, t.Lifetime = jwtExpiry(tok.AccessToken)
	}
	return t
}

// jwtExpiry reads exp (and iat) from a JWT access token without verifying
// it: it only decides when to refresh, never whether to trust.
func jwtExpiry(token string) (time.Time, time.Duration) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, 0
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, 0
	}
	var claims struct {
		Exp int64 `json:"exp"`
		Iat int64 `json:"iat"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, 0
	}
	var lifetime time.Duration
	if claims.Iat > 0 && claims.Exp > claims.Iat {
		lifetime = time.Duration(claims.Exp-claims.Iat) * time.Second
	}
	return time.Unix(claims.Exp, 0), lifetime
}

// VerifyIDToken checks an ID token's signature, issuer, audience (the client
// ID) and expiry by our clock. The caller checks the nonce.
func (p *Provider) VerifyIDToken(ctx context.Context, raw string) (*oidc.IDToken, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	tok, err := d.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verify id token: %w", err)
	}
	return tok, nil
}

// VerifyBearer checks a bearer JWT signed by the provider: issuer, expiry,
// and an audience among BearerAudiences (default: the client ID).
func (p *Provider) VerifyBearer(ctx context.Context, raw string) (*oidc.IDToken, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	tok, err := d.bearer.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verify bearer token: %w", err)
	}
	audiences := p.cfg.BearerAudiences
	if len(audiences) == 0 {
		audiences = []string{p.cfg.ClientID}
	}
	if !audienceAccepted(tok.Audience, audiences) {
		return nil, errors.New("verify bearer token: audience not accepted")
	}
	return tok, nil
}

// VerifyLogoutToken checks a back-channel logout token's signature (the
// provider's keys), issuer and audience (the client ID). The caller checks
// the logout-specific claims.
func (p *Provider) VerifyLogoutToken(ctx context.Context, raw string) (*oidc.IDToken, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	tok, err := d.logout.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verify logout token: %w", err)
	}
	return tok, nil
}

// Refresh redeems a refresh token (grant_type=refresh_token). When the
// provider does not rotate it, the returned Tokens keep the one given.
// invalid_grant is ErrRefreshRejected; anything else (network, timeout,
// 5xx, other errors) means the provider could not refresh now.
func (p *Provider) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointRefresh), p.cfg.RequestTimeout)
	defer cancel()
	// A token with only the refresh token set forces x/oauth2 to refresh:
	// it never decides expiry for us (its clock is the wall clock).
	tok, err := d.oauth2.TokenSource(oidc.ClientContext(ctx, p.client), &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		// invalid_grant is the refusal RFC 6749 names; Dex answers a reused,
		// deleted or expired refresh token with 400 invalid_request instead.
		// Either is the provider's answer, not an outage: retrying the same
		// token cannot succeed.
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && (re.ErrorCode == "invalid_grant" ||
			re.ErrorCode == "invalid_request" && re.Response != nil && re.Response.StatusCode == http.StatusBadRequest) {
			return nil, fmt.Errorf("%w: %s %s", ErrRefreshRejected, re.ErrorCode, re.ErrorDescription)
		}
		return nil, fmt.Errorf("refresh: %w", err)
	}
	t := p.tokens(tok)
	if t.RefreshToken == "" {
		t.RefreshToken = refreshToken
	}
	return t, nil
}

// Revoke revokes a token at the revocation endpoint (RFC 7009) with client
// authentication: client_secret_basic, or client_secret_post when the
// provider lists only that; a public client sends its ID. hint is
// "refresh_token" or "access_token". ErrUnsupported when the provider has
// no revocation endpoint.
func (p *Provider) Revoke(ctx context.Context, token, hint string) error {
	d, err := p.get()
	if err != nil {
		return err
	}
	if d.endpoints.Revocation == "" {
		return ErrUnsupported
	}
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	basic := p.cfg.ClientSecret != "" && authStyle(p.cfg.ClientSecret, d.endpoints.RevocationAuthMethods) == oauth2.AuthStyleInHeader
	if !basic {
		form.Set("client_id", p.cfg.ClientID)
		if p.cfg.ClientSecret != "" {
			form.Set("client_secret", p.cfg.ClientSecret)
		}
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointRevocation), p.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.endpoints.Revocation, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		// RFC 6749 §2.3.1: form-encode both parts before base64.
		req.SetBasicAuth(url.QueryEscape(p.cfg.ClientID), url.QueryEscape(p.cfg.ClientSecret))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &oe)
		if oe.Error == "unsupported_token_type" {
			return fmt.Errorf("%w: unsupported_token_type", ErrUnsupported)
		}
		return fmt.Errorf("revoke: %s answered %s %s", d.endpoints.Revocation, resp.Status, oe.Error)
	}
	return nil
}

// Userinfo fetches the userinfo endpoint's claims with the access token.
func (p *Provider) Userinfo(ctx context.Context, accessToken string) (*oidc.UserInfo, error) {
	d, err := p.get()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointUserinfo), p.cfg.RequestTimeout)
	defer cancel()
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: accessToken, TokenType: "Bearer"})
	info, err := d.oidc.UserInfo(oidc.ClientContext(ctx, p.client), ts)
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	return info, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type endpointKey struct{}

// withEndpoint labels the provider calls made with ctx for the
// extauth_idp_request_duration_seconds metric.
func withEndpoint(ctx context.Context, endpoint string) context.Context {
	return context.WithValue(ctx, endpointKey{}, endpoint)
}

// instrumented measures every provider call. Calls made without a label are
// go-oidc's key set fetches, the only ones that cannot carry our context.
type instrumented struct {
	next http.RoundTripper
	p    *Provider
}

func (t *instrumented) RoundTrip(r *http.Request) (*http.Response, error) {
	endpoint, _ := r.Context().Value(endpointKey{}).(string)
	if endpoint == "" {
		endpoint = metrics.EndpointJWKS
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(r)
	outcome := metrics.OutcomeOK
	// A 4xx is an answer (invalid_grant, a bad code); errors are failures to
	// get one: the network, a timeout, or the provider's own 5xx.
	if err != nil || resp.StatusCode >= 500 {
		outcome = metrics.OutcomeError
	}
	if t.p.metrics != nil {
		t.p.metrics.IdPRequestDuration.WithLabelValues(endpoint, outcome).Observe(time.Since(start).Seconds())
	}
	return resp, err
}
