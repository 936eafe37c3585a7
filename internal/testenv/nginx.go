package testenv

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The reference site config, examples/nginx/protected-app.conf: the e2e
// stack and the benchmark run it as users include it, with only these
// three addresses replaced.
const (
	refAuth   = "server 127.0.0.1:4180;" // upstream extauth
	refApp    = "server 127.0.0.1:8081;" // upstream protected_app
	refListen = "listen 127.0.0.1:8080;"
	// refCheck is the auth location's proxy_pass, which AuthInline replaces.
	refCheck = "proxy_pass http://extauth/oauth2/auth;"
)

// NginxConfig is an nginx serving the reference site config: what the e2e
// stack and the benchmark choose; zero values are the e2e stack's.
type NginxConfig struct {
	Dir  string   // nginx's prefix: both configs, the pid, the logs, temp files
	Port int      // the site's listener on 127.0.0.1
	Auth []string // extauth's addresses, the upstream nginx balances (round robin)
	// AuthInline makes the auth location answer 200 itself, with no auth
	// service behind it (the benchmark's floor-nginx); Auth is unused.
	AuthInline bool
	App        string // the protected app's address

	Workers           int    // worker_processes; 0: 2
	WorkerConnections int    // 0: 1024
	LogLevel          string // of error.log; "": info
	AccessLog         bool   // write access.log (the benchmark does not)
	Main              string // more directives at the top level
	HTTP              string // more directives (or server blocks) in http { }
}

// FindNginx returns Debian's nginx, which has the set_escape_uri the
// reference config needs as a module (libnginx-mod-http-set-misc).
func FindNginx() (string, error) {
	const install = "apt-get install -y nginx libnginx-mod-http-ndk libnginx-mod-http-set-misc"
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/nginx"); statErr != nil {
			return "", errors.New("nginx not found: " + install)
		}
		bin = "/usr/sbin/nginx"
	}
	for _, m := range []string{"ndk_http_module.so", "ngx_http_set_misc_module.so"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/nginx/modules", m)); err != nil {
			return "", fmt.Errorf("nginx module %s missing: %s", m, install)
		}
	}
	return bin, nil
}

// NginxSite is the reference site config (its text) with c's addresses.
func NginxSite(reference string, c NginxConfig) (string, error) {
	auth := c.Auth
	if c.AuthInline {
		auth = []string{c.App} // never used: the auth location answers itself
	}
	if len(auth) == 0 {
		return "", errors.New("nginx: no auth address")
	}
	repl := map[string]string{
		refAuth:   "server " + strings.Join(auth, ";\n    server ") + ";",
		refApp:    "server " + c.App + ";",
		refListen: fmt.Sprintf("listen 127.0.0.1:%d;", c.Port),
	}
	if c.AuthInline {
		repl[refCheck] = "return 200;"
	}
	return substitute(reference, repl)
}

// substitute replaces each key exactly once, so that a change of the
// reference config cannot silently leave nginx on other addresses.
func substitute(s string, repl map[string]string) (string, error) {
	for old, new := range repl {
		if n := strings.Count(s, old); n != 1 {
			return "", fmt.Errorf("reference nginx config: %q appears %d times, want 1", old, n)
		}
		s = strings.Replace(s, old, new, 1)
	}
	return s, nil
}

// Nginx is an nginx that WriteNginx configured; the caller runs it, as
// its processes go (exec.Command(n.Bin, n.Args()...)), and waits for its
// port with WaitHTTP.
type Nginx struct {
	Bin  string
	Dir  string
	Conf string // Dir/nginx.conf, which includes Dir/protected-app.conf
}

// Args run nginx in the foreground (the caller stops it with SIGQUIT).
func (n *Nginx) Args() []string {
	return []string{"-p", n.Dir, "-c", n.Conf, "-g", "daemon off;"}
}

// WaitListening waits until nginx has opened its sockets: its master
// writes the pid file only once it has bound every listen port. A port
// someone else took meanwhile (the free port was only free when picked)
// would otherwise pass an HTTP wait that the other listener answers.
func (n *Nginx) WaitListening(ctx context.Context, timeout time.Duration) error {
	pid := filepath.Join(n.Dir, "nginx.pid")
	return poll(ctx, timeout, 20*time.Millisecond, nil, func(context.Context) error {
		_, err := os.Stat(pid)
		return err
	})
}

// ErrorLog is nginx's error.log, for failures.
func (n *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "error.log"))
	return string(b)
}

// WriteNginx writes c.Dir/nginx.conf and the reference site config of the
// repository with c's addresses beside it, and checks them with nginx -t.
func WriteNginx(ctx context.Context, c NginxConfig) (*Nginx, error) {
	bin, err := FindNginx()
	if err != nil {
		return nil, err
	}
	root, err := FindRepoRoot()
	if err != nil {
		return nil, err
	}
	ref, err := os.ReadFile(filepath.Join(root, "examples", "nginx", "protected-app.conf"))
	if err != nil {
		return nil, err
	}
	site, err := NginxSite(string(ref), c)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// nginx's workers run as nobody when the master is root: let them in.
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return nil, err
	}
	n := &Nginx{Bin: bin, Dir: c.Dir, Conf: filepath.Join(c.Dir, "nginx.conf")}
	if err := os.WriteFile(filepath.Join(c.Dir, "protected-app.conf"), []byte(site), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.Conf, []byte(nginxMain(c)), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, bin, "-t", "-p", n.Dir, "-c", n.Conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %w\n%s", err, out)
	}
	return n, nil
}

// nginxMain is the main config around the site: Debian's modules for
// set_escape_uri, everything in c.Dir, and header buffers for sessions of
// real providers' size (a chunked session cookie of several kB).
func nginxMain(c NginxConfig) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	accessLog := "off"
	if c.AccessLog {
		accessLog = filepath.Join(c.Dir, "access.log")
	}
	return fmt.Sprintf(`
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_set_misc_module.so;
%[1]s
worker_processes %[3]d;
%[6]s
pid %[2]s/nginx.pid;
error_log %[2]s/error.log %[4]s;
events { worker_connections %[5]d; }
http {
    access_log %[7]s;
    client_body_temp_path %[2]s/tmp/body;
    proxy_temp_path %[2]s/tmp/proxy;
    fastcgi_temp_path %[2]s/tmp/fastcgi;
    uwsgi_temp_path %[2]s/tmp/uwsgi;
    scgi_temp_path %[2]s/tmp/scgi;
    large_client_header_buffers 4 16k;
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
%[8]s
    include %[2]s/protected-app.conf;
}
`, user, c.Dir, cmp.Or(c.Workers, 2), cmp.Or(c.LogLevel, "info"), cmp.Or(c.WorkerConnections, 1024), c.Main, accessLog, c.HTTP)
}
