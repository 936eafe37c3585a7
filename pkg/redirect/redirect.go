// Package redirect decides whether a return URL is safe to send a browser to.
//
// The return URL comes from the untrusted "rd" query parameter or the
// X-Auth-Request-Redirect header, so anything that could make a browser (or a
// proxy/server that decodes or normalises the URL first) leave the allowed
// hosts is an open redirect. The rules below are deliberately strict: when in
// doubt a value is rejected and the caller falls back to "/".
//
// Accepted forms:
//   - a path on this host: "/..." with exactly one leading slash;
//   - an absolute http/https URL, without user info, whose host is the
//     request's own host or matches a configured redirect domain.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxLen bounds the return URL; longer values are not plausible return URLs
// and only give attackers room (and cost us work).
const maxLen = 2048

// maxDecodeRounds bounds repeated percent-decoding. Legitimate URLs are
// encoded at most once or twice; deeper nesting is treated as hostile.
const maxDecodeRounds = 8

// anyPort marks a ":*" domain entry.
const anyPort = -1

// rule is one parsed redirectDomains entry.
type rule struct {
	host     string // lower-case host name, or "[canonical IPv6]"
	wildcard bool   // ".example.com": any strict subdomain of host
	port     int    // 0: default port of the URL's scheme; anyPort; else exact
}

// Validator holds the parsed redirectDomains rules. The zero value and a nil
// *Validator allow only paths and the request's own host.
type Validator struct {
	rules []rule
}

// New parses redirectDomains entries ("app.example.com", ".example.com",
// "app.example.com:8443", ".example.com:*"); an invalid entry is an error
// naming it.
func New(domains []string) (*Validator, error) {
	v := &Validator{}
	for _, d := range domains {
		r, err := parseRule(d)
		if err != nil {
			return nil, fmt.Errorf("redirect: invalid redirect domain %q: %w", d, err)
		}
		v.rules = append(v.rules, r)
	}
	return v, nil
}

func parseRule(d string) (rule, error) {
	var r rule
	s := d
	if strings.HasPrefix(s, ".") {
		r.wildcard = true
		s = s[1:]
	}
	if s == "" {
		return r, errors.New("empty host")
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@\\") {
		return r, errors.New("must be a bare host name with optional :port or :*, without scheme, path or user info")
	}
	host, port, hasPort, bracketed, ok := splitHostPort(s)
	if !ok {
		return r, errors.New("malformed host[:port]")
	}
	r.host, ok = canonicalHost(host, bracketed)
	if !ok {
		return r, errors.New("invalid host name")
	}
	if hasPort {
		if port == "*" {
			r.port = anyPort
		} else if r.port, ok = parsePort(port); !ok {
			return r, errors.New("port must be 1-65535 or *")
		}
	}
	if r.wildcard {
		// A subdomain wildcard only makes sense for DNS names. Browsers parse a
		// host whose last label is numeric as an IPv4 address, so ".0.1" or
		// ".[::1]" could never match a real subdomain.
		last := r.host[strings.LastIndexByte(r.host, '.')+1:]
		if bracketed || isNumericLabel(last) {
			return r, errors.New("subdomain wildcard needs a DNS name")
		}
	}
	return r, nil
}

// Sanitize returns raw when valid, else "/" and false.
func (v *Validator) Sanitize(raw, requestHost string) (string, bool) {
	if v.Valid(raw, requestHost) {
		return raw, true
	}
	return "/", false
}

// Valid reports whether raw is a safe return URL for a request to
// requestHost (the Host the browser used, maybe with port).
func (v *Validator) Valid(raw, requestHost string) bool {
	if raw == "" || len(raw) > maxLen || !utf8.ValidString(raw) {
		return false
	}
	// Browsers silently drop tabs/newlines inside URLs and strip leading
	// control characters and spaces, so "/\t/evil.com" becomes "//evil.com"
	// and " javascript:" becomes "javascript:". They also treat "\" as "/".
	if !cleanChars(raw, false) {
		return false
	}
	// Some servers and proxies percent-decode before redirecting (or decode
	// twice), so every decoded form must be just as clean: "%0a" must not
	// smuggle a header break, "%5c" a backslash, "%c0%af" an overlong "/".
	forms, ok := decodedForms(raw)
	if !ok {
		return false
	}
	for _, f := range forms {
		// A decoded space is allowed ("/My%20File"); all other whitespace and
		// control characters are not. Leading-"//" tricks with spaces are
		// still caught by validPath, which ignores spaces.
		if !utf8.ValidString(f) || !cleanChars(f, true) {
			return false
		}
	}
	if raw[0] == '/' {
		return validPath(raw, forms)
	}
	var rules []rule
	if v != nil {
		rules = v.rules
	}
	return validAbsolute(raw, requestHost, rules)
}

// cleanChars rejects control, format and whitespace characters, backslashes
// and full-width slash look-alikes (NFKC maps them to "/" and "\", which some
// frameworks apply). allowSpace permits U+0020 only.
func cleanChars(s string, allowSpace bool) bool {
	for _, r := range s {
		switch {
		case r == ' ':
			if !allowSpace {
				return false
			}
		case r == '\\', r == '\uFF0F', r == '\uFF3C', r == '\uFE68':
			return false
		case r < 0x20, r == 0x7F, unicode.IsControl(r), unicode.IsSpace(r),
			unicode.Is(unicode.Cf, r): // zero-width and bidi overrides hide tricks
			return false
		}
	}
	return true
}

// decodedForms returns raw percent-decoded once, twice, ... until it stops
// changing (the fixed point included), excluding raw itself.
func decodedForms(raw string) ([]string, bool) {
	var forms []string
	cur := raw
	for i := 0; i < maxDecodeRounds; i++ {
		next := percentDecode(cur)
		if next == cur {
			return forms, true
		}
		forms = append(forms, next)
		cur = next
	}
	return nil, false
}

// percentDecode decodes every valid %XX sequence and leaves anything else
// as is, like the most lenient decoder an intermediary might use.
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
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

// validPath accepts "/..." that stays on this host. "//host" and "/\host" are
// scheme-relative to browsers; the same must hold after percent-decoding
// ("/%2f/evil.com"), after dot-segment removal ("/.//evil.com",
// "/..//evil.com", which servers normalise before redirecting), after
// dropping ";params" (Tomcat-style "/;/evil.com") and after dropping spaces
// (trimmed by some intermediaries).
func validPath(raw string, forms []string) bool {
	if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
		return false
	}
	for _, f := range append([]string{raw}, forms...) {
		p := f
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
		p = strings.ReplaceAll(p, " ", "")
		if strings.HasPrefix(p, "//") ||
			strings.HasPrefix(removeDotSegments(p, false), "//") ||
			strings.HasPrefix(removeDotSegments(p, true), "//") {
			return false
		}
	}
	// Cross-check with net/url: it must be a plain reference with no scheme,
	// host or opaque part (this also rejects malformed escapes like "%zz").
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "" && u.Host == "" && u.Opaque == "" && u.User == nil
}

// removeDotSegments resolves "." and ".." in an absolute path (RFC 3986
// 5.2.4), keeping empty segments so that a resulting "//" is visible. With
// dropParams, ";..." is removed from each segment first.
func removeDotSegments(p string, dropParams bool) string {
	segs := strings.Split(p, "/")[1:] // p starts with "/"
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		if dropParams {
			if i := strings.IndexByte(s, ';'); i >= 0 {
				s = s[:i]
			}
		}
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// validAbsolute accepts http(s)://host[:port][/path][?query][#fragment] whose
// host is requestHost or matches a rule. The authority is parsed by hand with
// a strict grammar rather than trusting any one URL parser, because parser
// differentials (browser vs Go) are exactly what past advisories exploited.
func validAbsolute(raw, requestHost string, rules []rule) bool {
	var scheme, rest string
	var defPort int
	switch {
	case hasPrefixFold(raw, "http://"):
		scheme, rest, defPort = "http", raw[len("http://"):], 80
	case hasPrefixFold(raw, "https://"):
		scheme, rest, defPort = "https", raw[len("https://"):], 443
	default:
		// javascript:, data:, file:, "http:/x", "http:x", "?x", "#x", ...
		return false
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	// "@" introduces user info (https://example.com@evil.com); "%" would be
	// decoded inside the host by some parsers (evil.com%23.example.com).
	if authority == "" || strings.ContainsAny(authority, "@%") {
		return false
	}
	host, port, ok := parseHostPort(authority)
	if !ok {
		return false
	}
	if port == 0 {
		port = defPort
	}
	// Cross-check: net/url must see the same scheme and host and no user info.
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != scheme || u.Opaque != "" || u.User != nil || u.Host != authority {
		return false
	}

	// The request's own host: same host and same effective port.
	if rh, rp, ok := parseHostPort(requestHost); ok && rh == host {
		if rp == 0 {
			rp = defPort
		}
		if rp == port {
			return true
		}
	}
	for _, r := range rules {
		if r.wildcard {
			// Strict subdomain only: the "." guard stops badexample.com, and
			// hosts are validated label by label so the prefix is real labels.
			if !strings.HasSuffix(host, "."+r.host) {
				continue
			}
		} else if host != r.host {
			continue
		}
		switch r.port {
		case anyPort:
			return true
		case 0:
			// An entry without a port means the scheme's default port only.
			if port == defPort {
				return true
			}
		default:
			if port == r.port {
				return true
			}
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parseHostPort parses "host", "host:port", "[v6]" or "[v6]:port" into a
// canonical host and port (0 when absent). Anything unusual fails, so an
// empty or odd requestHost matches nothing.
func parseHostPort(s string) (host string, port int, ok bool) {
	h, p, hasPort, bracketed, ok := splitHostPort(s)
	if !ok {
		return "", 0, false
	}
	if host, ok = canonicalHost(h, bracketed); !ok {
		return "", 0, false
	}
	if hasPort {
		if port, ok = parsePort(p); !ok {
			return "", 0, false
		}
	}
	return host, port, true
}

func splitHostPort(s string) (host, port string, hasPort, bracketed, ok bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, false, false
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, "", false, true, true
		}
		if rest[0] != ':' {
			return "", "", false, false, false // "[::1]evil.com"
		}
		return host, rest[1:], true, true, true
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false, false, true
	}
	if strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false, false, false // unbracketed IPv6 or junk
	}
	return s[:i], s[i+1:], true, false, true
}

// canonicalHost lower-cases a DNS name or canonicalises an IPv6 literal.
// Only ASCII letters, digits, "-", "_" and "." are allowed in names: anything
// else (non-ASCII that IDNA could map to "/" or ".", "%", "[", ...) is a
// parser-differential risk. A trailing dot is rejected rather than normalised
// because "app.example.com." is a different origin to the browser and the
// safe choice is not to reason about it.
func canonicalHost(h string, bracketed bool) (string, bool) {
	if bracketed {
		for i := 0; i < len(h); i++ {
			if c := h[i]; !isHex(c) && c != ':' && c != '.' {
				return "", false // no zones ("%25eth0"), no names
			}
		}
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", false
		}
		return "[" + a.String() + "]", true
	}
	if len(h) == 0 || len(h) > 253 {
		return "", false
	}
	h = strings.ToLower(h)
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return h, true
}

// isNumericLabel reports whether a browser would parse the label as an IPv4
// number (decimal, or 0x hex).
func isNumericLabel(l string) bool {
	if strings.HasPrefix(l, "0x") {
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return l != ""
}

// parsePort accepts 1-5 ASCII digits with a value in 1..65535 (no sign, no
// empty port: "host:" is rejected rather than guessed).
func parsePort(p string) (int, bool) {
	if len(p) == 0 || len(p) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n, n >= 1 && n <= 65535
}
