// Package assertion signs the identity of an allowed check as a short-lived
// JWT (assertion.*), so that an app behind the gateway can verify who the
// user is against extauth's JWKS instead of believing plain headers.
package assertion

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	jose "github.com/go-jose/go-jose/v4"
)

// maxKeyFileBytes bounds a key file: a PEM private key is a few hundred bytes.
const maxKeyFileBytes = 64 << 10

// Key is one signing key: an EC P-256 key (ES256) or an Ed25519 key
// (EdDSA), named by its RFC 7638 thumbprint.
type Key struct {
	signer crypto.Signer
	alg    jose.SignatureAlgorithm
	kid    string
}

// Alg is the key's JWS algorithm: ES256 or EdDSA.
func (k *Key) Alg() string { return string(k.alg) }

// KeyID is the key's kid: the base64url SHA-256 thumbprint of its public
// JWK (RFC 7638), the same on every replica that reads the same file.
func (k *Key) KeyID() string { return k.kid }

// Public is the key's public JWK, as the JWKS publishes it.
func (k *Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// ParseKey reads a PEM "PRIVATE KEY" block (PKCS#8) holding an EC P-256 or
// an Ed25519 key; "EC PRIVATE KEY" (SEC 1, what `openssl ecparam -genkey`
// writes) is accepted too.
func ParseKey(data []byte) (*Key, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block: want a PKCS#8 PRIVATE KEY (extauth keygen --assertion)")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block: put one key in each file")
	}
	var parsed any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY (PKCS#8)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	k := &Key{}
	switch key := parsed.(type) {
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("EC key on %s: want P-256 (ES256)", key.Curve.Params().Name)
		}
		k.signer, k.alg = key, jose.ES256
	case ed25519.PrivateKey:
		k.signer, k.alg = key, jose.EdDSA
	default:
		return nil, fmt.Errorf("a %T: want an EC P-256 or an Ed25519 key", parsed)
	}
	jwk := jose.JSONWebKey{Key: k.signer.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint: %w", err)
	}
	k.kid = base64.RawURLEncoding.EncodeToString(tp)
	return k, nil
}

// LoadKeyFile reads and parses a key file.
func LoadKeyFile(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a key", path, maxKeyFileBytes)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// GenerateKey makes a new EC P-256 key and returns it as a PKCS#8 PEM
// block (extauth keygen --assertion). ES256 is what every JWT library
// verifies; Ed25519 keys (openssl genpkey -algorithm ed25519) work too.
func GenerateKey(random io.Reader) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), random)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
