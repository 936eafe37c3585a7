package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// nginxSetup is what every nginx case shares: the same main config (worker
// count, buffers, no access log) and the reference site config
// examples/nginx/protected-app.conf with keepalive upstreams, of which only
// the three addresses differ — and, for floor-nginx, the one proxy_pass of
// the auth location that becomes "return 200;".
type nginxSetup struct {
	bin       string
	reference string // examples/nginx/protected-app.conf
	workers   int
}

func findNginx(repoRoot string, workers int) (*nginxSetup, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/nginx"); statErr != nil {
			return nil, errors.New("nginx not found: apt-get install -y nginx libnginx-mod-http-ndk libnginx-mod-http-set-misc")
		}
		bin = "/usr/sbin/nginx"
	}
	for _, m := range []string{"ndk_http_module.so", "ngx_http_set_misc_module.so"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/nginx/modules", m)); err != nil {
			return nil, fmt.Errorf("nginx module %s missing: apt-get install -y libnginx-mod-http-ndk libnginx-mod-http-set-misc", m)
		}
	}
	ref, err := os.ReadFile(filepath.Join(repoRoot, "examples", "nginx", "protected-app.conf"))
	if err != nil {
		return nil, err
	}
	return &nginxSetup{bin: bin, reference: string(ref), workers: workers}, nil
}

func (n *nginxSetup) version() string {
	out, _ := exec.Command(n.bin, "-v").CombinedOutput()
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}

// nginxInstance is one running nginx.
type nginxInstance struct {
	proc *proc
	URL  string // the protected location, http://127.0.0.1:PORT/
}

// start writes the config into dir and runs nginx. authAddr is the auth
// upstream (ignored when authInline, the floor-nginx case).
func (n *nginxSetup) start(ctx context.Context, ps *procs, dir, authAddr string, authInline bool) (*nginxInstance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	appPort, err := freePort()
	if err != nil {
		return nil, err
	}
	appAddr := fmt.Sprintf("127.0.0.1:%d", appPort)
	site, err := siteConfig(n.reference, authAddr, appAddr, port, authInline)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	// nginx's workers run as nobody when the master is root: let them in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	// The protected app is a server block of the same nginx answering 200:
	// the cheapest app there is, the same in every case.
	main := fmt.Sprintf(`
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_set_misc_module.so;
%[1]s
worker_processes %[3]d;
worker_rlimit_nofile 8192;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path %[2]s/tmp/proxy;
    fastcgi_temp_path %[2]s/tmp/fastcgi;
    uwsgi_temp_path %[2]s/tmp/uwsgi;
    scgi_temp_path %[2]s/tmp/scgi;
    large_client_header_buffers 4 16k;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    keepalive_requests 1000000;
    include %[2]s/protected-app.conf;
    server {
        listen %[4]s;
        keepalive_requests 1000000;
        location / { return 200 "app\n"; }
    }
}
`, user, dir, n.workers, appAddr)
	if err := os.WriteFile(filepath.Join(dir, "protected-app.conf"), []byte(site), 0o644); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, n.bin, "-t", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %v\n%s", err, out)
	}
	p, err := ps.start("nginx", filepath.Join(dir, "nginx.out"), syscall.SIGQUIT, n.bin, "-p", dir, "-c", conf, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "http://"+appAddr+"/", 10*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		p.stop()
		return nil, fmt.Errorf("nginx: %v\n%s", err, b)
	}
	return &nginxInstance{proc: p, URL: fmt.Sprintf("http://127.0.0.1:%d/", port)}, nil
}

// siteConfig is the reference site config with the auth upstream at
// authAddr, the app at appAddr, the listener on port; authInline (the
// floor-nginx case) makes the auth location answer 200 itself instead.
func siteConfig(reference, authAddr, appAddr string, port int, authInline bool) (string, error) {
	if authInline {
		authAddr = appAddr // never used: the auth location answers itself
	}
	repl := map[string]string{
		"server 127.0.0.1:4180;": "server " + authAddr + ";",
		"server 127.0.0.1:8081;": "server " + appAddr + ";",
		"listen 127.0.0.1:8080;": fmt.Sprintf("listen 127.0.0.1:%d;", port),
	}
	if authInline {
		repl["proxy_pass http://extauth/oauth2/auth;"] = "return 200;"
	}
	return substitute(reference, repl)
}

// substitute replaces each key exactly once, so that a change of the
// reference config cannot silently leave the benchmark on other addresses
// (the same rule as e2e/stack).
func substitute(s string, repl map[string]string) (string, error) {
	for old, new := range repl {
		if n := strings.Count(s, old); n != 1 {
			return "", fmt.Errorf("reference nginx config: %q appears %d times, want 1", old, n)
		}
		s = strings.Replace(s, old, new, 1)
	}
	return s, nil
}
