package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/e2e/stack"
	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
)

// nodeOIDCDir holds panva's oidc-provider (package.json pins the version,
// package-lock.json the rest) and provider.mjs, which configures it.
const nodeOIDCDir = "testdata/oidc-provider"

// nodeOIDCAccessTTL is the provider's access-token lifetime: short, so that
// the scenario refreshes twice within seconds, and long enough that signing
// in again and the provider's back-channel logout fit in it (the check that
// follows the logout must fail for the logout, not for a failed refresh).
const nodeOIDCAccessTTL = 5 * time.Second

// TestNodeOIDCProvider runs the interop scenario against node oidc-provider
// 9.13.3 (a certified OpenID provider): sign-in through its development
// login and consent pages, refresh with rotation, sign-out with revocation
// and RP-initiated logout, and a back-channel logout it sends.
func TestNodeOIDCProvider(t *testing.T) {
	p := startNodeOIDC(t)
	// First: runInterop counts the proxy's code grants from zero.
	t.Run("scenario", func(t *testing.T) { runInterop(t, p) })
	t.Run("promptConsent-auto", func(t *testing.T) { nodeOIDCPromptConsentAuto(t, p) })
}

// nodeOIDCPromptConsentAuto: with oidc.promptConsent auto (the default) a
// process's first sign-in gets no refresh token from oidc-provider, is
// restarted with prompt=consent (a second consent page, a second code
// exchange) and counted as a no_refresh_token warning; the next sign-in
// sends prompt=consent from the start.
func nodeOIDCPromptConsentAuto(t *testing.T, p *interopProvider) {
	s := startStack(t, stack.Options{
		Provider:  &stack.ExternalProvider{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret},
		NginxPort: p.NginxPort,
		Update: func(cfg *config.Config) {
			p.Update(cfg)
			cfg.OIDC.PromptConsent = config.PromptConsentAuto
		},
	})
	for i, want := range []struct{ consents, codes int }{{2, 2}, {1, 1}} {
		ctx := browser(t) // a new browser: no session at the provider yet
		before := p.Proxy.counts()
		run(t, ctx, "open the protected page", chromedp.Navigate(s.URL+"/auto"))
		consents := nodeOIDCLogin(t, ctx, p.Issuer, s.URL)
		run(t, ctx, "signed-in page", chromedp.WaitVisible(chromedp.CSS("#greeting")))
		codes := p.Proxy.counts().grants["authorization_code"] - before.grants["authorization_code"]
		refreshToken := refreshTokenOf(t, s, sessionCookie(t, ctx)) != "" // fails the test when empty
		t.Logf("interop node-oidc-provider: promptConsent auto, sign-in %d: %d consent page(s), %d code exchange(s), refresh token %v",
			i+1, consents, codes, refreshToken)
		if consents != want.consents || codes != want.codes {
			t.Errorf("sign-in %d: %d consent pages and %d code exchanges, want %d and %d", i+1, consents, codes, want.consents, want.codes)
		}
	}
	if n := signinWarnings(t, s.Metrics[0], "no_refresh_token"); n != 1 {
		t.Errorf("extauth_signin_warnings_total{warning=no_refresh_token} = %v, want 1", n)
	}
}

// signinWarnings reads extauth_signin_warnings_total{warning} from a
// metrics listener.
func signinWarnings(t *testing.T, metricsAddr, warning string) float64 {
	t.Helper()
	return counterSum(scrape(t, metricsAddr)["extauth_signin_warnings_total"], "warning", warning)
}

// startNodeOIDC installs the provider's packages when node_modules is
// missing (npm ci: a fresh CI machine), starts `node provider.mjs` behind a
// counting proxy whose URL is the issuer, waits for its discovery document
// and stops it when the test ends.
func startNodeOIDC(t *testing.T) *interopProvider {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: node oidc-provider needs Node.js 20 or later (22 LTS is its supported runtime)")
	}
	v, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	version := strings.TrimSpace(string(v))
	if major, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), "."); atoi(major) < 20 {
		t.Fatalf("node %s: node oidc-provider 9 needs Node.js 20 or later (22 LTS is its supported runtime)", version)
	}
	installNodeOIDC(t)

	const clientID, clientSecret = "extauth-e2e", "e2e-secret"
	nginxPort := testenv.FreePort(t)
	opPort := testenv.FreePort(t)
	appURL := fmt.Sprintf("http://127.0.0.1:%d", nginxPort)
	proxy := startCountingProxy(t, fmt.Sprintf("http://127.0.0.1:%d", opPort))

	cmd := exec.Command(node, "provider.mjs")
	cmd.Dir = nodeOIDCDir
	cmd.Env = append(os.Environ(),
		"OP_PORT="+strconv.Itoa(opPort),
		"OP_ISSUER="+proxy.URL,
		"OP_APP_URL="+appURL,
		"OP_CLIENT_ID="+clientID,
		"OP_CLIENT_SECRET="+clientSecret,
		"OP_ACCESS_TTL="+strconv.Itoa(int(nodeOIDCAccessTTL/time.Second)),
	)
	out := &nodeOIDCLog{}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node provider.mjs: %v", err)
	}
	go out.read(pr)
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); pw.Close(); close(done) }()
	alive := func() error {
		select {
		case <-done:
			return fmt.Errorf("node provider.mjs exited: %v\n%s", waitErr, out)
		default:
			return nil
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node oidc-provider's output:\n%s", out)
		}
		if alive() != nil {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	start := time.Now()
	// Through the proxy, which learns the endpoints' paths from it.
	if err := testenv.WaitHTTP(t.Context(), proxy.URL+"/.well-known/openid-configuration", 20*time.Second,
		testenv.WantStatus(200), testenv.Alive(alive)); err != nil {
		t.Fatalf("node oidc-provider never served its discovery document: %v\n%s", err, out)
	}
	t.Logf("node oidc-provider up in %v (issuer %s, behind the counting proxy)", time.Since(start).Round(time.Millisecond), proxy.URL)

	return &interopProvider{
		Name:           "node-oidc-provider",
		Issuer:         proxy.URL,
		ClientID:       clientID,
		ClientSecret:   clientSecret,
		NginxPort:      nginxPort,
		Proxy:          proxy,
		AccessTokenTTL: nodeOIDCAccessTTL,
		Update: func(cfg *config.Config) {
			// groups is a scope of its own at this provider.
			cfg.OIDC.Scopes = []string{"openid", "profile", "email", "groups", "offline_access"}
			// oidc-provider drops offline_access (so issues no refresh
			// token) unless the authorization request has prompt=consent
			// (OpenID Connect Core §11). The default, auto, learns that at
			// a process's first sign-in, which then shows the consent page
			// twice (see the promptConsent-auto subtest); always asks from
			// the start.
			cfg.OIDC.PromptConsent = config.PromptConsentAlways
		},
		Login: func(t *testing.T, ctx context.Context) {
			t.Helper()
			nodeOIDCLogin(t, ctx, proxy.URL, appURL)
		},
		ConfirmLogout: func(t *testing.T, ctx context.Context) {
			t.Helper()
			// Its logout page asks "Do you want to sign-out from …?".
			run(t, ctx, "confirm the provider's logout page",
				chromedp.WaitVisible(chromedp.CSS(`button[name="logout"]`)),
				chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
			waitLeft(t, ctx, proxy.URL+"/session/end")
		},
		BackchannelLogout: func(t *testing.T, ctx context.Context) {
			t.Helper()
			// The user signs out at the provider itself (RP-initiated
			// logout without id_token_hint, confirmed): it ends its session
			// and POSTs a logout token to every client of that session that
			// registered a backchannel_logout_uri, before it answers.
			sent := out.count("backchannel ")
			run(t, ctx, "the provider's own logout page",
				chromedp.Navigate(proxy.URL+"/session/end"),
				chromedp.WaitVisible(chromedp.CSS(`button[name="logout"]`)),
				chromedp.Click(chromedp.CSS(`button[name="logout"]`)))
			waitAt(t, ctx, proxy.URL+"/session/end/success")
			if h := text(t, ctx, "h1"); h != "Sign-out Success" {
				t.Errorf("the provider's logout ended on %q", h)
			}
			// The provider logs its back-channel request's outcome before
			// it redirects; its output may take a moment to be read.
			lines := out.lines("backchannel ")
			for deadline := time.Now().Add(2 * time.Second); len(lines) == sent && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				lines = out.lines("backchannel ")
			}
			if len(lines) != sent+1 {
				t.Fatalf("the provider sent %d back-channel logouts, want 1: %v", len(lines)-sent, lines[sent:])
			}
			t.Logf("interop node-oidc-provider: the provider's back-channel logout: %s", lines[sent])
			if !strings.HasPrefix(lines[sent], "backchannel ok ") {
				t.Errorf("extauth refused the provider's logout token: %s", lines[sent])
			}
		},
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// installNodeOIDC runs npm ci when node_modules lacks the provider.
func installNodeOIDC(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeOIDCDir, "node_modules", "oidc-provider", "package.json")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm not found: installing node oidc-provider needs it (apt-get install npm)")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = nodeOIDCDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", nodeOIDCDir, err, b)
	}
	t.Logf("npm ci installed node oidc-provider in %v", time.Since(start).Round(time.Millisecond))
}

// nodeOIDCLogin completes the development login page (any login and
// password) and every consent page that follows, until the browser is back
// on the app; it returns how many consent pages it confirmed. With
// oidc.promptConsent auto a process's first sign-in meets two: the one for
// the scopes, then the one for the sign-in extauth restarts with
// prompt=consent after a code exchange without a refresh token.
func nodeOIDCLogin(t *testing.T, ctx context.Context, issuer, appURL string) int {
	t.Helper()
	run(t, ctx, "the provider's login page",
		chromedp.WaitVisible(chromedp.CSS(`input[name="login"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="login"]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name="password"]`), "any password"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	deadline := time.Now().Add(20 * time.Second)
	var consented []string // the interactions whose consent page was confirmed
	for time.Now().Before(deadline) {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err == nil && strings.HasPrefix(loc, appURL) {
			return len(consented)
		}
		// /interaction/<uid>: one login and one consent page at most each.
		if err == nil && strings.HasPrefix(loc, issuer+"/interaction/") && !slices.Contains(consented, loc) {
			n, err := chromedp.Run(ctx, chromedp.Evaluate[int](
				`document.querySelectorAll('form input[name="prompt"][value="consent"]').length`))
			if err == nil && n > 0 {
				run(t, ctx, "the provider's consent page",
					chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
				consented = append(consented, loc)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	t.Fatalf("the provider's login did not return to %s (browser at %s)", appURL, loc)
	return 0
}

// waitLeft waits until the browser's location no longer starts with prefix.
func waitLeft(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	waitLocation(t, ctx, "leave "+prefix, func(loc string) bool { return !strings.HasPrefix(loc, prefix) })
}

// waitAt waits until the browser's location starts with prefix.
func waitAt(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	waitLocation(t, ctx, "reach "+prefix, func(loc string) bool { return strings.HasPrefix(loc, prefix) })
}

func waitLocation(t *testing.T, ctx context.Context, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil && ok(loc) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	t.Fatalf("the browser did not %s (at %s)", what, loc)
}

// nodeOIDCLog keeps the provider's output lines.
type nodeOIDCLog struct {
	mu  sync.Mutex
	all []string
}

func (l *nodeOIDCLog) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// lines returns the lines that start with prefix.
func (l *nodeOIDCLog) lines(prefix string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

func (l *nodeOIDCLog) count(prefix string) int { return len(l.lines(prefix)) }

func (l *nodeOIDCLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}
