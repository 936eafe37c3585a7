package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/extauth/extauth/pkg/metrics"
)

// Why a bearer token was refused; Verify's errors wrap one of them.
var (
	ErrBearerMalformed         = errors.New("bearer token is not a JWT")
	ErrBearerIssuerUnknown     = errors.New("bearer token's issuer is not accepted")
	ErrBearerIssuerUnavailable = errors.New("bearer token's issuer cannot be reached")
	ErrBearerAudience          = errors.New("bearer token's audience is not accepted")
	ErrBearerExpired           = errors.New("bearer token expired")
	ErrBearerInvalid           = errors.New("bearer token does not verify")
)

// maxBearerBytes bounds a bearer token: Entra ID's tokens with many groups
// stay well below.
const maxBearerBytes = 16 << 10

// BearerRetry is the least time between two discoveries of an issuer that
// failed: a token naming it is refused meanwhile, so that tokens cannot make
// extauth hammer an issuer that is down.
const BearerRetry = 30 * time.Second

// BearerIssuer is one issuer whose JWTs an app accepts in place of a session.
type BearerIssuer struct {
	IssuerURL string
	// Audiences: a token must name one of them in aud.
	Audiences []string
	// JWKSURL, when set, is where the issuer's keys are; no discovery
	// (Kubernetes service-account issuers inside a cluster).
	JWKSURL string
}

// BearerOptions are what every issuer's client shares.
type BearerOptions struct {
	CAPEM          []byte
	RequestTimeout time.Duration
	Now            func() time.Time
	Log            *slog.Logger
	Metrics        *metrics.Metrics
}

// Bearers verifies bearer JWTs of several issuers, each with its own
// discovery and keys. The token's (unverified) iss picks the issuer; the
// signature, iss, exp and aud are then checked against that issuer alone,
// so a token of one issuer can never pass on another's keys or audiences.
type Bearers struct {
	byIssuer map[string]*bearerIssuer
}

// bearerIssuer is one issuer, discovered on the first token that names it
// (an issuer outside the cluster being down must not keep extauth from
// starting or from being ready).
type bearerIssuer struct {
	cfg BearerIssuer
	p   *Provider // its HTTP client, key fetches and metrics

	verifier atomic.Pointer[oidc.IDTokenVerifier]
	mu       sync.Mutex // one discovery at a time
	lastTry  time.Time
}

// NewBearers builds the verifiers; it does no network I/O.
func NewBearers(issuers []BearerIssuer, o BearerOptions) (*Bearers, error) {
	if len(issuers) == 0 {
		return nil, errors.New("provider: no bearer issuers")
	}
	b := &Bearers{byIssuer: make(map[string]*bearerIssuer, len(issuers))}
	for _, is := range issuers {
		if _, dup := b.byIssuer[is.IssuerURL]; dup {
			return nil, fmt.Errorf("provider: bearer issuer %s listed twice", is.IssuerURL)
		}
		p, err := New(Config{IssuerURL: is.IssuerURL, CAPEM: o.CAPEM, RequestTimeout: o.RequestTimeout}, o.Now, o.Log, o.Metrics)
		if err != nil {
			return nil, err
		}
		b.byIssuer[is.IssuerURL] = &bearerIssuer{cfg: is, p: p}
	}
	return b, nil
}

// Verify checks raw against the issuer it names and returns the token and
// that issuer. Errors wrap one of the ErrBearer* reasons.
func (b *Bearers) Verify(ctx context.Context, raw string) (*oidc.IDToken, *BearerIssuer, error) {
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, nil, err
	}
	is, ok := b.byIssuer[iss]
	if !ok {
		return nil, nil, ErrBearerIssuerUnknown
	}
	v, err := is.ready(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrBearerIssuerUnavailable, iss, err)
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		if _, expired := errors.AsType[*oidc.TokenExpiredError](err); expired {
			return nil, nil, fmt.Errorf("%w: %w", ErrBearerExpired, err)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrBearerInvalid, err)
	}
	if !audienceAccepted(tok.Audience, is.cfg.Audiences) {
		return nil, nil, ErrBearerAudience
	}
	return tok, &is.cfg, nil
}

// audienceAccepted reports whether a token's aud names one of accepted.
func audienceAccepted(aud, accepted []string) bool {
	for _, a := range aud {
		if slices.Contains(accepted, a) {
			return true
		}
	}
	return false
}

// unverifiedIssuer reads iss from a JWT's payload without verifying it:
// it only chooses which issuer's keys to verify with.
func unverifiedIssuer(raw string) (string, error) {
	if len(raw) > maxBearerBytes {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBearerMalformed, maxBearerBytes)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", ErrBearerMalformed
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ErrBearerMalformed
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Iss == "" {
		return "", fmt.Errorf("%w: no iss claim", ErrBearerMalformed)
	}
	return claims.Iss, nil
}

// ready returns the issuer's verifier, discovering it first when needed,
// at most once per BearerRetry.
func (is *bearerIssuer) ready(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	if v := is.verifier.Load(); v != nil {
		return v, nil
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	if v := is.verifier.Load(); v != nil {
		return v, nil // discovered while this token waited
	}
	now := is.p.now()
	if !is.lastTry.IsZero() && now.Sub(is.lastTry) < BearerRetry {
		return nil, fmt.Errorf("discovery failed less than %s ago", BearerRetry)
	}
	is.lastTry = now
	// The discovery serves every later token, not just this request's.
	v, err := is.discover(context.WithoutCancel(ctx))
	if err != nil {
		is.p.log.Warn("bearer issuer discovery failed", "issuer", is.cfg.IssuerURL, "retry_after", BearerRetry.String(), "error", err)
		return nil, err
	}
	is.verifier.Store(v)
	is.p.log.Info("bearer issuer discovered", "issuer", is.cfg.IssuerURL, "jwks", is.cfg.JWKSURL != "")
	return v, nil
}

// discover finds the issuer's keys (its discovery document's jwks_uri, or
// the configured JWKSURL) and builds its verifier.
func (is *bearerIssuer) discover(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	p := is.p
	jwksURL, algs := is.cfg.JWKSURL, []string(nil)
	if jwksURL == "" {
		dctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointDiscovery), p.cfg.RequestTimeout)
		defer cancel()
		op, err := oidc.NewProvider(oidc.ClientContext(dctx, p.client), is.cfg.IssuerURL)
		if err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		var doc discoveryDoc
		if err := op.Claims(&doc); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		jwksURL, algs = doc.JWKSURI, supportedAlgs(doc.IDTokenSigningAlgs)
	}
	keys, err := p.fetchKeys(ctx, jwksURL)
	if err != nil {
		return nil, err
	}
	if len(algs) == 0 {
		// Without discovery (or an empty list there): the algorithms of
		// the published keys, else go-oidc's RS256.
		algs = keyAlgs(keys)
	}
	ks := newKeySet(keys, p.now(), func(ctx context.Context) ([]jose.JSONWebKey, error) {
		return p.fetchKeys(ctx, jwksURL)
	}, p.now, p.countRefetch)
	return oidc.NewVerifier(is.cfg.IssuerURL, ks, &oidc.Config{SkipClientIDCheck: true, Now: p.now, SupportedSigningAlgs: algs}), nil
}

// keyAlgs are the signing algorithms the keys declare, as extauth knows them.
func keyAlgs(keys []jose.JSONWebKey) []string {
	var algs []string
	for _, k := range keys {
		if k.Algorithm != "" && !slices.Contains(algs, k.Algorithm) {
			algs = append(algs, k.Algorithm)
		}
	}
	return supportedAlgs(algs)
}
