package assertion

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"sync"
	"time"
)

// DefaultMaxEntries and DefaultMaxBytes bound the token cache: past
// either, entries go. The bytes count what an entry holds (the token, the
// identity, the audience), which a session with hundreds of groups or a
// long host makes large.
const (
	DefaultMaxEntries = 10000
	DefaultMaxBytes   = 32 << 20
)

// Options configure a Signer.
type Options struct {
	// Issuer is the tokens' iss.
	Issuer string
	// Lifetime is exp - iat. A token is reused for the same session and
	// audience until half of it is gone, so an app always gets one with at
	// least half its lifetime left.
	Lifetime time.Duration
	// Now is the clock of iat, nbf, exp and reuse (default time.Now).
	Now func() time.Time
	// Rand supplies jti (default crypto/rand).
	Rand io.Reader
	// MaxEntries and MaxBytes bound the cache (default DefaultMaxEntries
	// and DefaultMaxBytes).
	MaxEntries int
	MaxBytes   int
}

// Identity is what a token asserts, from the session of an allowed check.
type Identity struct {
	// Session is extauth's session ID ("" for a bearer token): tokens are
	// cached per session.
	Session           string
	Subject           string
	Email             string
	PreferredUsername string
	Groups            []string
	SID               string
}

func (id *Identity) equal(o *Identity) bool {
	return id.Session == o.Session && id.Subject == o.Subject && id.Email == o.Email &&
		id.PreferredUsername == o.PreferredUsername && id.SID == o.SID && slices.Equal(id.Groups, o.Groups)
}

// Signer signs the identity of allowed checks with the current key and
// publishes it and the previous keys as a JWKS. It is safe for concurrent
// use.
type Signer struct {
	current *Key
	header  string // base64url of the JOSE header of current
	jwks    []byte
	o       Options
	seed    maphash.Seed

	mu    sync.Mutex
	cache map[cacheKey]*entry
	bytes int // the sum of the entries' size
}

type cacheKey struct {
	audience string
	identity uint64 // maphash of the identity; entry.id is compared too
}

type entry struct {
	id      Identity
	token   string
	renewAt time.Time // iat + Lifetime/2
	size    int
}

// entryOverhead is roughly what an entry costs besides its strings: the
// map slot, the entry and the string and slice headers.
const entryOverhead = 256

func (e *entry) sizeWith(audience string) int {
	n := entryOverhead + len(e.token) + len(audience) + len(e.id.Session) + len(e.id.Subject) +
		len(e.id.Email) + len(e.id.PreferredUsername) + len(e.id.SID)
	for _, g := range e.id.Groups {
		n += len(g) + 16
	}
	return n
}

// NewSigner signs with current; previous keys (a rotation in progress)
// are only published.
func NewSigner(current *Key, previous []*Key, o Options) (*Signer, error) {
	if current == nil {
		return nil, errors.New("assertion: no signing key")
	}
	if o.Issuer == "" || o.Lifetime <= 0 {
		return nil, errors.New("assertion: issuer and a positive lifetime are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	keys := []any{current.Public()}
	seen := map[string]bool{current.kid: true}
	for _, k := range previous {
		if seen[k.kid] {
			return nil, fmt.Errorf("assertion: key %s is listed twice", k.kid)
		}
		seen[k.kid] = true
		keys = append(keys, k.Public())
	}
	jwks, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		return nil, fmt.Errorf("assertion: jwks: %w", err)
	}
	header, err := json.Marshal(map[string]string{"alg": current.Alg(), "kid": current.kid, "typ": "JWT"})
	if err != nil {
		return nil, err
	}
	return &Signer{
		current: current,
		header:  base64.RawURLEncoding.EncodeToString(header),
		jwks:    jwks,
		o:       o,
		seed:    maphash.MakeSeed(),
		cache:   map[cacheKey]*entry{},
	}, nil
}

// JWKS is the JSON Web Key Set of the public keys, current first.
func (s *Signer) JWKS() []byte { return s.jwks }

// Len is the number of cached tokens and their size in bytes.
func (s *Signer) Len() (entries, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cache), s.bytes
}

// Token is the assertion of id for audience: the cached one while it has
// more than half its lifetime left, else a new one.
func (s *Signer) Token(id Identity, audience string) (string, error) {
	key := cacheKey{audience: audience, identity: s.hash(&id)}
	now := s.o.Now()
	s.mu.Lock()
	if e := s.cache[key]; e != nil && now.Before(e.renewAt) && e.id.equal(&id) {
		s.mu.Unlock()
		return e.token, nil
	}
	s.mu.Unlock()
	// Sign outside the lock: two checks missing at once both sign, and the
	// later one stays cached.
	tok, err := s.sign(&id, audience, now)
	if err != nil {
		return "", err
	}
	e := &entry{id: id, token: tok, renewAt: now.Add(s.o.Lifetime / 2)}
	e.id.Groups = slices.Clone(id.Groups)
	e.size = e.sizeWith(audience)
	if e.size > s.o.MaxBytes/64 {
		return tok, nil // an outsized identity or host: signed each time, never cached
	}
	s.mu.Lock()
	if old := s.cache[key]; old != nil {
		s.bytes -= old.size
		delete(s.cache, key)
	}
	if len(s.cache) >= s.o.MaxEntries || s.bytes+e.size > s.o.MaxBytes {
		s.evict(now)
	}
	s.cache[key] = e
	s.bytes += e.size
	s.mu.Unlock()
	return tok, nil
}

// evict drops the entries due for renewal, then, while the cache is still
// more than three quarters full (in entries or bytes), arbitrary ones (map
// order is random). Called with mu held; it runs once per quarter of the
// bound's insertions at most.
func (s *Signer) evict(now time.Time) {
	for k, e := range s.cache {
		if !now.Before(e.renewAt) {
			s.bytes -= e.size
			delete(s.cache, k)
		}
	}
	for k, e := range s.cache {
		if len(s.cache) <= s.o.MaxEntries*3/4 && s.bytes <= s.o.MaxBytes*3/4 {
			break
		}
		s.bytes -= e.size
		delete(s.cache, k)
	}
}

func (s *Signer) hash(id *Identity) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for _, v := range []string{id.Session, id.Subject, id.Email, id.PreferredUsername, id.SID} {
		h.WriteString(v)
		h.WriteByte(0)
	}
	for _, g := range id.Groups {
		h.WriteString(g)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// claims are the token's payload; empty values are left out.
type claims struct {
	Issuer            string   `json:"iss"`
	Audience          string   `json:"aud"`
	Subject           string   `json:"sub"`
	Email             string   `json:"email,omitempty"`
	Groups            []string `json:"groups,omitempty"`
	PreferredUsername string   `json:"preferred_username,omitempty"`
	SID               string   `json:"sid,omitempty"`
	IssuedAt          int64    `json:"iat"`
	NotBefore         int64    `json:"nbf"`
	Expiry            int64    `json:"exp"`
	ID                string   `json:"jti"`
}

func (s *Signer) sign(id *Identity, audience string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := io.ReadFull(s.o.Rand, jti[:]); err != nil {
		return "", fmt.Errorf("assertion: jti: %w", err)
	}
	payload, err := json.Marshal(claims{
		Issuer: s.o.Issuer, Audience: audience, Subject: id.Subject, Email: id.Email, Groups: id.Groups,
		PreferredUsername: id.PreferredUsername, SID: id.SID,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(s.o.Lifetime).Unix(),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", err
	}
	input := s.header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := signJWS(s.current, []byte(input), s.o.Rand)
	if err != nil {
		return "", fmt.Errorf("assertion: sign: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// signJWS makes the JWS signature of input: for ES256 the fixed 64-byte
// r||s of RFC 7518 §3.4 (not ASN.1), for EdDSA the Ed25519 signature.
func signJWS(k *Key, input []byte, random io.Reader) ([]byte, error) {
	switch key := k.signer.(type) {
	case *ecdsa.PrivateKey:
		digest := sha256.Sum256(input)
		r, sv, err := ecdsa.Sign(random, key, digest[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		sv.FillBytes(sig[32:])
		return sig, nil
	case ed25519.PrivateKey:
		return key.Sign(nil, input, crypto.Hash(0))
	}
	return nil, fmt.Errorf("unsupported key %T", k.signer)
}
