package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/extauth/extauth/internal/testenv"
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
	port, err := testenv.PickPort()
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
	if err := testenv.WaitHTTP(ctx, "http://"+o.Addr+"/ping", 20*time.Second, testenv.Alive(p.alive)); err != nil {
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

// prepareOAuth2Proxy installs oauth2-proxy (or takes -oauth2-proxy) and
// signs in once; what fails only makes its cases unavailable (b.o2pWhy).
func (b *bench) prepareOAuth2Proxy(ctx context.Context) {
	bin := b.o.o2pBin
	if bin == "" {
		logf("installing oauth2-proxy %s into %s (go install; a few minutes on a cold cache)", b.o.o2pVersion, b.dir)
		var err error
		if bin, err = installOAuth2Proxy(ctx, filepath.Join(b.dir, "oauth2-proxy"), b.o.o2pVersion, 10*time.Minute); err != nil {
			b.o2pWhy = "go install failed: " + err.Error()
			return
		}
		b.machine.OAuth2Proxy = b.o.o2pVersion + " (go install, " + runtime.Version() + ")"
	} else {
		b.machine.OAuth2Proxy = bin
	}
	o2p, err := newOAuth2Proxy(bin, b.issuer, b.clientID, b.clientSec)
	if err != nil {
		b.o2pWhy = err.Error()
		return
	}
	p, err := o2p.start(ctx, b.ps, b.dir)
	if err != nil {
		b.o2pWhy = "does not start: " + oneLine(err.Error())
		return
	}
	defer p.stop()
	cookie, err := o2p.signIn(ctx)
	if err != nil {
		b.o2pWhy = "sign-in failed: " + oneLine(err.Error())
		return
	}
	b.o2p, b.o2pCookie = o2p, cookie
}
