package policy

import (
	"strings"
	"testing"
)

var fuzzMethods = []string{"GET", "HEAD", "POST", "OPTIONS"}

// FuzzSkip checks Match's promise: when it skips a request, every way a
// server on the way could read the raw path lands inside a rule for that
// method (testSkipRules, matched by refInside, written apart from Match).
// And Match does not refuse too much: a path of plain segments is matched as
// the rules say. The path is raw followed by the tokens picked by the bytes
// of tokens: byte-level mutation alone rarely assembles "..;" or "%2e%2e".
func FuzzSkip(f *testing.F) {
	for _, tc := range skipCases {
		for i, m := range fuzzMethods {
			if m == tc.method {
				f.Add(uint8(i), tc.path, []byte(nil))
			}
		}
	}
	f.Add(uint8(0), "/public/", []byte{0, 1, 2})
	f.Add(uint8(0), "/static", []byte{3, 4, 5, 6})
	s := testSkips(f)
	f.Fuzz(func(t *testing.T, m uint8, raw string, tokens []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		var b strings.Builder
		b.WriteString(raw)
		for _, c := range tokens {
			b.WriteString(pathTokens[int(c)%len(pathTokens)])
		}
		raw = b.String()
		got := s.Match(method, raw)
		if got {
			for _, p := range interpretations(raw) {
				if !refInside(method, p) {
					t.Fatalf("Match(%s %q) skips it, but it can be read as %q, outside every rule", method, raw, p)
				}
			}
		}
		if plainPath(raw) && got != refInside(method, raw) {
			t.Fatalf("Match(%s %q) = %v for a plain path, the rules say %v", method, raw, got, !got)
		}
	})
}

// pathTokens are the pieces of path tricks and of the rules' paths.
var pathTokens = []string{
	"/", "..", "admin", "public", ".", ";", "\\", "%2e", "%2f", "%5c", "%25", "%3b",
	"%20", " ", "?", "#", "%00", "static", "api", "health", "x", "%", "2e", "．",
	"%ef%bc%8e", "%c0%ae", "//", "%u002e", ".well-known", "webhooks", "github", "\xff",
}

// refInside is the rules' meaning, for one reading of the path.
func refInside(method, p string) bool {
	for _, r := range testSkipRules {
		has := false
		for _, m := range r.Methods {
			has = has || m == method
		}
		if !has {
			continue
		}
		switch {
		case r.Path != "":
			if p == r.Path {
				return true
			}
		case strings.HasSuffix(r.PathPrefix, "/"):
			if strings.HasPrefix(p, r.PathPrefix) {
				return true
			}
		default:
			if p == r.PathPrefix || strings.HasPrefix(p, r.PathPrefix+"/") {
				return true
			}
		}
	}
	return false
}

// plainPath: "/" and segments of letters, digits, "-", "_" and "." that are
// not all dots, nothing empty but a last segment, at most MaxPathLen. Every
// server reads it as it is.
func plainPath(p string) bool {
	if !strings.HasPrefix(p, "/") || len(p) > MaxPathLen {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "" && i < len(segs)-1 || s != "" && strings.Trim(s, ".") == "" {
			return false
		}
		for _, c := range []byte(s) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
				return false
			}
		}
	}
	return true
}

// readings are the normalisations servers apply, each on or off.
var readings = []func(string) string{
	foldLookalikes,
	func(p string) string { return strings.ReplaceAll(p, "\\", "/") },
	stripParams,
	trimSegments,
	func(p string) string { return strings.ReplaceAll(p, " ", "") },
	collapseSlashes,
	refRemoveDotSegments,
	func(p string) string { p, _, _ = strings.Cut(p, "?"); p, _, _ = strings.Cut(p, "#"); return p },
}

// interpretations of a raw path: any subset of readings, then decoded 0, 1
// or 2 times (or IIS's %u), then any subset of readings again.
func interpretations(raw string) []string {
	seen := map[string]bool{}
	var out []string
	decoders := []func(string) string{
		func(p string) string { return p },
		lenientDecode,
		func(p string) string { return lenientDecode(lenientDecode(p)) },
		decodeIIS,
	}
	for _, before := range readAll(raw) {
		for _, dec := range decoders {
			for _, p := range readAll(dec(before)) {
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// readAll applies every subset of readings, in order, to p. A reading that
// changes nothing gives the same strings as leaving it out, so that branch
// is not walked twice: a path Match accepts has few readings that differ.
func readAll(p string) []string {
	var out []string
	var walk func(p string, i int)
	walk = func(p string, i int) {
		if i == len(readings) {
			out = append(out, p)
			return
		}
		walk(p, i+1)
		if q := readings[i](p); q != p {
			walk(q, i+1)
		}
	}
	walk(p, 0)
	return out
}

// lenientDecode decodes every valid %XX and keeps the rest, as the most
// forgiving decoder on the way would.
func lenientDecode(s string) string {
	var b strings.Builder
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

// decodeIIS decodes %uXXXX (ASCII only, enough to make "." and "/").
func decodeIIS(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') && s[i+2] == '0' && s[i+3] == '0' && isHex(s[i+4]) && isHex(s[i+5]) {
			b.WriteByte(unhex(s[i+4])<<4 | unhex(s[i+5]))
			i += 5
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// foldLookalikes maps what NFKC or Windows' best-fit mapping turns into
// path structure.
func foldLookalikes(p string) string {
	return strings.NewReplacer(
		"．", ".", "﹒", ".", "․", ".", "‥", "..", "…", "...",
		"／", "/", "＼", "\\", "﹨", "\\", "∕", "/",
		"；", ";", "﹔", ";", "％", "%", "？", "?", "＃", "#",
		"\xc0\xae", ".", "\xc0\xaf", "/", // overlong UTF-8
	).Replace(p)
}

// stripParams drops ";..." from each segment (Tomcat, Spring, Jetty).
func stripParams(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i], _, _ = strings.Cut(s, ";")
	}
	return strings.Join(segs, "/")
}

// trimSegments trims trailing dots and spaces from each segment (Windows)
// and leading and trailing spaces (some frameworks' trimmed tokens).
func trimSegments(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if t := strings.TrimRight(s, ". "); t != "" || s == "" {
			s = t
		}
		segs[i] = strings.TrimSpace(s)
	}
	return strings.Join(segs, "/")
}

func collapseSlashes(p string) string {
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	return p
}

// refRemoveDotSegments is RFC 3986 5.2.4 for a path, with ".." at the root
// staying at the root.
func refRemoveDotSegments(p string) string {
	if !strings.HasPrefix(p, "/") {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".", "..":
			if s == ".." && len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "") // "/a/b/.." is "/a/"
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
