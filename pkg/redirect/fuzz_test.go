package redirect

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// fuzzHosts are extra request hosts the seeds are paired with.
var fuzzHosts = []string{rh, "", "auth.local", "app.example.com:443", "[::1]:8080", "evil.com"}

func FuzzValidate(f *testing.F) {
	for _, group := range [][]validCase{rejectCases, acceptCases} {
		for _, tc := range group {
			if len(tc.raw) > 200 {
				continue // keep seeds small; length is covered by the table
			}
			f.Add(tc.raw, tc.host)
			for _, h := range fuzzHosts {
				f.Add(tc.raw, h)
			}
		}
	}
	v, err := New(testDomains)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw, requestHost string) {
		got, ok := v.Sanitize(raw, requestHost)
		if ok != v.Valid(raw, requestHost) {
			t.Fatalf("Sanitize and Valid disagree on %q", raw)
		}
		var nilV *Validator
		if nilV.Valid(raw, requestHost) && !ok {
			t.Fatalf("nil validator accepts %q (host %q) that a configured one rejects", raw, requestHost)
		}
		if !ok {
			if got != "/" {
				t.Fatalf("rejected %q sanitized to %q, want /", raw, got)
			}
			return
		}
		if got != raw {
			t.Fatalf("accepted %q changed to %q", raw, got)
		}
		checkAccepted(t, raw, requestHost)
	})
}

// checkAccepted asserts, independently of the implementation, that an
// accepted value cannot send the browser off the allowed hosts.
func checkAccepted(t *testing.T, raw, requestHost string) {
	t.Helper()
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == '\\' || r == ' ' {
			t.Fatalf("accepted %q contains control/space/backslash %q", raw, r)
		}
	}
	if len(raw) > maxLen {
		t.Fatalf("accepted over-long value (%d bytes)", len(raw))
	}
	if raw[0] == '/' {
		if len(raw) > 1 && (raw[1] == '/' || raw[1] == '\\') {
			t.Fatalf("accepted scheme-relative %q", raw)
		}
		if d, err := url.PathUnescape(raw); err == nil && (strings.HasPrefix(d, "//") || strings.HasPrefix(d, `/\`)) {
			t.Fatalf("accepted %q that decodes to %q", raw, d)
		}
		// Resolved like a browser would, it must stay on the request host.
		base := &url.URL{Scheme: "https", Host: "auth.local:8080", Path: "/"}
		ref, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted path %q does not parse: %v", raw, err)
		}
		if res := base.ResolveReference(ref); res.Host != base.Host || ref.Host != "" || ref.Scheme != "" {
			t.Fatalf("accepted path %q resolves to host %q", raw, res.Host)
		}
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("accepted %q does not parse: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		t.Fatalf("accepted %q with scheme %q", raw, u.Scheme)
	}
	if u.User != nil || u.Opaque != "" || u.Host == "" {
		t.Fatalf("accepted %q with userinfo/opaque/empty host", raw)
	}
	host, port := refHostPort(u.Hostname(), u.Port(), u.Scheme)
	if host == "" || strings.HasSuffix(host, ".") {
		t.Fatalf("accepted %q with bad host %q", raw, host)
	}
	if rhost, rport, ok := refRequestHost(requestHost, u.Scheme); ok && rhost == host && rport == port {
		return
	}
	def := defaultPort(u.Scheme)
	switch {
	case host == "app.example.org" && port == def:
	case strings.HasSuffix(host, ".example.com") && port == def:
	case host == "api.example.net" && port == "8443":
	case strings.HasSuffix(host, ".example.io"):
	case host == "2001:db8::1" && port == def:
	default:
		t.Fatalf("accepted %q: host %q port %s is neither request host %q nor configured", raw, host, port, requestHost)
	}
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

func refHostPort(host, port, scheme string) (string, string) {
	host = strings.ToLower(host)
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.String()
	}
	if port == "" {
		port = defaultPort(scheme)
	}
	return host, port
}

func refRequestHost(requestHost, scheme string) (string, string, bool) {
	if requestHost == "" {
		return "", "", false
	}
	u, err := url.Parse("//" + requestHost)
	if err != nil || u.Host != requestHost {
		return "", "", false
	}
	h, p := refHostPort(u.Hostname(), u.Port(), scheme)
	return h, p, h != ""
}
