// Package session keeps a signed-in browser's state in encrypted cookies.
//
// The state is a typed struct, serialised in a compact binary form (JWTs are
// stored as their raw bytes, not their base64 text, which saves a quarter of
// their size), encrypted and authenticated with AES-256-GCM, and written as
// one cookie when it fits or as numbered parts when it does not.
package session

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"time"
	"unsafe"
)

// State is what a signed-in browser carries: the claims the check needs, the
// provider's tokens, and the times that decide when the session ends.
type State struct {
	// ID is extauth's own random session ID: a sign-out here records it as
	// ended, so a copy of the cookie stops passing too.
	ID                string
	Subject           string   // the ID token's sub
	User              string   // the claim named by oidc.claims.user (default: sub)
	Email             string   // empty when the provider marked it unverified
	PreferredUsername string   // preferred_username (or oidc.claims.preferredUsername)
	Groups            []string // groups (or oidc.claims.groups)
	SID               string   // the provider's session ID, for back-channel logout

	// tokens are the provider's tokens; rawTokens their encoded form while
	// nobody has asked for them. The check never needs the tokens, so Load
	// leaves them encoded: re-encoding three JWTs as base64 would be a good
	// part of a check's cost.
	tokens    Tokens
	rawTokens []byte

	// AccessExpiry is when the access token expires by our clock; zero when the
	// provider did not say.
	AccessExpiry time.Time
	// CreatedAt is the sign-in time (kept to the millisecond); a
	// back-channel logout ends only sessions created before it.
	CreatedAt time.Time
	// IDTokenApart says the ID token is not in this state but in a cookie
	// of its own (<name>_id), set once at sign-in: a session too large for
	// one cookie keeps what a refresh changes in one cookie, so that the
	// refresh travels in the check's single Set-Cookie. See Store.Seal.
	IDTokenApart bool
	// ExpiresAt is the absolute end of the session (sign-in + session.maxAge),
	// checked with our clock: the cookie's own expiry is only a hint to the browser.
	ExpiresAt time.Time
}

// Tokens are the provider's tokens a session keeps (per session.storeTokens).
type Tokens struct {
	AccessToken  string
	IDToken      string
	RefreshToken string
}

// Tokens returns the session's tokens, decoding them on first use. A State
// belongs to one request: this is not safe for concurrent use.
func (s *State) Tokens() Tokens {
	if s.rawTokens != nil {
		d := decoder{b: s.rawTokens}
		s.tokens.AccessToken, s.tokens.IDToken, s.tokens.RefreshToken = d.tokens()
		s.rawTokens = nil
	}
	return s.tokens
}

// RefreshToken is Tokens().RefreshToken without decoding the other two:
// the check needs only this one to look up a shared refresh.
func (s *State) RefreshToken() string {
	if s.rawTokens == nil {
		return s.tokens.RefreshToken
	}
	d := decoder{b: s.rawTokens}
	for range 2 {
		if !d.skipToken() {
			return ""
		}
	}
	return d.oneToken()
}

// SetTokens replaces the session's tokens.
func (s *State) SetTokens(t Tokens) {
	s.tokens, s.rawTokens = t, nil
}

// Expired reports whether the session's absolute lifetime is over at now.
func (s *State) Expired(now time.Time) bool {
	return !now.Before(s.ExpiresAt)
}

// stateVersion is the first byte of every encoded state, so that a later
// layout can be told apart from this one.
const stateVersion = 1

// flags in the encoding
const flagIDTokenApart = 1 << 0

// token kinds in the encoding
const (
	tokenAbsent  = 0
	tokenOpaque  = 1 // stored verbatim
	tokenCompact = 2 // a JWS compact serialization stored as its three raw segments
)

// limits that keep a hostile (even if authenticated) input from allocating much
const (
	maxGroups    = 4096
	maxFieldSize = 64 << 10
)

var errCorrupt = errors.New("session: corrupt state")

// MarshalBinary encodes the state compactly.
func (s *State) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, s.sizeHint())
	b = append(b, stateVersion)
	var flags byte
	if s.IDTokenApart {
		flags |= flagIDTokenApart
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, unixMilliOrZero(s.CreatedAt))
	b = binary.AppendVarint(b, unixOrZero(s.ExpiresAt))
	b = binary.AppendVarint(b, unixOrZero(s.AccessExpiry))
	b = appendString(b, s.ID)
	b = appendString(b, s.Subject)
	// Most deployments use sub as the user claim: store it once.
	if s.User == s.Subject {
		b = appendString(b, "")
	} else {
		b = appendString(b, s.User)
	}
	b = appendString(b, s.Email)
	b = appendString(b, s.PreferredUsername)
	b = appendString(b, s.SID)
	b = binary.AppendUvarint(b, uint64(len(s.Groups)))
	for _, g := range s.Groups {
		b = appendString(b, g)
	}
	if s.rawTokens != nil {
		// Never decoded: write back the bytes as they came.
		return append(b, s.rawTokens...), nil
	}
	b = appendToken(b, s.tokens.AccessToken)
	b = appendToken(b, s.tokens.IDToken)
	b = appendToken(b, s.tokens.RefreshToken)
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. It never panics and
// rejects trailing bytes.
func (s *State) UnmarshalBinary(data []byte) error {
	return s.unmarshalOwned(bytes.Clone(data))
}

// unmarshalOwned is UnmarshalBinary for a buffer the state may keep: its
// strings point into data instead of copying each field, which keeps the
// check to a handful of allocations. data must never change afterwards.
func (s *State) unmarshalOwned(data []byte) error {
	d := decoder{b: data}
	if d.byte() != stateVersion {
		return errCorrupt
	}
	flags := d.byte()
	if flags&^flagIDTokenApart != 0 {
		return errCorrupt
	}
	*s = State{
		IDTokenApart: flags&flagIDTokenApart != 0,
		CreatedAt:    timeMilliOrZero(d.varint()),
		ExpiresAt:    timeOrZero(d.varint()),
		AccessExpiry: timeOrZero(d.varint()),
	}
	s.ID = d.string()
	s.Subject = d.string()
	s.User = d.string()
	if s.User == "" {
		s.User = s.Subject
	}
	s.Email = d.string()
	s.PreferredUsername = d.string()
	s.SID = d.string()
	n := d.uvarint()
	if n > maxGroups || n > uint64(len(d.b)) {
		return errCorrupt
	}
	if n > 0 {
		s.Groups = make([]string, n)
		for i := range s.Groups {
			s.Groups[i] = d.string()
		}
	}
	if d.err != nil {
		return errCorrupt
	}
	// Check the token section's framing now, so a corrupt state fails here
	// and not at first use; decoding its base64 waits for Tokens().
	raw := d.b
	if !d.skipTokens() || len(d.b) != 0 {
		return errCorrupt
	}
	s.rawTokens = raw
	return nil
}

func (s *State) sizeHint() int {
	n := 64 + len(s.ID) + len(s.Subject) + len(s.User) + len(s.Email) + len(s.PreferredUsername) + len(s.SID)
	for _, g := range s.Groups {
		n += len(g) + 2
	}
	return n + len(s.tokens.AccessToken) + len(s.tokens.IDToken) + len(s.tokens.RefreshToken) + len(s.rawTokens)
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func timeMilliOrZero(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func timeOrZero(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var b64 = base64.RawURLEncoding.Strict()

// appendToken stores a JWS compact serialization as its raw segments when
// that round-trips exactly, and anything else verbatim.
func appendToken(b []byte, tok string) []byte {
	if tok == "" {
		return append(b, tokenAbsent)
	}
	if segs := strings.Split(tok, "."); len(segs) == 3 && !strings.ContainsAny(tok, "\r\n") {
		// Strict decoding rejects padding and non-zero trailing bits, so a
		// segment that decodes re-encodes to exactly itself. (It skips CR and
		// LF, hence the check above.)
		out := append(b, tokenCompact)
		ok := true
		for _, seg := range segs {
			out = binary.AppendUvarint(out, uint64(b64.DecodedLen(len(seg))))
			var err error
			if out, err = b64.AppendDecode(out, []byte(seg)); err != nil {
				ok = false
				break
			}
		}
		if ok {
			return out
		}
	}
	b = append(b, tokenOpaque)
	return appendString(b, tok)
}

// decoder reads the encoding; the first error sticks and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > maxFieldSize || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// string returns the next field as a string that shares the decoder's
// buffer (see unmarshalOwned).
func (d *decoder) string() string {
	b := d.bytes()
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// skipTokens walks over the three tokens' framing without decoding them.
func (d *decoder) skipTokens() bool {
	return d.skipToken() && d.skipToken() && d.skipToken()
}

func (d *decoder) skipToken() bool {
	switch d.byte() {
	case tokenAbsent:
	case tokenOpaque:
		d.bytes()
	case tokenCompact:
		d.bytes()
		d.bytes()
		d.bytes()
	default:
		d.fail()
	}
	return d.err == nil
}

// oneToken decodes the next token on its own.
func (d *decoder) oneToken() string {
	switch d.byte() {
	case tokenOpaque:
		return string(d.bytes())
	case tokenCompact:
		h, p, s := d.bytes(), d.bytes(), d.bytes()
		if d.err != nil {
			return ""
		}
		return b64.EncodeToString(h) + "." + b64.EncodeToString(p) + "." + b64.EncodeToString(s)
	default:
		return ""
	}
}

// tokens decodes the three tokens, re-encoding compact JWTs into one buffer
// shared by the three strings.
func (d *decoder) tokens() (access, id, refresh string) {
	type raw struct {
		kind    byte
		opaque  string
		h, p, s []byte
	}
	var ts [3]raw
	size := 0
	for i := range ts {
		t := &ts[i]
		switch t.kind = d.byte(); t.kind {
		case tokenAbsent:
		case tokenOpaque:
			t.opaque = d.string()
		case tokenCompact:
			t.h, t.p, t.s = d.bytes(), d.bytes(), d.bytes()
			size += b64.EncodedLen(len(t.h)) + b64.EncodedLen(len(t.p)) + b64.EncodedLen(len(t.s)) + 2
		default:
			d.fail()
		}
	}
	if d.err != nil {
		return "", "", ""
	}
	buf := make([]byte, 0, size)
	var out [3]string
	for i, t := range ts {
		if t.kind != tokenCompact {
			out[i] = t.opaque
			continue
		}
		start := len(buf)
		buf = b64.AppendEncode(buf, t.h)
		buf = append(buf, '.')
		buf = b64.AppendEncode(buf, t.p)
		buf = append(buf, '.')
		buf = b64.AppendEncode(buf, t.s)
		// buf never grows past its capacity, so earlier strings stay valid.
		out[i] = unsafe.String(&buf[start], len(buf)-start)
	}
	return out[0], out[1], out[2]
}
