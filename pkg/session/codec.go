package session

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/gorilla/securecookie"
)

// ErrInvalid means a cookie value could not be decoded: tampered, truncated,
// made with another secret, or not ours at all. Callers treat it as "no
// session" and never as a server error.
var ErrInvalid = errors.New("session: invalid cookie value")

// Codec encrypts and authenticates cookie values with AES-256-GCM.
//
// It implements securecookie.Codec for values that implement
// encoding.BinaryMarshaler / encoding.BinaryUnmarshaler, so it can stand in
// for gorilla/securecookie in a gorilla/sessions store. Unlike securecookie it
// keeps no timestamp of its own: expiry lives inside the state and is checked
// with our clock. The cookie name is bound as additional data, so a value
// made for one cookie is not accepted as another.
//
// Layout of a value before base64url: nonce(12) | seal(format byte | payload).
// The format byte says whether the payload is deflated; only payloads that
// would not fit one cookie are, so the hot path never inflates.
type Codec struct {
	aeads []cipher.AEAD // the first encodes, all decode
	rand  io.Reader
	// compressAbove is the payload size from which encoding tries deflate.
	compressAbove int
	// binding, when set, is bound with the cookie name (For).
	binding string
}

var _ securecookie.Codec = (*Codec)(nil)

const (
	formatRaw     = 0
	formatDeflate = 1

	// maxValueLen bounds what Decode reads: 8 cookie parts of 4 KB.
	maxValueLen = 8 * 4096
	// hkdfInfo separates the keys we derive from any other use of the secrets.
	hkdfInfo = "extauth session cookie v1"
)

// NewCodec derives one AES-256 key from each secret (HKDF-SHA256; secrets
// are 32 bytes or more). rand supplies nonces (crypto/rand.Reader in
// production).
func NewCodec(secrets [][]byte, rand io.Reader) (*Codec, error) {
	if len(secrets) == 0 {
		return nil, errors.New("session: no secrets")
	}
	c := &Codec{rand: rand, compressAbove: 2800}
	for i, s := range secrets {
		if len(s) < 32 {
			return nil, fmt.Errorf("session: secret %d is %d bytes, need 32 or more", i, len(s))
		}
		key, err := hkdf.Key(sha256.New, s, nil, hkdfInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("session: derive key %d: %w", i, err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		c.aeads = append(c.aeads, aead)
	}
	return c, nil
}

// For is the codec of one app of a deployment that serves several: the
// app's name is bound with the cookie name as additional data, so that a
// value sealed for one app is refused by every other, even under the same
// cookie name on a shared cookie domain. The secrets are the same.
func (c *Codec) For(app string) *Codec {
	bound := *c
	bound.binding = app
	return &bound
}

// Encode implements securecookie.Codec.
func (c *Codec) Encode(name string, value any) (string, error) {
	m, ok := value.(encoding.BinaryMarshaler)
	if !ok {
		return "", fmt.Errorf("session: cannot encode %T", value)
	}
	plain, err := m.MarshalBinary()
	if err != nil {
		return "", err
	}
	return c.Seal(name, plain)
}

// Decode implements securecookie.Codec.
func (c *Codec) Decode(name, value string, dst any) error {
	u, ok := dst.(encoding.BinaryUnmarshaler)
	if !ok {
		return fmt.Errorf("session: cannot decode into %T", dst)
	}
	plain, err := c.Open(name, value)
	if err != nil {
		return err
	}
	// Open's result is a fresh buffer nobody else holds: a State may keep it.
	if st, ok := dst.(*State); ok {
		err = st.unmarshalOwned(plain)
	} else {
		err = u.UnmarshalBinary(plain)
	}
	if err != nil {
		return ErrInvalid
	}
	return nil
}

// Seal encrypts plain for the cookie called name.
func (c *Codec) Seal(name string, plain []byte) (string, error) {
	aead := c.aeads[0]
	format := byte(formatRaw)
	if len(plain) > c.compressAbove {
		if z := deflate(plain); len(z) < len(plain) {
			plain, format = z, formatDeflate
		}
	}
	ns := aead.NonceSize()
	buf := make([]byte, ns, ns+1+len(plain)+aead.Overhead())
	if _, err := io.ReadFull(c.rand, buf); err != nil {
		return "", fmt.Errorf("session: read nonce: %w", err)
	}
	msg := append(buf[ns:], format)
	msg = append(msg, plain...)
	sealed := aead.Seal(buf[ns:ns], buf[:ns], msg, c.ad(name))
	return b64.EncodeToString(buf[:ns+len(sealed)]), nil
}

// Open authenticates and decrypts a value made by Seal for the cookie called
// name, with any of the secrets. Every failure is ErrInvalid.
func (c *Codec) Open(name, value string) ([]byte, error) {
	// The base64 decoder skips CR and LF: a value with them is not one we wrote.
	if len(value) == 0 || len(value) > maxValueLen ||
		strings.IndexByte(value, '\n') >= 0 || strings.IndexByte(value, '\r') >= 0 {
		return nil, ErrInvalid
	}
	raw := make([]byte, b64.DecodedLen(len(value)))
	n, err := b64.Decode(raw, []byte(value))
	if err != nil || n != len(raw) {
		return nil, ErrInvalid
	}
	ad := c.ad(name)
	for i, aead := range c.aeads {
		ns := aead.NonceSize()
		if len(raw) < ns+1+aead.Overhead() {
			return nil, ErrInvalid
		}
		// The last key decrypts in place; the others into a fresh slice,
		// since a failed Open zeroes its output and the next key needs the
		// ciphertext intact.
		var dst []byte
		if i == len(c.aeads)-1 {
			dst = raw[ns:ns]
		}
		plain, err := aead.Open(dst, raw[:ns], raw[ns:], ad)
		if err != nil {
			continue
		}
		switch plain[0] {
		case formatRaw:
			return plain[1:], nil
		case formatDeflate:
			return inflate(plain[1:])
		default:
			return nil, ErrInvalid
		}
	}
	return nil, ErrInvalid
}

// ad is the additional data of a cookie: its name, after the app's name
// and a NUL (which no cookie name or app name contains) when bound.
func (c *Codec) ad(name string) []byte {
	if c.binding == "" {
		return []byte(name)
	}
	return []byte(c.binding + "\x00" + name)
}

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestCompression)
	return w
}}

func deflate(b []byte) []byte {
	var out bytes.Buffer
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(&out)
	_, _ = w.Write(b)
	_ = w.Close()
	return out.Bytes()
}

// maxInflated bounds decompression, so an authenticated but huge payload
// cannot exhaust memory.
const maxInflated = 256 << 10

func inflate(b []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(b))
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, maxInflated+1))
	if err != nil || len(out) > maxInflated {
		return nil, ErrInvalid
	}
	return out, nil
}
