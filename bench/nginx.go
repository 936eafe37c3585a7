package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/internal/testenv"
)

// nginxSetup is what every nginx case shares: the same main config (worker
// count, buffers, no access log) and the reference site config
// examples/nginx/protected-app.conf with keepalive upstreams, of which only
// the three addresses differ — and, for floor-nginx, the one proxy_pass of
// the auth location that becomes "return 200;" (testenv.WriteNginx, as the
// e2e stack runs it).
type nginxSetup struct {
	bin     string
	workers int
}

func findNginx(workers int) (*nginxSetup, error) {
	bin, err := testenv.FindNginx()
	if err != nil {
		return nil, err
	}
	return &nginxSetup{bin: bin, workers: workers}, nil
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
	port, err := testenv.PickPort()
	if err != nil {
		return nil, err
	}
	appPort, err := testenv.PickPort()
	if err != nil {
		return nil, err
	}
	appAddr := fmt.Sprintf("127.0.0.1:%d", appPort)
	ngx, err := testenv.WriteNginx(ctx, testenv.NginxConfig{
		Dir: dir, Port: port, Auth: []string{authAddr}, AuthInline: authInline, App: appAddr,
		Workers: n.workers, WorkerConnections: 4096, LogLevel: "warn",
		Main: "worker_rlimit_nofile 8192;",
		// The protected app is a server block of the same nginx answering
		// 200: the cheapest app there is, the same in every case.
		HTTP: fmt.Sprintf(`    keepalive_requests 1000000;
    server {
        listen %s;
        keepalive_requests 1000000;
        location / { return 200 "app\n"; }
    }`, appAddr),
	})
	if err != nil {
		return nil, err
	}
	p, err := ps.start("nginx", filepath.Join(dir, "nginx.out"), syscall.SIGQUIT, ngx.Bin, ngx.Args()...)
	if err != nil {
		return nil, err
	}
	err = ngx.WaitListening(ctx, 10*time.Second)
	if err == nil {
		err = testenv.WaitHTTP(ctx, "http://"+appAddr+"/", 10*time.Second, testenv.Alive(p.alive))
	}
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("nginx: %w\n%s", err, ngx.ErrorLog())
	}
	return &nginxInstance{proc: p, URL: fmt.Sprintf("http://127.0.0.1:%d/", port)}, nil
}
