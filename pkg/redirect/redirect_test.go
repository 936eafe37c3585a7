package redirect

import (
	"fmt"
	"strings"
	"testing"
)

// testDomains is the redirectDomains configuration used by the table tests
// and the fuzzer.
var testDomains = []string{
	"app.example.org",      // exact host, default port only
	".example.com",         // any subdomain, default port only
	"api.example.net:8443", // exact host, one port
	".example.io:*",        // any subdomain, any port
	"[2001:db8::1]",        // IPv6 literal, default port only
}

// rh is the request's own host for most cases.
const rh = "auth.local:8080"

type validCase struct {
	name string
	raw  string
	host string // requestHost
	want bool
}

var acceptCases = []validCase{
	{"root", "/", rh, true},
	{"path query fragment", "/path?q=1#f", rh, true},
	{"dot dot path", "/a/b/../c", rh, true},
	{"query with slashes", "/app?next=//evil.com", rh, true},
	{"fragment with slashes", "/app#//evil.com", rh, true},
	{"encoded space in path", "/docs/My%20File", rh, true},
	{"encoded slash mid path", "/a%2Fb", rh, true},
	{"unicode path", "/café", rh, true},
	{"max length path", "/" + strings.Repeat("a", maxLen-1), rh, true},
	{"own host with port", "http://auth.local:8080/x", rh, true},
	{"own host https with port", "https://auth.local:8080/", rh, true},
	{"own host no port http", "http://auth.local/", "auth.local", true},
	{"own host no port https", "https://auth.local", "auth.local", true},
	{"own host explicit default port", "https://auth.local:443/", "auth.local", true},
	{"own host request has default port", "https://auth.local/", "auth.local:443", true},
	{"own host uppercase", "https://AUTH.LOCAL:8080/", rh, true},
	{"own host ipv6", "http://[::1]:8080/", "[::1]:8080", true},
	{"own host ipv6 non canonical", "http://[0:0::1]:8080/", "[::1]:8080", true},
	{"exact domain", "https://app.example.org/dash?x=1#y", rh, true},
	{"exact domain http", "http://app.example.org", rh, true},
	{"exact domain default port explicit", "https://app.example.org:443/", rh, true},
	{"subdomain", "https://app.example.com/", rh, true},
	{"deep subdomain", "https://a.b.c.example.com/x", rh, true},
	{"uppercase host", "https://APP.Example.COM/", rh, true},
	{"uppercase scheme", "HTTPS://app.example.com/", rh, true},
	{"allowed port", "https://api.example.net:8443/v1", rh, true},
	{"star port", "https://x.example.io:9999/", rh, true},
	{"star port default", "http://x.example.io/", rh, true},
	{"ipv6 entry", "https://[2001:db8::1]/", rh, true},
	{"double slash in absolute path", "https://app.example.com//evil.com", rh, true},
	{"underscore label subdomain", "https://evil.com_.example.com/", rh, true},
	{"punycode subdomain", "https://xn--caf-dma.example.com/", rh, true},
}

var rejectCases = []validCase{
	// empty / length / encoding
	{"empty", "", rh, false},
	{"too long", "/" + strings.Repeat("a", maxLen), rh, false},
	{"invalid utf8", "/\xff", rh, false},
	{"overlong slash encoded", "/%c0%af%c0%afevil.com", rh, false},
	{"malformed escape", "/%zz", rh, false},

	// scheme-relative and backslash variants
	{"scheme relative", "//evil.com", rh, false},
	{"triple slash", "///evil.com", rh, false},
	{"double backslash", `\\evil.com`, rh, false},
	{"slash backslash", `/\evil.com`, rh, false},
	{"backslash slash", `\/evil.com`, rh, false},
	{"slash backslash slash", `/\/evil.com`, rh, false},
	{"slash slash backslash", `//\evil.com`, rh, false},
	{"dot backslash", `/./\evil.com`, rh, false},
	{"dot slash slash", "/.//evil.com", rh, false},
	{"dotdot slash slash", "/..//evil.com", rh, false},
	{"path param", "/;/evil.com", rh, false},
	{"backslash later in path", `/a\b`, rh, false},
	{"tab between slashes", "/\t/evil.com", rh, false},
	{"encoded tab between slashes", "/%09/evil.com", rh, false},
	{"encoded space between slashes", "/%20/evil.com", rh, false},
	{"encoded slashes", "/%2F%2Fevil.com", rh, false},
	{"encoded slash lower", "/%2f/evil.com", rh, false},
	{"encoded backslash", "/%5Cevil.com", rh, false},
	{"encoded leading slashes", "%2F%2Fevil.com", rh, false},
	{"double encoded slash", "/%252F/evil.com", rh, false},
	{"encoded dots", "/%2e%2e//evil.com", rh, false},
	{"fullwidth solidus", "／／evil.com", rh, false},
	{"fullwidth solidus in path", "/／evil.com", rh, false},

	// control characters and whitespace
	{"null byte", "/\x00/evil.com", rh, false},
	{"encoded null", "/foo%00", rh, false},
	{"raw CR LF", "/foo\r\nSet-Cookie: a=b", rh, false},
	{"encoded CR LF", "/foo%0d%0aSet-Cookie:a=b", rh, false},
	{"encoded LF", "/%0a/evil.com", rh, false},
	{"raw tab", "/foo\tbar", rh, false},
	{"raw space", "/foo bar", rh, false},
	{"DEL", "/foo\x7f", rh, false},
	{"C1 control", "/foo\u0085", rh, false},
	{"nbsp encoded", "/foo%C2%A0", rh, false},
	{"zero width space", "/foo\u200b", rh, false},
	{"bidi override", "https://app.example.com/\u202e", rh, false},
	{"absolute with encoded CRLF", "https://app.example.com/%0d%0a", rh, false},

	// dangerous schemes
	{"javascript", "javascript:alert(1)", rh, false},
	{"javascript mixed case", "JaVaScRiPt:alert(1)", rh, false},
	{"javascript leading space", " javascript:alert(1)", rh, false},
	{"javascript leading tab", "\tjavascript:alert(1)", rh, false},
	{"javascript leading newline", "\njavascript:alert(1)", rh, false},
	{"javascript embedded tab", "java\tscript:alert(1)", rh, false},
	{"javascript after slash", "javascript://app.example.com/%0aalert(1)", rh, false},
	{"data", "data:text/html,<script>alert(1)</script>", rh, false},
	{"vbscript", "vbscript:msgbox(1)", rh, false},
	{"file", "file:///etc/passwd", rh, false},
	{"ftp", "ftp://app.example.com/", rh, false},
	{"mailto", "mailto:a@example.com", rh, false},

	// malformed http(s)
	{"http one slash", "http:/evil.com", rh, false},
	{"http no slash", "http:evil.com", rh, false},
	{"https no slash", "https:evil.com", rh, false},
	{"https slash backslash", `https:/\evil.com`, rh, false},
	{"https triple slash", "https:///evil.com", rh, false},
	{"https backslash host", `https:\\evil.com`, rh, false},
	{"https backslash after host", `https://app.example.com\@evil.com`, rh, false},
	{"https empty host with port", "https://:443/", rh, false},
	{"http empty port", "https://app.example.com:/", rh, false},
	{"relative no slash", "evil.com", rh, false},
	{"query only", "?next=/x", rh, false},
	{"fragment only", "#top", rh, false},
	{"dot relative", "./x", rh, false},

	// host matching
	{"evil host", "https://evil.com/", rh, false},
	{"suffix attack", "https://example.com.evil.com/", rh, false},
	{"bad example", "https://badexample.com/", rh, false},
	{"apex not subdomain", "https://example.com/", rh, false},
	{"exact entry no subdomain", "https://x.app.example.org/", rh, false},
	{"non-allowed port", "https://app.example.com:8443/", rh, false},
	{"http on https port", "http://app.example.org:443/", rh, false},
	{"wrong fixed port", "https://api.example.net:8444/", rh, false},
	{"fixed port entry default port", "https://api.example.net/", rh, false},
	{"port out of range", "https://app.example.com:99999/", rh, false},
	{"port zero", "https://app.example.com:0/", rh, false},
	{"userinfo", "https://example.com@evil.com", rh, false},
	{"userinfo allowed host", "https://evil.com@app.example.com/", rh, false},
	{"userinfo password", "https://user:pw@app.example.com/", rh, false},
	{"encoded hash in host", "http://evil.com%23.example.com", rh, false},
	{"question in host", "http://evil.com?.example.com", rh, false},
	{"hash in host", "http://evil.com#.example.com", rh, false},
	{"trailing dot", "https://app.example.com./", rh, false},
	{"trailing dot no path", "https://app.example.com.", rh, false},
	{"double dot host", "https://a..example.com/", rh, false},
	{"fullwidth solidus host", "https://evil.com／.example.com/", rh, false},
	{"fullwidth dot host", "https://evil。example.com/", rh, false},
	{"unicode host", "https://évil.example.com/", rh, false},
	{"own host wrong port", "https://auth.local:9090/", rh, false},
	{"own host missing port", "https://auth.local/", rh, false},
	{"own host request default other scheme", "http://auth.local/", "auth.local:443", false},
	{"empty request host", "https://auth.local/", "", false},
	{"empty request host empty url host", "https:///", "", false},
	{"garbage request host", "https://evil.com/", "evil.com/x", false},

	// IPv6 tricks
	{"ipv6 not allowed", "http://[::1]/", rh, false},
	{"ipv6 zone", "http://[::1%25eth0]/", "[::1]", false},
	{"ipv6 name inside", "http://[app.example.com]/", rh, false},
	{"ipv6 junk after bracket", "http://[2001:db8::1]evil.com/", rh, false},
	{"ipv6 unbracketed", "http://2001:db8::1/", rh, false},
	{"ipv6 userinfo", "http://[2001:db8::1]@evil.com/", rh, false},
	{"ipv4 in brackets", "http://[127.0.0.1]/", "[127.0.0.1]", false},
	{"ipv6 unclosed", "http://[2001:db8::1/", rh, false},
	{"ipv6 wrong port", "https://[2001:db8::1]:8443/", rh, false},
}

func TestValid(t *testing.T) {
	v, err := New(testDomains)
	if err != nil {
		t.Fatal(err)
	}
	for _, group := range [][]validCase{acceptCases, rejectCases} {
		for _, tc := range group {
			t.Run(tc.name, func(t *testing.T) {
				if got := v.Valid(tc.raw, tc.host); got != tc.want {
					t.Errorf("Valid(%q, %q) = %v, want %v", tc.raw, tc.host, got, tc.want)
				}
				got, ok := v.Sanitize(tc.raw, tc.host)
				want := "/"
				if tc.want {
					want = tc.raw
				}
				if got != want || ok != tc.want {
					t.Errorf("Sanitize(%q, %q) = %q, %v; want %q, %v", tc.raw, tc.host, got, ok, want, tc.want)
				}
			})
		}
	}
}

func TestCaseCounts(t *testing.T) {
	rejects := 0
	for _, tc := range rejectCases {
		if !tc.want {
			rejects++
		}
	}
	if n := len(acceptCases) + len(rejectCases); n < 60 || rejects < 40 {
		t.Errorf("table has %d cases, %d hostile; want >= 60 and >= 40", n, rejects)
	}
}

func TestNilValidator(t *testing.T) {
	var v *Validator
	cases := []validCase{
		{"path", "/x", "", true},
		{"own host", "https://auth.local:8080/", rh, true},
		{"no domains", "https://app.example.com/", rh, false},
		{"scheme relative", "//evil.com", rh, false},
		{"empty request host", "https://auth.local/", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := v.Valid(tc.raw, tc.host); got != tc.want {
				t.Errorf("nil Valid(%q, %q) = %v, want %v", tc.raw, tc.host, got, tc.want)
			}
			if _, ok := v.Sanitize(tc.raw, tc.host); ok != tc.want {
				t.Errorf("nil Sanitize(%q, %q) ok = %v, want %v", tc.raw, tc.host, ok, tc.want)
			}
		})
	}
	empty, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Valid("https://app.example.com/", rh) || !empty.Valid("/", rh) {
		t.Error("New(nil) should allow only paths and the request host")
	}
}

func TestNew(t *testing.T) {
	good := []string{
		"app.example.com", ".example.com", "app.example.com:8443", ".example.com:*",
		"APP.Example.com", "localhost", "10.0.0.1:8080", "[::1]:8080", "[2001:db8::1]:*",
	}
	for _, d := range good {
		t.Run("ok "+d, func(t *testing.T) {
			if _, err := New([]string{d}); err != nil {
				t.Errorf("New(%q) = %v, want nil", d, err)
			}
		})
	}
	bad := []string{
		"", ".", "exa mple.com", ".example.com:99999", "http://example.com", "example.com/path",
		"example.com:", "example.com:0", "example.com:abc", "*.example.com", "example.com.",
		"user@example.com", "example..com", "-example.com", "[::1", "[::1]x", ".[::1]", ".0.1",
		"exämple.com", "example.com:80:80", `example.com\`, ".example.com:+80",
	}
	for _, d := range bad {
		t.Run("bad "+d, func(t *testing.T) {
			v, err := New([]string{"ok.example.com", d})
			if err == nil {
				t.Fatalf("New(%q) = nil error, want error", d)
			}
			if v != nil {
				t.Errorf("New(%q) returned non-nil validator with error", d)
			}
			if quoted := fmt.Sprintf("%q", d); !strings.Contains(err.Error(), quoted) {
				t.Errorf("error %q does not name entry %s", err, quoted)
			}
		})
	}
}
