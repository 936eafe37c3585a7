package session

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// The binary encoding of a State. Decoding is on every check's path, so it
// allocates little: the strings of a decoded State point into the buffer
// it was decoded from (unsafe.String) instead of copying each field.
//
// Why that is safe: a Go string must never change, so the bytes under it
// must never be written again. Every buffer decoded this way is owned by
// the State alone and written by nobody afterwards: UnmarshalBinary
// decodes a copy of its input; the cookie codec and the ticket store hand
// over the plaintext that decryption just allocated and keep no reference
// to it; formatUUID and tokens() build a fresh buffer each and return it
// only as strings. Nothing in this package writes a []byte it has turned
// into a string. (The benchmark shows why it is worth it: copying each
// field costs the check a dozen allocations.)

// stateVersion is the first byte of every encoded state, so that a later
// layout can be told apart from this one.
const stateVersion = 1

// flags in the encoding
const (
	flagIDTokenApart = 1 << 0
	// flagAccessLifetime: AccessLifetime follows AccessExpiry (states
	// written before it existed lack it).
	flagAccessLifetime     = 1 << 1
	flagClaimsFromUserinfo = 1 << 2
	// flagClaims: the claims kept for claim rules follow the groups.
	flagClaims = 1 << 3
	knownFlags = flagIDTokenApart | flagAccessLifetime | flagClaimsFromUserinfo | flagClaims
)

// token kinds in the encoding
const (
	tokenAbsent  = 0
	tokenOpaque  = 1 // stored verbatim
	tokenCompact = 2 // a JWS compact serialization stored as its three raw segments
	// tokenCompactSameHeader: as tokenCompact, with the header of the token
	// before it (the access and ID tokens of one provider share theirs).
	tokenCompactSameHeader = 3
)

// limits that keep a hostile (even if authenticated) input from allocating much
const (
	maxGroups    = 4096
	maxClaims    = 64 // claims kept for claim rules
	maxFieldSize = 64 << 10
	maxLifetime  = 10 * 365 * 24 * 3600 // seconds: no access token lives longer
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
	lifetime := int64(s.AccessLifetime / time.Second)
	if lifetime > 0 {
		flags |= flagAccessLifetime
	}
	if s.ClaimsFromUserinfo {
		flags |= flagClaimsFromUserinfo
	}
	if len(s.Claims) > 0 {
		flags |= flagClaims
	}
	b = append(b, flags)
	b = binary.AppendVarint(b, unixMilliOrZero(s.CreatedAt))
	b = binary.AppendVarint(b, unixOrZero(s.ExpiresAt))
	b = binary.AppendVarint(b, unixOrZero(s.AccessExpiry))
	if lifetime > 0 {
		b = binary.AppendUvarint(b, uint64(lifetime))
	}
	b = appendID(b, s.ID)
	b = appendID(b, s.Subject)
	// Most deployments use sub as the user claim: store it once.
	if s.User == s.Subject {
		b = appendString(b, "")
	} else {
		b = appendID(b, s.User)
	}
	b = appendString(b, s.Email)
	b = appendString(b, s.PreferredUsername)
	b = appendID(b, s.SID)
	b = binary.AppendUvarint(b, uint64(len(s.Groups)))
	for _, g := range s.Groups {
		// As text: a large state is deflated, and groups as text repeat
		// what its tokens say, which deflate folds away.
		b = appendString(b, g)
	}
	if len(s.Claims) > 0 {
		b = binary.AppendUvarint(b, uint64(len(s.Claims)))
		// Sorted: the same state always encodes to the same bytes.
		for _, name := range slices.Sorted(maps.Keys(s.Claims)) {
			b = appendString(b, name)
			b = binary.AppendUvarint(b, uint64(len(s.Claims[name])))
			for _, v := range s.Claims[name] {
				b = appendString(b, v)
			}
		}
	}
	if s.rawTokens != nil {
		// Never decoded: write back the bytes as they came.
		return append(b, s.rawTokens...), nil
	}
	var header []byte
	b = appendToken(b, s.tokens.AccessToken, &header)
	b = appendToken(b, s.tokens.IDToken, &header)
	b = appendToken(b, s.tokens.RefreshToken, &header)
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
	if flags&^knownFlags != 0 {
		return errCorrupt
	}
	*s = State{
		IDTokenApart:       flags&flagIDTokenApart != 0,
		ClaimsFromUserinfo: flags&flagClaimsFromUserinfo != 0,
		CreatedAt:          timeMilliOrZero(d.varint()),
		ExpiresAt:          timeOrZero(d.varint()),
		AccessExpiry:       timeOrZero(d.varint()),
	}
	if flags&flagAccessLifetime != 0 {
		sec := d.uvarint()
		if sec == 0 || sec > maxLifetime {
			return errCorrupt
		}
		s.AccessLifetime = time.Duration(sec) * time.Second
	}
	s.ID = d.id()
	s.Subject = d.id()
	s.User = d.id()
	if s.User == "" {
		s.User = s.Subject
	}
	s.Email = d.string()
	s.PreferredUsername = d.string()
	s.SID = d.id()
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
	if flags&flagClaims != 0 && !s.decodeClaims(&d) {
		return errCorrupt
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

// decodeClaims reads what MarshalBinary wrote of s.Claims.
func (s *State) decodeClaims(d *decoder) bool {
	n := d.uvarint()
	if n == 0 || n > maxClaims || n > uint64(len(d.b)) {
		return false
	}
	s.Claims = make(map[string][]string, n)
	for range n {
		name := d.string()
		k := d.uvarint()
		if k > maxGroups || k > uint64(len(d.b)) {
			return false
		}
		values := make([]string, k)
		for i := range values {
			values[i] = d.string()
		}
		if _, dup := s.Claims[name]; dup || d.err != nil {
			return false
		}
		s.Claims[name] = values
	}
	return true
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

// appendID writes an identifier. Providers (Keycloak, Entra ID, many
// others) use UUIDs for sub and sid: a canonical lowercase UUID is stored as
// its 16 bytes instead of 36 characters, which keeps a Keycloak session
// inside one cookie with room to spare. The length field tells the forms
// apart: an even value is 2×length of a plain string, 1 marks a UUID.
func appendID(b []byte, s string) []byte {
	if u, ok := parseUUID(s); ok {
		b = append(b, 1)
		return append(b, u[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(s))<<1)
	return append(b, s...)
}

// id reads what appendID wrote.
func (d *decoder) id() string {
	v := d.uvarint()
	if v == 1 {
		if len(d.b) < 16 {
			d.fail()
			return ""
		}
		u := d.b[:16]
		d.b = d.b[16:]
		return formatUUID(u)
	}
	if v&1 != 0 || v>>1 > maxFieldSize || v>>1 > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	n := v >> 1
	f := d.b[:n]
	d.b = d.b[n:]
	if n == 0 {
		return ""
	}
	return unsafe.String(&f[0], len(f))
}

const hexDigits = "0123456789abcdef"

// parseUUID accepts only the canonical lowercase form, so that formatting
// the bytes gives back exactly the same string.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, lo := strings.IndexByte(hexDigits, s[i]), strings.IndexByte(hexDigits, s[i+1])
		if hi < 0 || lo < 0 {
			return u, false
		}
		u[j] = byte(hi<<4 | lo)
		j++
		i += 2
	}
	return u, true
}

func formatUUID(u []byte) string {
	out := make([]byte, 36)
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexDigits[c>>4], hexDigits[c&0xf]
		j += 2
	}
	return unsafe.String(&out[0], len(out))
}

// appendToken stores a JWS compact serialization as its raw segments when
// that round-trips exactly, and anything else verbatim. header holds the
// raw header of the last compact token written, which the next may share.
func appendToken(b []byte, tok string, header *[]byte) []byte {
	if tok == "" {
		return append(b, tokenAbsent)
	}
	if segs := strings.Split(tok, "."); len(segs) == 3 && !strings.ContainsAny(tok, "\r\n") {
		// Strict decoding rejects padding and non-zero trailing bits, so a
		// segment that decodes re-encodes to exactly itself. (It skips CR and
		// LF, hence the check above.)
		var raw [3][]byte
		ok := true
		for i, seg := range segs {
			var err error
			if raw[i], err = b64.DecodeString(seg); err != nil {
				ok = false
				break
			}
		}
		if ok {
			if *header != nil && bytes.Equal(raw[0], *header) {
				b = append(b, tokenCompactSameHeader)
			} else {
				b = append(b, tokenCompact)
				b = appendBytes(b, raw[0])
			}
			*header = raw[0]
			b = appendBytes(b, raw[1])
			return appendBytes(b, raw[2])
		}
	}
	b = append(b, tokenOpaque)
	return appendString(b, tok)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
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

// rawToken is one token as stored: opaque, or a JWT's raw segments.
type rawToken struct {
	kind    byte
	opaque  string
	h, p, s []byte
}

// readTokens reads the three tokens without re-encoding them, resolving
// shared headers.
func (d *decoder) readTokens() (ts [3]rawToken) {
	var header []byte
	for i := range ts {
		t := &ts[i]
		switch t.kind = d.byte(); t.kind {
		case tokenAbsent:
		case tokenOpaque:
			t.opaque = d.string()
		case tokenCompact:
			t.h, t.p, t.s = d.bytes(), d.bytes(), d.bytes()
			header = t.h
		case tokenCompactSameHeader:
			if header == nil {
				d.fail()
			}
			t.h, t.p, t.s = header, d.bytes(), d.bytes()
		default:
			d.fail()
		}
	}
	return ts
}

// skipTokens walks over the three tokens' framing without decoding them.
func (d *decoder) skipTokens() bool {
	d.readTokens()
	return d.err == nil
}

func (t rawToken) compact() bool { return t.kind == tokenCompact || t.kind == tokenCompactSameHeader }

func (t rawToken) encodedLen() int {
	if !t.compact() {
		return len(t.opaque)
	}
	return b64.EncodedLen(len(t.h)) + b64.EncodedLen(len(t.p)) + b64.EncodedLen(len(t.s)) + 2
}

func (t rawToken) appendTo(buf []byte) []byte {
	if !t.compact() {
		return append(buf, t.opaque...)
	}
	buf = b64.AppendEncode(buf, t.h)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, t.p)
	buf = append(buf, '.')
	return b64.AppendEncode(buf, t.s)
}

// oneToken decodes the i-th token on its own.
func (d *decoder) oneToken(i int) string {
	ts := d.readTokens()
	if d.err != nil || ts[i].kind == tokenAbsent {
		return ""
	}
	if !ts[i].compact() {
		return strings.Clone(ts[i].opaque)
	}
	return string(ts[i].appendTo(make([]byte, 0, ts[i].encodedLen())))
}

// tokens decodes the three tokens, re-encoding compact JWTs into one buffer
// shared by the three strings.
func (d *decoder) tokens() (access, id, refresh string) {
	ts := d.readTokens()
	if d.err != nil {
		return "", "", ""
	}
	size := 0
	for _, t := range ts {
		if t.compact() {
			size += t.encodedLen()
		}
	}
	buf := make([]byte, 0, size)
	var out [3]string
	for i, t := range ts {
		if !t.compact() {
			out[i] = t.opaque
			continue
		}
		start := len(buf)
		buf = t.appendTo(buf)
		// buf never grows past its capacity, so earlier strings stay valid.
		out[i] = unsafe.String(&buf[start], len(buf)-start)
	}
	return out[0], out[1], out[2]
}
