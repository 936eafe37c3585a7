package policy

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// testSkipRules is the rule set of the bypass table, the fuzz target and the
// benchmark: exact paths, prefixes with and without a trailing slash, and a
// prefix whose first segment starts with a dot (not a dot segment).
var testSkipRules = []SkipRule{
	{Methods: []string{"GET", "HEAD"}, Path: "/api/health"},
	{Methods: []string{"GET"}, PathPrefix: "/public"},
	{Methods: []string{"GET", "HEAD"}, PathPrefix: "/static/"},
	{Methods: []string{"POST"}, Path: "/webhooks/github"},
	{Methods: []string{"GET"}, PathPrefix: "/.well-known/"},
}

func testSkips(tb testing.TB) *Skips {
	tb.Helper()
	s, err := NewSkips(testSkipRules)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// skipCases: every row is a request to the rules above. The refused rows are
// the bypass attempts: each would let some server on the way (nginx, Envoy,
// Go, Node, Spring, Tomcat, IIS) route a skipped request outside the rules,
// or is simply not a path a real client sends.
var skipCases = []struct {
	method, path string
	want         bool
	why          string
}{
	// What the rules are for.
	{"GET", "/api/health", true, "exact path"},
	{"HEAD", "/api/health", true, "second method of the rule"},
	{"GET", "/public", true, "prefix without slash: the path itself"},
	{"GET", "/public/", true, "prefix without slash: below it"},
	{"GET", "/public/css/site.css", true, "prefix without slash: deeper"},
	{"GET", "/static/", true, "prefix with slash: the directory itself"},
	{"GET", "/static/app.3f2a.js", true, "prefix with slash: below it"},
	{"POST", "/webhooks/github", true, "exact path, POST rule"},
	{"GET", "/.well-known/openid-configuration", true, "a segment starting with a dot is no dot segment"},
	{"GET", "/public/My%20File.pdf", true, "an escaped space inside a segment"},
	{"GET", "/public/%41", true, "an escape that stays inside the prefix both ways"},
	{"GET", "/public/file%2ejs", true, "an escaped dot that makes no dot segment"},
	{"GET", "/public/a.", true, "a trailing dot trimmed by Windows stays inside"},
	{"GET", "/public/" + strings.Repeat("a", MaxPathLen-len("/public/")), true, "exactly MaxPathLen"},

	// Methods and the edges of the rules.
	{"POST", "/api/health", false, "method not in the rule"},
	{"get", "/api/health", false, "methods are case-sensitive"},
	{"GET", "/webhooks/github", false, "the webhook rule is POST only"},
	{"HEAD", "/public/x", false, "HEAD is not implied by GET"},
	{"GET", "/publicity", false, "a prefix ends at a segment"},
	{"GET", "/public.html", false, "a prefix ends at a segment, not a dot"},
	{"GET", "/static", false, "a prefix with slash does not match its parent"},
	{"GET", "/api/health/", false, "exact path: no trailing slash added"},
	{"GET", "/api/healthz", false, "exact path: no suffix"},
	{"GET", "/api/health.json", false, "exact path: no extension (Spring's suffix match routes it to /api/health: the safe direction)"},
	{"GET", "/API/health", false, "case-sensitive (a case-insensitive upstream is the safe direction)"},
	{"GET", "/Public/x", false, "case-sensitive prefix"},
	{"POST", "/webhooks/github/", false, "exact path, trailing slash"},

	// Dot segments: nginx and Envoy resolve them, real clients never send them.
	{"GET", "/public/../admin", false, "dot-dot out of the prefix"},
	{"GET", "/public/x/../../admin", false, "dot-dot out of the prefix, deeper"},
	{"GET", "/api/./health", false, "decided: refused though it resolves to /api/health (no client sends it; an upstream that does not resolve it routes it elsewhere)"},
	{"GET", "/public/./x", false, "a dot segment even when it stays inside"},
	{"GET", "/api/health/.", false, "trailing dot segment"},
	{"GET", "/public/..", false, "trailing dot-dot"},
	{"GET", "/.well-known/../admin", false, "dot-dot out of a dotted prefix"},
	{"GET", "/public/.../admin", false, "all-dot segment (Windows trims it)"},
	{"GET", "/public/%2e%2e/admin", false, "escaped dot-dot"},
	{"GET", "/public/%2E%2E/admin", false, "escaped dot-dot, upper-case hex"},
	{"GET", "/public/.%2e/admin", false, "half-escaped dot-dot"},
	{"GET", "/public/%2e/x", false, "escaped dot segment"},
	{"GET", "/public/%20../admin", false, "dot-dot with a space some servers trim"},
	{"GET", "/public/..%20/admin", false, "dot-dot with a trailing space (Windows trims it)"},
	{"GET", "/public/.%20./admin", false, "dot-dot around a space some servers drop"},
	{"GET", "/public/%20/x", false, "a segment of only spaces (dropped, it is //)"},

	// Slashes: escaped, doubled, backwards.
	{"GET", "/public/..%2fadmin", false, "escaped slash after dot-dot"},
	{"GET", "/public%2f..%2fadmin", false, "escaped slashes"},
	{"GET", "/public/%2Fadmin", false, "escaped slash, upper-case"},
	{"GET", "/static/..%2f..%2fadmin", false, "escaped slashes under a slash prefix"},
	{"GET", "//public/../admin", false, "leading //"},
	{"GET", "//public/x", false, "leading // (scheme-relative, or collapsed)"},
	{"GET", "/public//x", false, "// inside"},
	{"GET", "/public\\..\\admin", false, "backslash as slash (Windows, some Java)"},
	{"GET", "/public/%5c..%5cadmin", false, "escaped backslash"},
	{"GET", "/public/x\\", false, "any backslash"},

	// Path parameters (Tomcat, Spring, Jetty drop ";..." per segment).
	{"GET", "/public;/../admin", false, "params then dot-dot"},
	{"GET", "/public/..;/admin", false, "Tomcat's ..;"},
	{"GET", "/public;jsessionid=0123/x", false, "Tomcat session id: refused, the request is authenticated"},
	{"GET", "/api/health;x", false, "params on an exact path"},
	{"GET", "/public/x%3b/../../admin", false, "escaped semicolon"},

	// Double and invalid encoding.
	{"GET", "/public/%252e%252e/admin", false, "double-escaped dot-dot"},
	{"GET", "/public/%252f", false, "double-escaped slash"},
	{"GET", "/public/%25", false, "an escaped percent is double encoding"},
	{"GET", "/public/%zz", false, "invalid escape"},
	{"GET", "/public/%", false, "truncated escape"},
	{"GET", "/public/%2", false, "truncated escape"},
	{"GET", "/public/%u002e%u002e/admin", false, "IIS %u escapes"},
	{"GET", "/%70ublic/x", false, "escaped prefix: a server that does not decode routes elsewhere"},
	{"GET", "/api/heal%74h", false, "escaped exact path: the same"},

	// Query, fragment, controls.
	{"GET", "/api/health?x", false, "query left in (the caller strips it)"},
	{"GET", "/api/health?", false, "empty query left in"},
	{"GET", "/api/health#x", false, "fragment"},
	{"GET", "/public/x%3f/../../admin", false, "escaped ?"},
	{"GET", "/public/x%23/../../admin", false, "escaped #"},
	{"GET", "/api/health%00", false, "escaped NUL"},
	{"GET", "/api/health\x00", false, "raw NUL"},
	{"GET", "/public/x%0a", false, "escaped newline"},
	{"GET", "/public/x%09", false, "escaped tab"},
	{"GET", "/public/x%7f", false, "escaped DEL"},
	{"GET", "/public/a b", false, "raw space"},
	{"GET", "/public/a\tb", false, "raw tab"},
	{"GET", "/api/health%20", false, "escaped trailing space on an exact path"},

	// Unicode: full-width and other look-alikes become "." or "/" under
	// NFKC or Windows' best-fit mapping; overlong UTF-8 became "." in old decoders.
	{"GET", "/public/．．/admin", false, "full-width dots, raw"},
	{"GET", "/public/%ef%bc%8e%ef%bc%8e/admin", false, "full-width dots, escaped"},
	{"GET", "/public/%ef%bc%8fadmin", false, "full-width slash"},
	{"GET", "/public/‥/admin", false, "two-dot leader (NFKC: ..)"},
	{"GET", "/public/%c0%ae%c0%ae/admin", false, "overlong UTF-8 dots"},
	{"GET", "/public/caf%c3%a9", false, "any non-ASCII: refused (decided)"},
	{"GET", "/public/\xff", false, "non-UTF-8 byte"},
	{"GET", "/public/%ff", false, "escaped non-UTF-8 byte"},

	// Not a path.
	{"GET", "", false, "empty"},
	{"GET", "public/x", false, "no leading slash"},
	{"OPTIONS", "*", false, "asterisk form"},
	{"GET", "http://example.com/public/x", false, "absolute form"},
	{"GET", "/public/" + strings.Repeat("a", MaxPathLen), false, "over MaxPathLen"},
}

func TestSkipMatch(t *testing.T) {
	s := testSkips(t)
	refused := 0
	for _, tc := range skipCases {
		if got := s.Match(tc.method, tc.path); got != tc.want {
			t.Errorf("Match(%s %q) = %v, want %v: %s", tc.method, tc.path, got, tc.want, tc.why)
		}
		if !tc.want {
			refused++
		}
	}
	if refused < 30 {
		t.Errorf("%d bypass rows, want at least 30", refused)
	}
	var nilSkips *Skips
	if nilSkips.Match("GET", "/public") {
		t.Error("a nil *Skips must skip nothing")
	}
	if empty, err := NewSkips(nil); err != nil || empty.Match("GET", "/") {
		t.Errorf("no rules: %v, or a match", err)
	}
}

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		raw, want string
		ok        bool
	}{
		{"/", "/", true},
		{"/a/b/", "/a/b/", true},
		{"/a%20b/%41", "/a b/A", true},
		{"/a/%7e", "/a/~", true},
		{"/a/..", "", false},
		{"/a%2fb", "", false},
		{"/a//b", "", false},
	}
	for _, tc := range tests {
		if got, ok := NormalizePath(tc.raw); got != tc.want || ok != tc.ok {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewSkips(t *testing.T) {
	get := []string{"GET"}
	tests := []struct {
		name  string
		rule  SkipRule
		field string
		msg   string // part of the error
	}{
		{"no methods", SkipRule{Path: "/a"}, "methods", "at least one"},
		{"lower-case method", SkipRule{Methods: []string{"get"}, Path: "/a"}, "methods", `"get"`},
		{"star method", SkipRule{Methods: []string{"*"}, Path: "/a"}, "methods", `"*"`},
		{"empty method", SkipRule{Methods: []string{""}, Path: "/a"}, "methods", `""`},
		{"neither", SkipRule{Methods: get}, "", "set path or pathPrefix"},
		{"both", SkipRule{Methods: get, Path: "/a", PathPrefix: "/b"}, "", "not both"},
		{"relative path", SkipRule{Methods: get, Path: "a"}, "path", `does not start with "/"`},
		{"relative prefix", SkipRule{Methods: get, PathPrefix: "public/"}, "pathPrefix", `does not start with "/"`},
		{"prefix /", SkipRule{Methods: get, PathPrefix: "/"}, "pathPrefix", "would skip everything"},
		{"dot segment", SkipRule{Methods: get, Path: "/a/../b"}, "path", "would match no request"},
		{"escaped", SkipRule{Methods: get, Path: "/a%20b"}, "path", "not in normal form"},
		{"encoded slash", SkipRule{Methods: get, PathPrefix: "/a%2f"}, "pathPrefix", "would match no request"},
		{"double slash", SkipRule{Methods: get, PathPrefix: "//a/"}, "pathPrefix", "would match no request"},
		{"semicolon", SkipRule{Methods: get, Path: "/a;b"}, "path", "would match no request"},
		{"space", SkipRule{Methods: get, Path: "/a b"}, "path", "would match no request"},
		{"non-ASCII", SkipRule{Methods: get, Path: "/café"}, "path", "would match no request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok := SkipRule{Methods: get, Path: "/ok"}
			s, err := NewSkips([]SkipRule{ok, tc.rule})
			if err == nil || s != nil {
				t.Fatalf("NewSkips = %v, %v; want an error", s, err)
			}
			var re *SkipRuleError
			if !errors.As(err, &re) {
				t.Fatalf("%v is not a *SkipRuleError", err)
			}
			if re.Index != 1 || re.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got index %d field %q: %v; want index 1 field %q, %q", re.Index, re.Field, err, tc.field, tc.msg)
			}
		})
	}

	// Every bad rule is reported, each with its index.
	_, err := NewSkips([]SkipRule{{PathPrefix: "/"}, {Methods: get, Path: "/fine"}, {Methods: get, Path: "x"}})
	var indexes []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var re *SkipRuleError
		if errors.As(e, &re) {
			indexes = append(indexes, re.Index)
		}
	}
	if want := []int{0, 0, 2}; len(indexes) != len(want) || indexes[0] != 0 || indexes[1] != 0 || indexes[2] != 2 {
		t.Errorf("indexes %v, want %v (%v)", indexes, want, err)
	}

	// The rules are copied: changing the caller's slice later changes nothing.
	methods := []string{"GET"}
	s, err := NewSkips([]SkipRule{{Methods: methods, Path: "/a"}})
	if err != nil {
		t.Fatal(err)
	}
	methods[0] = "POST"
	if !s.Match("GET", "/a") || s.Match("POST", "/a") {
		t.Error("the rule changed with the caller's slice")
	}
}

func TestPreflight(t *testing.T) {
	h := func(kv ...string) http.Header {
		hdr := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hdr.Set(kv[i], kv[i+1])
		}
		return hdr
	}
	tests := []struct {
		name   string
		method string
		header http.Header
		want   bool
	}{
		{"preflight", "OPTIONS", h("Origin", "https://app.example.com", "Access-Control-Request-Method", "PUT"), true},
		{"with request headers", "OPTIONS", h("Origin", "null", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"), true},
		{"no Origin", "OPTIONS", h("Access-Control-Request-Method", "PUT"), false},
		{"no request method", "OPTIONS", h("Origin", "https://app.example.com"), false},
		{"empty request method", "OPTIONS", h("Origin", "https://app.example.com", "Access-Control-Request-Method", ""), false},
		{"plain OPTIONS", "OPTIONS", h(), false},
		{"not OPTIONS", "GET", h("Origin", "https://app.example.com", "Access-Control-Request-Method", "GET"), false},
		{"lower-case method", "options", h("Origin", "https://app.example.com", "Access-Control-Request-Method", "PUT"), false},
	}
	for _, tc := range tests {
		if got := Preflight(tc.method, tc.header); got != tc.want {
			t.Errorf("%s: Preflight = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func BenchmarkSkipMatch(b *testing.B) {
	s := testSkips(b)
	for _, bc := range []struct {
		name, path string
		want       bool
	}{
		{"miss", "/api/v1/users/12345/profile", false},
		{"hit", "/static/js/app.3f2a1b.js", true},
		{"hit-escaped", "/public/My%20File.pdf", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s.Match("GET", bc.path) != bc.want {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}

func TestSkipMatchAllocs(t *testing.T) {
	s := testSkips(t)
	for _, p := range []string{"/api/v1/users/12345/profile", "/static/js/app.3f2a1b.js", "/public/x/../y"} {
		if n := testing.AllocsPerRun(100, func() { s.Match("GET", p) }); n != 0 {
			t.Errorf("Match(%q): %v allocations, want 0 for a path without escapes", p, n)
		}
	}
}
