package policy

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPathLen bounds the raw path Match looks at; a longer one is never
// skipped.
const MaxPathLen = 8 << 10

// SkipRule names requests that need no session: one of Methods, and the
// path equal to Path or under PathPrefix (exactly one of the two).
//
// A PathPrefix ending in "/" matches that path and everything below it
// ("/static/" matches "/static/" and "/static/app.js", not "/static"); one
// without matches that path and anything after a "/" ("/public" matches
// "/public" and "/public/x", not "/publicity").
//
// Methods (at least one, upper-case names) are matched exactly, as HTTP
// methods are case-sensitive, and none is implied: a rule for GET does not
// skip HEAD. The path is what is checked: an upstream that honours
// X-HTTP-Method-Override may run a skipped POST as a DELETE on that path.
type SkipRule struct {
	Methods    []string
	Path       string
	PathPrefix string
}

// Skips is a validated set of skip rules. A nil *Skips skips nothing.
type Skips struct {
	rules []skip
}

type skip struct {
	methods []string
	path    string
	prefix  bool
}

// SkipRuleError says which rule of the list passed to NewSkips is wrong, so
// that the configuration can name it ("apps[0].authorization.skip[1].path").
// Field is the rule's field as the configuration spells it: "methods",
// "path" or "pathPrefix" ("" when the problem is the rule as a whole).
type SkipRuleError struct {
	Index int
	Field string
	Err   error
}

func (e *SkipRuleError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("skip rule %d: %v", e.Index, e.Err)
	}
	return fmt.Sprintf("skip rule %d: %s: %v", e.Index, e.Field, e.Err)
}

func (e *SkipRuleError) Unwrap() error { return e.Err }

// NewSkips validates the rules. A path or prefix must be in the form Match
// compares against, NormalizePath's output for itself: a rule that no
// request could match, or one only an ambiguous request could, is a
// mistake to report, not to keep. The errors are *SkipRuleError, joined.
func NewSkips(rules []SkipRule) (*Skips, error) {
	s := &Skips{rules: make([]skip, 0, len(rules))}
	var errs []error
	for i, r := range rules {
		bad := func(field, format string, args ...any) {
			errs = append(errs, &SkipRuleError{Index: i, Field: field, Err: fmt.Errorf(format, args...)})
		}
		if len(r.Methods) == 0 {
			bad("methods", "list at least one method")
		}
		for _, m := range r.Methods {
			if !validMethod(m) {
				bad("methods", "%q is not an upper-case method name", m)
			}
		}
		field, p := "path", r.Path
		switch {
		case r.Path != "" && r.PathPrefix != "":
			bad("", "set path or pathPrefix, not both")
			continue
		case r.Path == "" && r.PathPrefix == "":
			bad("", "set path or pathPrefix")
			continue
		case r.PathPrefix != "":
			field, p = "pathPrefix", r.PathPrefix
		}
		switch norm, ok := NormalizePath(p); {
		case !strings.HasPrefix(p, "/"):
			bad(field, "%q does not start with \"/\"", p)
		case field == "pathPrefix" && p == "/":
			bad(field, "\"/\" would skip everything")
		case !ok:
			bad(field, "%q would match no request: a rule is printable ASCII without spaces, \"%%\", \";\", \"\\\", \"?\" or \"#\", and without \"//\", \".\" or \"..\" segments", p)
		case norm != p:
			bad(field, "%q is not in normal form (%q)", p, norm)
		}
		s.rules = append(s.rules, skip{methods: append([]string(nil), r.Methods...), path: p, prefix: field == "pathPrefix"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// validMethod accepts the upper-case method names HTTP uses ("GET",
// "M-SEARCH", "BASELINE-CONTROL"). "*" and lower case are refused rather
// than read as "any" or folded: a rule says which methods it means.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Match reports whether a request needs no session. rawPath is the path
// as the client sent it (still escaped; the caller strips the query).
//
// A skip rule is an exception to authentication, so Match only says yes
// when every server on the way would route the request inside a rule:
// nginx and Envoy decode and resolve dot segments before routing, an
// upstream may route on the escaped path, Tomcat and Spring drop ";params",
// Windows servers take "\" for "/" and trim trailing dots and spaces. So
// the path must read the same inside a rule both escaped and decoded, and
// anything that could read differently to one of them makes Match say no:
// invalid or double escapes, escaped "/" or "\", ";", "?", "#", "//",
// "." and ".." segments (real clients resolve them before sending),
// control or non-ASCII characters (full-width "．．" becomes ".." under NFKC).
// A refused path is not denied, it is authenticated like any other.
func (s *Skips) Match(method, rawPath string) bool {
	if s == nil || len(s.rules) == 0 {
		return false
	}
	decoded, ok := NormalizePath(rawPath)
	if !ok {
		return false
	}
	// An upstream that routes on the escaped path must land inside a
	// rule as well as nginx, which routes on the decoded one.
	return s.inside(method, rawPath) && (decoded == rawPath || s.inside(method, decoded))
}

func (s *Skips) inside(method, p string) bool {
	for i := range s.rules {
		r := &s.rules[i]
		if !r.allows(method) {
			continue
		}
		if !r.prefix {
			if p == r.path {
				return true
			}
			continue
		}
		if !strings.HasPrefix(p, r.path) {
			continue
		}
		// "/public" covers "/public" and "/public/…", not "/publicity".
		if strings.HasSuffix(r.path, "/") || len(p) == len(r.path) || p[len(r.path)] == '/' {
			return true
		}
	}
	return false
}

func (r *skip) allows(method string) bool {
	for _, m := range r.methods {
		if m == method {
			return true
		}
	}
	return false
}

// NormalizePath decodes a raw request path once and reports whether it is
// unambiguous: no server on the way could read it as a different path,
// other than by decoding it. It returns rawPath itself (no allocation) when
// there is nothing to decode, and false for anything Match refuses: not
// starting with "/", over MaxPathLen, a "%" not followed by two hex digits,
// an escape that decodes to "/", "\", ";", "?", "#", "%" (double encoding),
// a control or non-ASCII byte; a raw "\", ";", "?", "#", space, control or
// non-ASCII byte; an empty segment ("//") other than a final one (the
// trailing slash of "/static/"); a segment of only dots and spaces (".",
// "..", "...", ". ."), which dot-segment removal, Windows' trimming of
// trailing dots and spaces or a server that drops spaces turns into ".."
// or into nothing. The one decoded character a raw path cannot have is
// the space (%20): it is allowed inside a segment.
func NormalizePath(rawPath string) (string, bool) {
	if rawPath == "" || len(rawPath) > MaxPathLen || rawPath[0] != '/' {
		return "", false
	}
	escaped := false
	for i := 0; i < len(rawPath); i++ {
		c := rawPath[i]
		if c != '%' {
			if !plainByte(c) {
				return "", false
			}
			continue
		}
		if i+2 >= len(rawPath) || !isHex(rawPath[i+1]) || !isHex(rawPath[i+2]) {
			return "", false
		}
		if d := unhex(rawPath[i+1])<<4 | unhex(rawPath[i+2]); d != ' ' && !plainByte(d) || d == '/' || d == '%' {
			return "", false
		}
		escaped = true
		i += 2
	}
	p := rawPath
	if escaped {
		p = percentDecode(rawPath)
	}
	if !plainSegments(p) {
		return "", false
	}
	return p, true
}

// plainByte: printable ASCII other than a space and the characters some
// server on the way reads as structure rather than as part of a name.
func plainByte(c byte) bool {
	return c > ' ' && c < 0x7F && c != '\\' && c != ';' && c != '?' && c != '#'
}

// plainSegments checks the segments of a decoded path (it starts with "/").
func plainSegments(p string) bool {
	for start := 1; start <= len(p); {
		end := strings.IndexByte(p[start:], '/')
		last := end < 0
		if last {
			end = len(p)
		} else {
			end += start
		}
		seg := p[start:end]
		if seg == "" && !last {
			return false // "//": collapsed by nginx, not by every upstream
		}
		if seg != "" && strings.Trim(seg, ". ") == "" {
			return false
		}
		start = end + 1
	}
	return true
}

// percentDecode decodes a path NormalizePath has checked: every "%" starts
// a valid escape.
func percentDecode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
