package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNginxSite: the addresses replaced in examples/nginx/protected-app.conf
// are there exactly once each; several auth addresses make one upstream;
// AuthInline leaves no auth upstream in use.
func TestNginxSite(t *testing.T) {
	ref, err := os.ReadFile(filepath.Join(RepoRoot(t), "examples", "nginx", "protected-app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, inline := range []bool{false, true} {
		site, err := NginxSite(string(ref), NginxConfig{Port: 1003, Auth: []string{"127.0.0.1:1001", "127.0.0.1:1004"}, App: "127.0.0.1:1002", AuthInline: inline})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"server 127.0.0.1:1002;", "listen 127.0.0.1:1003;", "keepalive 32;", "auth_request /_external-auth;"} {
			if !strings.Contains(site, want) {
				t.Errorf("inline %v: no %q", inline, want)
			}
		}
		if got := strings.Contains(site, "return 200;"); got != inline {
			t.Errorf("inline %v: return 200 present: %v", inline, got)
		}
		for _, auth := range []string{"server 127.0.0.1:1001;", "server 127.0.0.1:1004;"} {
			if got := strings.Contains(site, auth); got == inline {
				t.Errorf("inline %v: auth upstream %s present: %v", inline, auth, got)
			}
		}
	}
	if _, err := NginxSite(string(ref), NginxConfig{Port: 1, App: "127.0.0.1:2"}); err == nil {
		t.Error("a site without an auth address")
	}
	if _, err := substitute("a b a", map[string]string{"a": "c"}); err == nil {
		t.Error("a key found twice was replaced")
	}
}

// TestWriteNginx: both configs pass nginx -t (where Debian's nginx is
// installed), with and without the extras the benchmark adds.
func TestWriteNginx(t *testing.T) {
	if _, err := FindNginx(); err != nil {
		t.Skip(err)
	}
	for _, c := range []NginxConfig{
		{Port: FreePort(t), Auth: []string{"127.0.0.1:1", "127.0.0.1:2"}, App: "127.0.0.1:3", AccessLog: true},
		{Port: FreePort(t), AuthInline: true, App: "127.0.0.1:3", Workers: 1, WorkerConnections: 4096, LogLevel: "warn",
			Main: "worker_rlimit_nofile 8192;", HTTP: "    keepalive_requests 1000000;"},
	} {
		c.Dir = t.TempDir()
		n, err := WriteNginx(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		if args := n.Args(); len(args) != 6 || args[3] != n.Conf {
			t.Errorf("args %q", args)
		}
	}
}

// TestReferenceSiteSetsIdentityHeaders: the protected location of
// examples/nginx/protected-app.conf sets every identity header the check can
// answer, the assertion's included, from the check's answer: nginx then
// sends that value (none when it is empty) and never the client's own.
func TestReferenceSiteSetsIdentityHeaders(t *testing.T) {
	ref, err := os.ReadFile(filepath.Join(RepoRoot(t), "examples", "nginx", "protected-app.conf"))
	if err != nil {
		t.Fatal(err)
	}
	site := string(ref)
	for _, h := range []string{"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Preferred-Username",
		"X-Auth-Request-Groups", "X-Auth-Request-Access-Token", "X-Auth-Request-Jwt"} {
		upstream := "$upstream_http_" + strings.ReplaceAll(strings.ToLower(h), "-", "_") + ";"
		var variable string
		for _, line := range strings.Split(site, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "auth_request_set" && f[2] == upstream {
				variable = f[1]
			}
		}
		if variable == "" {
			t.Errorf("no auth_request_set of %s", upstream)
			continue
		}
		if !strings.Contains(site, "proxy_set_header '"+h+"' "+variable+";") {
			t.Errorf("no proxy_set_header '%s' %s;", h, variable)
		}
	}
}
