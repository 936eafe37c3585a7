// Package session keeps a signed-in browser's state in encrypted cookies.
//
// The state is a typed struct, serialised in a compact binary form (JWTs are
// stored as their raw bytes, not their base64 text, which saves a quarter of
// their size), encrypted and authenticated with AES-256-GCM, and written as
// one cookie when it fits or as numbered parts when it does not.
package session

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// State is what a signed-in browser carries: the claims the check needs, the
// provider's tokens, and the times that decide when the session ends.
type State struct {
	Subject           string   // the ID token's sub
	User              string   // the claim named by oidc.claims.user (default: sub)
	Email             string   // empty when the provider marked it unverified
	PreferredUsername string   // preferred_username (or oidc.claims.preferredUsername)
	Groups            []string // groups (or oidc.claims.groups)
	SID               string   // the provider's session ID, for back-channel logout

	AccessToken  string
	IDToken      string
	RefreshToken string

	// AccessExpiry is when the access token expires by our clock; zero when the
	// provider did not say.
	AccessExpiry time.Time
	// CreatedAt is the sign-in time; a back-channel logout ends only sessions
	// created before it.
	CreatedAt time.Time
	// ExpiresAt is the absolute end of the session (sign-in + session.maxAge),
	// checked with our clock: the cookie's own expiry is only a hint to the browser.
	ExpiresAt time.Time
}

// Expired reports whether the session's absolute lifetime is over at now.
func (s *State) Expired(now time.Time) bool {
	return !now.Before(s.ExpiresAt)
}

// stateVersion is the first byte of every encoded state, so that a later
// layout can be told apart from this one.
const stateVersion = 1

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
	b = binary.AppendVarint(b, unixOrZero(s.CreatedAt))
	b = binary.AppendVarint(b, unixOrZero(s.ExpiresAt))
	b = binary.AppendVarint(b, unixOrZero(s.AccessExpiry))
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
	b = appendToken(b, s.AccessToken)
	b = appendToken(b, s.IDToken)
	b = appendToken(b, s.RefreshToken)
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. It never panics and
// rejects trailing bytes.
func (s *State) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if d.byte() != stateVersion {
		return errCorrupt
	}
	*s = State{
		CreatedAt:    timeOrZero(d.varint()),
		ExpiresAt:    timeOrZero(d.varint()),
		AccessExpiry: timeOrZero(d.varint()),
	}
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
	s.AccessToken = d.token()
	s.IDToken = d.token()
	s.RefreshToken = d.token()
	if d.err != nil || len(d.b) != 0 {
		return errCorrupt
	}
	return nil
}

func (s *State) sizeHint() int {
	n := 64 + len(s.Subject) + len(s.User) + len(s.Email) + len(s.PreferredUsername) + len(s.SID)
	for _, g := range s.Groups {
		n += len(g) + 2
	}
	return n + len(s.AccessToken) + len(s.IDToken) + len(s.RefreshToken)
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
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

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) token() string {
	switch d.byte() {
	case tokenAbsent:
		return ""
	case tokenOpaque:
		return d.string()
	case tokenCompact:
		h, p, s := d.bytes(), d.bytes(), d.bytes()
		if d.err != nil {
			return ""
		}
		n := b64.EncodedLen(len(h)) + b64.EncodedLen(len(p)) + b64.EncodedLen(len(s)) + 2
		out := make([]byte, 0, n)
		out = b64.AppendEncode(out, h)
		out = append(out, '.')
		out = b64.AppendEncode(out, p)
		out = append(out, '.')
		out = b64.AppendEncode(out, s)
		return string(out)
	default:
		d.fail()
		return ""
	}
}
