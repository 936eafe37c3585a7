package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/extauth/extauth/pkg/metrics"
)

// MinKeyRefetch is the least time between two fetches of the JWKS for a
// token whose kid the key set does not know.
const MinKeyRefetch = 30 * time.Second

// maxJWKSBytes bounds the provider's JWKS document.
const maxJWKSBytes = 1 << 20

// signingAlgs are the JWS algorithms a token may be signed with, as go-oidc
// supports them; discovery narrows them per provider.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

var (
	errUnknownKey   = errors.New("no key in the provider's JWKS has the token's kid")
	errBadSignature = errors.New("signature does not verify with the provider's key")
)

// keySet is the provider's JWKS as the verifiers use it (an oidc.KeySet).
// go-oidc's RemoteKeySet fetches the JWKS again for every token that fails
// to verify, so that anyone can make extauth ask the provider once per
// forged logout or bearer token. This one fetches again only for a kid it
// does not know (a provider rotating its keys), and at most once per
// MinKeyRefetch; a bad signature under a known kid is just refused.
type keySet struct {
	fetch func(ctx context.Context) ([]jose.JSONWebKey, error)
	now   func() time.Time
	// count notes a refetch: fetched, throttled or error.
	count func(result string)

	keys      atomic.Pointer[[]jose.JSONWebKey]
	mu        sync.Mutex // one refetch at a time
	lastFetch time.Time
}

func newKeySet(keys []jose.JSONWebKey, fetchedAt time.Time, fetch func(context.Context) ([]jose.JSONWebKey, error), now func() time.Time, count func(string)) *keySet {
	k := &keySet{fetch: fetch, now: now, count: count, lastFetch: fetchedAt}
	k.keys.Store(&keys)
	return k
}

// VerifySignature implements oidc.KeySet. The verifier has checked the
// algorithm against the provider's list already.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("a token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	payload, err := verifyWith(jws, *k.keys.Load(), kid)
	if !errors.Is(err, errUnknownKey) {
		return payload, err
	}
	keys, err := k.refetch(ctx)
	if err != nil {
		return nil, err
	}
	return verifyWith(jws, keys, kid)
}

// verifyWith tries the keys of kid (every key when the token names none).
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) ([]byte, error) {
	known := false
	for i := range keys {
		key := &keys[i]
		if kid != "" && key.KeyID != kid || key.Use != "" && key.Use != "sig" {
			continue
		}
		known = true
		if payload, err := jws.Verify(key); err == nil {
			return payload, nil
		}
	}
	if !known || kid == "" {
		// A token without a kid that no key verifies may be signed by a
		// new key as well: it may ask for a (throttled) refetch too.
		return nil, errUnknownKey
	}
	return nil, errBadSignature
}

// refetch loads the JWKS again unless it was loaded less than
// MinKeyRefetch ago; either way it returns the keys to try.
func (k *keySet) refetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now := k.now(); now.Sub(k.lastFetch) < MinKeyRefetch {
		// Another token asked a moment ago (perhaps while this one waited
		// for the lock): its keys are the newest there are.
		k.count(metrics.KeyRefetchThrottled)
		return *k.keys.Load(), nil
	}
	k.lastFetch = k.now()
	// The fetch serves every later token, not just this request's.
	keys, err := k.fetch(context.WithoutCancel(ctx))
	if err != nil {
		k.count(metrics.KeyRefetchError)
		return nil, err
	}
	k.count(metrics.KeyRefetchFetched)
	k.keys.Store(&keys)
	return keys, nil
}

// fetchKeys reads the JWKS at jwksURI; it must hold at least one key.
func (p *Provider) fetchKeys(ctx context.Context, jwksURI string) ([]jose.JSONWebKey, error) {
	if jwksURI == "" {
		return nil, errors.New("discovery: no jwks_uri")
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, metrics.EndpointJWKS), p.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURI, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s answered %s", jwksURI, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks: %s is larger than %d bytes", jwksURI, maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("jwks: %s has no keys", jwksURI)
	}
	return set.Keys, nil
}
