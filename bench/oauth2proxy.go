package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const oauth2ProxyModule = "github.com/oauth2-proxy/oauth2-proxy/v7"

// installOAuth2Proxy runs `GOBIN=<dir> go install module@version` in a
// temporary folder (never in the repository), bounded by timeout.
func installOAuth2Proxy(ctx context.Context, dir, version string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "install", oauth2ProxyModule+"@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "CGO_ENABLED=0", "GOWORK=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("go install %s@%s: %v", oauth2ProxyModule, version, ctx.Err())
		}
		return "", fmt.Errorf("go install %s@%s: %v: %s", oauth2ProxyModule, version, err, lastLine(string(out)))
	}
	return filepath.Join(bin, "oauth2-proxy"), nil
}

// oauth2Proxy is a configured oauth2-proxy; start runs a fresh process
// (the cookie secret stays, so one sign-in serves every case).
type oauth2Proxy struct {
	bin, issuer, clientID, clientSecret string
	cookieSecret                        string
	Addr                                string
}

func newOAuth2Proxy(bin, issuer, clientID, clientSecret string) (*oauth2Proxy, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return &oauth2Proxy{
		bin: bin, issuer: issuer, clientID: clientID, clientSecret: clientSecret,
		cookieSecret: base64.RawURLEncoding.EncodeToString(secret),
		Addr:         fmt.Sprintf("127.0.0.1:%d", port),
	}, nil
}

func (o *oauth2Proxy) start(ctx context.Context, ps *procs, dir string) (*proc, error) {
	p, err := ps.start("oauth2-proxy", filepath.Join(dir, "oauth2-proxy.log"), syscall.SIGTERM, o.bin,
		"--provider=oidc",
		"--oidc-issuer-url="+o.issuer,
		"--client-id="+o.clientID,
		"--client-secret="+o.clientSecret,
		"--redirect-url=http://"+o.Addr+"/oauth2/callback",
		"--skip-provider-button",
		"--cookie-secure=false",
		"--cookie-secret="+o.cookieSecret,
		"--email-domain=*",
		"--upstream=static://200",
		"--http-address="+o.Addr,
		"--reverse-proxy",
		"--set-xauthrequest",
	)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "http://"+o.Addr+"/ping", 20*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// signIn drives /oauth2/start → provider → /oauth2/callback and returns the
// _oauth2_proxy cookie(s) as a Cookie header value.
func (o *oauth2Proxy) signIn(ctx context.Context) (string, error) {
	return signIn(ctx, "http://"+o.Addr+"/oauth2/start?rd=%2F", func(name string) bool {
		return strings.HasPrefix(name, "_oauth2_proxy") && !strings.HasSuffix(name, "_csrf")
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
