package session

import (
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

// Name is the session cookie's name.
func (s *Store) Name() string { return s.opts.Name }

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
	sealed, err := s.Seal(st)
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
	names []string // the cookie names they set
	// Size is the encoded session in bytes.
	Size int
}

// Seal encrypts st and builds its cookies; Max-Age runs to st.ExpiresAt.
func (s *Store) Seal(st *State) (*Sealed, error) {
	value, err := s.codec.Encode(s.opts.Name, st)
	if err != nil {
		return nil, fmt.Errorf("encode session: %w", err)
	}
	maxAge := int(st.ExpiresAt.Sub(s.now()) / time.Second)
	if maxAge <= 0 {
		return nil, ErrExpired
	}
	sealed := &Sealed{Size: len(value)}
	add := func(name, v string) {
		sealed.lines = append(sealed.lines, s.cookie(name, v, maxAge).String())
		sealed.names = append(sealed.names, name)
	}
	if len(s.opts.Name)+1+len(value) <= s.opts.MaxCookieBytes {
		add(s.opts.Name, value)
		return sealed, nil
	}
	chunk := s.opts.MaxCookieBytes - len(partName(s.opts.Name, maxParts)) - 1
	n := (len(value) + chunk - 1) / chunk
	if n > maxParts {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(value))
	}
	for i := range n {
		add(partName(s.opts.Name, i), value[i*chunk:min((i+1)*chunk, len(value))])
	}
	return sealed, nil
}

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
	if name == s.opts.Name {
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
