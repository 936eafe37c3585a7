package session

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/sessions"
)

var (
	// ErrNoSession means the request carries no session cookie.
	ErrNoSession = errors.New("session: no session cookie")
	// ErrExpired means the session's absolute lifetime is over.
	ErrExpired = errors.New("session: expired")
	// ErrTooLarge means the state does not fit maxParts cookies.
	ErrTooLarge = errors.New("session: state too large for cookies")
)

const (
	// DefaultMaxCookieBytes bounds name=value of one cookie: browsers keep
	// 4096 bytes of name and value, and proxies add little room above that.
	DefaultMaxCookieBytes = 4000
	// maxParts bounds how many numbered cookies one session may use.
	maxParts = 8
)

// Options are the cookie attributes from the session.* configuration.
type Options struct {
	Name     string // session.cookieName
	Domain   string
	Path     string
	Secure   bool
	SameSite http.SameSite
	// MaxCookieBytes is the most name=value bytes of one cookie; larger
	// values are split into name_0, name_1, … (default DefaultMaxCookieBytes).
	MaxCookieBytes int
	// AccessTokenOptional lets a session too large for one cookie leave out
	// the access token (when no header needs it: revoking the refresh token
	// revokes the access tokens issued with it, RFC 7009 §2.1).
	AccessTokenOptional bool
}

// Store loads and saves State in cookies.
type Store struct {
	codec *Codec
	opts  Options
	now   func() time.Time
}

// NewStore returns a cookie store; now is the clock that decides expiry.
func NewStore(codec *Codec, opts Options, now func() time.Time) *Store {
	if opts.MaxCookieBytes == 0 {
		opts.MaxCookieBytes = DefaultMaxCookieBytes
	}
	if opts.Path == "" {
		opts.Path = "/"
	}
	return &Store{codec: codec, opts: opts, now: now}
}

// Load returns the session of the request. Errors: ErrNoSession, ErrInvalid
// (tampered, truncated, other secret…) and ErrExpired; none of them is the
// server's fault.
func (s *Store) Load(r *http.Request) (*State, error) {
	value, ok := cookieValue(r.Header, s.opts.Name)
	if !ok {
		value, ok = s.joinParts(r.Header)
	}
	if !ok || value == "" {
		return nil, ErrNoSession
	}
	st := new(State)
	if err := s.codec.Decode(s.opts.Name, value, st); err != nil {
		return nil, ErrInvalid
	}
	if st.Expired(s.now()) {
		return nil, ErrExpired
	}
	return st, nil
}

// joinParts reassembles a split session from name_0, name_1, …
func (s *Store) joinParts(h http.Header) (string, bool) {
	var b strings.Builder
	for i := 0; i <= maxParts; i++ {
		v, ok := cookieValue(h, partName(s.opts.Name, i))
		if !ok {
			return b.String(), i > 0
		}
		if i == maxParts || b.Len()+len(v) > maxValueLen {
			return "", false
		}
		b.WriteString(v)
	}
	return "", false
}

// Save writes st as one cookie when it fits, else as numbered parts, and
// expires the cookies of an earlier layout that the request still carries.
// It returns the encoded size in bytes.
func (s *Store) Save(w http.ResponseWriter, r *http.Request, st *State) (int, error) {
	sealed, err := s.seal(st)
	if err != nil {
		return 0, err
	}
	s.WriteSealed(w, r, sealed)
	return sealed.Size, nil
}

// Sealed is a session encrypted and laid out as Set-Cookie lines, ready to
// be written to any number of answers: a refresh shared by many checks is
// sealed once.
type Sealed struct {
	lines []string // Set-Cookie values, the session (or its first part) first
	names []string // the cookie names they set, and the ones to leave alone
	// Size is the encoded session in bytes (all its cookies).
	Size int
}

// HasCookies reports whether there are cookies to write: a refreshed
// session kept server-side has none.
func (s *Sealed) HasCookies() bool { return len(s.lines) > 0 }

// Seal encrypts st and lays it out in cookies; Max-Age runs to st.ExpiresAt.
// (The context is for stores that write elsewhere, as TicketStore does.)
func (s *Store) Seal(_ context.Context, st *State) (*Sealed, error) { return s.seal(st) }

// Shared seals a state that another check's refresh produced: for cookies,
// the same as Seal.
func (s *Store) Shared(st *State) (*Sealed, error) { return s.seal(st) }

// seal encrypts st and lays it out in cookies.
//
// The layout, in order of preference:
//  1. one cookie <name> with everything;
//  2. the ID token apart in <name>_id, written once at sign-in and left
//     alone afterwards, and the rest — what a refresh changes — in <name>,
//     without the access token if that is what it takes and allowed
//     (AccessTokenOptional); a refresh then still travels in one Set-Cookie,
//     the only one nginx's auth_request_set passes on;
//  3. the rest split into <name>_0, <name>_1, … (a refresh then needs
//     several Set-Cookie headers: nginx drops all but the first).
func (s *Store) seal(st *State) (*Sealed, error) {
	maxAge := int(st.ExpiresAt.Sub(s.now()) / time.Second)
	if maxAge <= 0 {
		return nil, ErrExpired
	}
	sealed := &Sealed{}
	add := func(name, v string) {
		sealed.lines = append(sealed.lines, s.cookie(name, v, maxAge).String())
		sealed.names = append(sealed.names, name)
		sealed.Size += len(v)
	}
	idName := s.opts.Name + idSuffix

	if st.IDTokenApart {
		// A later save (a refresh): the ID token's cookie stays as it is.
		sealed.names = append(sealed.names, idName)
		value, err := s.encodeLean(st)
		if err != nil {
			return nil, err
		}
		return sealed, s.addValue(add, value)
	}
	value, err := s.encode(st)
	if err != nil {
		return nil, err
	}
	if s.fits(s.opts.Name, value) {
		add(s.opts.Name, value)
		return sealed, nil
	}
	// Too large: set the ID token apart if that makes the rest fit one cookie.
	if tokens := st.Tokens(); tokens.IDToken != "" {
		idToken := tokens.IDToken
		apart := *st
		apart.IDTokenApart = true
		tokens.IDToken = ""
		apart.SetTokens(tokens)
		idValue, err := s.codec.Seal(idName, []byte(idToken))
		if err != nil {
			return nil, fmt.Errorf("encode id token: %w", err)
		}
		if mainValue, err := s.encodeLean(&apart); err == nil && s.fits(s.opts.Name, mainValue) && s.fits(idName, idValue) {
			add(s.opts.Name, mainValue) // first: nginx passes only the first
			add(idName, idValue)
			return sealed, nil
		}
	}
	return sealed, s.addValue(add, value)
}

// encodeLean encodes st, leaving out the access token when that is allowed
// and makes it fit one cookie.
func (s *Store) encodeLean(st *State) (string, error) {
	value, err := s.encode(st)
	if err != nil || s.fits(s.opts.Name, value) || !s.opts.AccessTokenOptional || st.Tokens().AccessToken == "" {
		return value, err
	}
	lean := *st
	tokens := lean.Tokens()
	tokens.AccessToken = ""
	lean.SetTokens(tokens)
	return s.encode(&lean)
}

// addValue adds value as one cookie, or split into numbered parts.
func (s *Store) addValue(add func(name, v string), value string) error {
	if s.fits(s.opts.Name, value) {
		add(s.opts.Name, value)
		return nil
	}
	chunk := s.opts.MaxCookieBytes - len(partName(s.opts.Name, maxParts)) - 1
	n := (len(value) + chunk - 1) / chunk
	if n > maxParts {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(value))
	}
	for i := range n {
		add(partName(s.opts.Name, i), value[i*chunk:min((i+1)*chunk, len(value))])
	}
	return nil
}

// IDToken returns the session's ID token, from its own cookie when the
// session keeps it apart; "" when there is none or it cannot be read.
func (s *Store) IDToken(r *http.Request, st *State) string {
	if !st.IDTokenApart {
		return st.Tokens().IDToken
	}
	name := s.opts.Name + idSuffix
	value, ok := cookieValue(r.Header, name)
	if !ok {
		return ""
	}
	b, err := s.codec.Open(name, value)
	if err != nil {
		return ""
	}
	return string(b)
}

func (s *Store) encode(st *State) (string, error) {
	value, err := s.codec.Encode(s.opts.Name, st)
	if err != nil {
		return "", fmt.Errorf("encode session: %w", err)
	}
	return value, nil
}

func (s *Store) fits(name, value string) bool {
	return len(name)+1+len(value) <= s.opts.MaxCookieBytes
}

// idSuffix names the cookie that holds a session's ID token apart.
const idSuffix = "_id"

// WriteSealed sets a sealed session and expires the request's cookies of an
// earlier layout. The session cookie comes first: nginx's auth_request_set
// keeps only the first Set-Cookie of the check's answer.
func (s *Store) WriteSealed(w http.ResponseWriter, r *http.Request, sealed *Sealed) {
	h := w.Header()
	for _, line := range sealed.lines {
		h.Add("Set-Cookie", line)
	}
	s.expireStale(w, r, sealed.names)
}

// Clear expires the session cookie and every part of a split one.
func (s *Store) Clear(w http.ResponseWriter, r *http.Request) {
	s.expireStale(w, r, nil)
	if _, ok := cookieValue(r.Header, s.opts.Name); !ok {
		// Always say it once, so a client that hides its cookies still ends up clean.
		http.SetCookie(w, s.cookie(s.opts.Name, "", -1))
	}
}

// expireStale expires every session cookie of the request not named in keep.
func (s *Store) expireStale(w http.ResponseWriter, r *http.Request, keep []string) {
	if len(keep) == 1 && !s.mayHaveParts(r.Header) {
		return // the usual case: one cookie replaced by one cookie
	}
	for _, c := range r.Cookies() {
		if !s.ownsName(c.Name) || contains(keep, c.Name) {
			continue
		}
		keep = append(keep, c.Name) // once per name
		http.SetCookie(w, s.cookie(c.Name, "", -1))
	}
}

// mayHaveParts is a cheap test for split-session cookies in the request.
func (s *Store) mayHaveParts(h http.Header) bool {
	for _, line := range h["Cookie"] {
		if strings.Contains(line, s.opts.Name+"_") {
			return true
		}
	}
	return false
}

// ownsName reports whether name is the session cookie or one of its parts.
func (s *Store) ownsName(name string) bool {
	if name == s.opts.Name || name == s.opts.Name+idSuffix {
		return true
	}
	rest, ok := strings.CutPrefix(name, s.opts.Name+"_")
	if !ok || rest == "" {
		return false
	}
	_, err := strconv.ParseUint(rest, 10, 8)
	return err == nil
}

func (s *Store) cookie(name, value string, maxAge int) *http.Cookie {
	return s.opts.cookie(name, value, maxAge)
}

// cookie builds an HttpOnly cookie with these attributes; maxAge < 0 expires it.
func (o Options) cookie(name, value string, maxAge int) *http.Cookie {
	return sessions.NewCookie(name, value, &sessions.Options{
		Path:     o.Path,
		Domain:   o.Domain,
		MaxAge:   maxAge,
		Secure:   o.Secure,
		HttpOnly: true,
		SameSite: o.SameSite,
	})
}

func partName(name string, i int) string { return name + "_" + strconv.Itoa(i) }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// cookieValue finds the first cookie called name in the request's Cookie
// headers without parsing (and allocating) all of them: this runs on every check.
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimLeft(part, " \t")
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			v = strings.TrimRight(v, " \t")
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}
