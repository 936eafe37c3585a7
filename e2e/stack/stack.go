// Package stack runs extauth the way a user meets it, on loopback: Debian's
// nginx with the reference config (examples/nginx/protected-app.conf), a real
// OpenID provider (zitadel's example OP, see e2e/op), extauth itself, and a
// small upstream app that echoes the identity headers it receives (and, with
// Options.Assertion, verifies the signed one as an app would). The browser
// tests and `make demo` both start it.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/e2e/op"
	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/server"
)

// Options shape the stack; zero values pick free loopback ports.
type Options struct {
	// AccessTokenTTL is the provider's access-token lifetime (short, so that
	// refresh happens within a test). Default 30s.
	AccessTokenTTL time.Duration
	// RefreshBefore is extauth's session.refreshBefore. Default 1s.
	RefreshBefore time.Duration
	// NginxPort is the port the browser uses (0: a free one).
	NginxPort int
	// OPPort is the provider's port (0: a free one).
	OPPort int
	// Dir holds nginx's config, logs and temp files (default: a new temp dir).
	Dir string
	// Log receives extauth's logs (default: discarded).
	Log *slog.Logger
	// Provider, when set, is used instead of starting the zitadel OP (the
	// in-process fake provider serves token sets of exact sizes).
	Provider *ExternalProvider
	// Gateway is "nginx" (default: examples/nginx/protected-app.conf) or
	// "caddy" (examples/caddy/Caddyfile, forward_auth).
	Gateway string
	// Replicas is how many extauth processes share the work (default 1);
	// nginx balances its upstream over them round robin.
	Replicas int
	// Redis, when set, is the address of the Redis the replicas share.
	Redis string
	// Store is session.store: "cookie" (default) or "redis".
	Store string
	// Update, when set, changes extauth's configuration after it is
	// parsed (scopes, extraAuthParams, claims of a provider); the result
	// is validated again.
	Update func(cfg *config.Config)
	// ExtraYAML is appended to extauth's configuration file as it is
	// (top-level keys such as apps:, which Update cannot add: an app
	// inherits the keys it leaves out when the file is parsed).
	ExtraYAML string
	// Assertion turns assertion.* on: a new signing key in Dir (AssertionKey,
	// else a new EC P-256 one, as `extauth keygen --assertion` writes),
	// issuer AssertionIssuer. The app then verifies the X-Auth-Request-Jwt
	// it receives against extauth's /.well-known/jwks.json and reports what
	// it found at /api/assertion.
	Assertion bool
	// AssertionKey is the PEM signing key (PKCS#8 EC P-256 or Ed25519) when
	// Assertion is set; nil: a new EC P-256 key.
	AssertionKey []byte
}

// AssertionIssuer is the assertion's iss in a stack with Options.Assertion.
const AssertionIssuer = "http://extauth.test"

// ExternalProvider is an OpenID provider the caller runs.
type ExternalProvider struct {
	Issuer, ClientID, ClientSecret string
}

// Stack is a running stack.
type Stack struct {
	URL    string // the protected app through nginx, e.g. http://127.0.0.1:8080
	OP     *op.Provider
	Config *config.Config // extauth's configuration (its session secret opens cookies in tests)
	Dir    string
	// Replicas are the extauth addresses (host:port), Metrics their metrics listeners.
	Replicas []string
	Metrics  []string
	ownDir   bool // Dir was made by Start and goes with Stop
	app      *http.Server
	echo     *echoApp
	gateway  *exec.Cmd // nginx or caddy
	cancel   context.CancelFunc
	extauthC chan error
	extauthN int // processes that send on extauthC
}

const (
	clientID     = "extauth-e2e"
	clientSecret = "e2e-secret"
)

// Start brings everything up and waits until nginx answers.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = 30 * time.Second
	}
	if o.RefreshBefore == 0 {
		o.RefreshBefore = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Stack{}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	var err error
	if s.Dir = o.Dir; s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "extauth-e2e-"); err != nil {
			return nil, err
		}
		s.ownDir = true
	}
	nginxPort := o.NginxPort
	if nginxPort == 0 {
		if nginxPort, err = testenv.PickPort(); err != nil {
			return nil, err
		}
	}
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", nginxPort)

	// The provider.
	idp := o.Provider
	if idp == nil {
		s.OP, err = op.Start(op.Config{
			Addr:                   fmt.Sprintf("127.0.0.1:%d", o.OPPort),
			ClientID:               clientID,
			ClientSecret:           clientSecret,
			RedirectURIs:           []string{s.URL + "/oauth2/callback"},
			PostLogoutRedirectURIs: []string{s.URL + "/"},
			AccessTokenTTL:         o.AccessTokenTTL,
		})
		if err != nil {
			return nil, fmt.Errorf("start provider: %w", err)
		}
		idp = &ExternalProvider{Issuer: s.OP.Issuer(), ClientID: clientID, ClientSecret: clientSecret}
	}

	// The upstream app.
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.echo = &echoApp{}
	s.app = &http.Server{Handler: s.echo, ReadHeaderTimeout: 5 * time.Second}
	go s.app.Serve(appLn)

	// extauth, from a YAML file as users write it: one process per replica,
	// the same configuration but for the listeners.
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	// Caddy's forward_auth speaks X-Forwarded-*, believed only from trusted
	// peers; nginx's auth_request needs no trust.
	trusted := "[]"
	if o.Gateway == "caddy" {
		trusted = "[127.0.0.1/32]"
	}
	redis := ""
	if o.Redis != "" {
		store := o.Store
		if store == "" {
			store = config.StoreCookie
		}
		redis = fmt.Sprintf("  store: %s\n  redis: {enabled: true, address: %q}\n", store, o.Redis)
	}
	assertionYAML := ""
	if o.Assertion {
		key := o.AssertionKey
		if key == nil {
			if key, err = assertion.GenerateKey(rand.Reader); err != nil {
				return nil, err
			}
		}
		keyFile := filepath.Join(s.Dir, "assertion.pem")
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			return nil, err
		}
		assertionYAML = fmt.Sprintf("assertion:\n  enabled: true\n  keyFile: %q\n  issuer: %q\n", keyFile, AssertionIssuer)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	var runCtx context.Context
	runCtx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.extauthC = make(chan error, o.Replicas)
	for range o.Replicas {
		extauthLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			extauthLn.Close()
			return nil, err
		}
		yaml := fmt.Sprintf(`
server:
  address: %q
  metricsAddress: %q
  shutdownTimeout: 5s
  trustedProxies: %s
oidc:
  issuerURL: %q
  clientID: %q
  clientSecret: %q
  redirectURL: %q
  postLogoutRedirectURL: %q
session:
  cookieSecure: false          # plain http on loopback
  refreshBefore: %s
  secrets: [%q]
%s%slogging:
  level: debug
%s`, extauthLn.Addr(), metricsLn.Addr(), trusted, idp.Issuer, idp.ClientID, idp.ClientSecret,
			s.URL+"/oauth2/callback", s.URL+"/", o.RefreshBefore, base64.StdEncoding.EncodeToString(secret), redis,
			assertionYAML, o.ExtraYAML)
		if s.Config, err = config.Parse([]byte(yaml)); err == nil && o.Update != nil {
			o.Update(s.Config)
			err = s.Config.Validate()
		}
		if err != nil {
			extauthLn.Close()
			metricsLn.Close()
			return nil, fmt.Errorf("extauth config: %w", err)
		}
		srv, err := server.New(s.Config, o.Log, "e2e")
		if err != nil {
			extauthLn.Close()
			metricsLn.Close()
			return nil, err
		}
		go func() { s.extauthC <- srv.Serve(runCtx, extauthLn, metricsLn) }()
		s.extauthN++
		addr := extauthLn.Addr().String()
		s.Replicas = append(s.Replicas, addr)
		s.Metrics = append(s.Metrics, metricsLn.Addr().String())
		if err := testenv.WaitHTTP(ctx, "http://"+addr+"/readyz", 15*time.Second); err != nil {
			return nil, fmt.Errorf("extauth never became ready: %w", err)
		}
	}

	// The app verifies the assertion as a real one would: the public keys
	// from extauth's JWKS (every replica serves the same key file's).
	if o.Assertion {
		s.echo.keys.Store(oidc.NewRemoteKeySet(runCtx, "http://"+s.Replicas[0]+"/.well-known/jwks.json"))
	}

	// The gateway with its reference config.
	switch o.Gateway {
	case "", "nginx":
		err = s.startNginx(ctx, nginxPort, s.Replicas, appLn.Addr().String())
	case "caddy":
		err = s.startCaddy(ctx, nginxPort, s.Replicas[0], appLn.Addr().String())
	default:
		err = fmt.Errorf("unknown gateway %q", o.Gateway)
	}
	if err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Stop ends everything; it is safe to call more than once.
func (s *Stack) Stop() {
	if s.gateway != nil && s.gateway.Process != nil {
		// SIGQUIT: nginx's graceful stop; caddy stops on it too.
		_ = s.gateway.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { s.gateway.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = s.gateway.Process.Kill()
		}
		s.gateway = nil
	}
	if s.cancel != nil {
		s.cancel()
		for range s.extauthN {
			<-s.extauthC
		}
		s.cancel = nil
	}
	if s.app != nil {
		_ = s.app.Close()
		s.app = nil
	}
	if s.OP != nil {
		_ = s.OP.Close()
		s.OP = nil
	}
	if s.ownDir {
		_ = os.RemoveAll(s.Dir)
		s.ownDir = false
	}
}

// NginxLog returns the gateway's error log (nginx's or caddy's), for test failures.
func (s *Stack) NginxLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "error.log"))
	return string(b)
}

func (s *Stack) startNginx(ctx context.Context, port int, extauthAddrs []string, appAddr string) error {
	n, err := testenv.WriteNginx(ctx, testenv.NginxConfig{Dir: s.Dir, Port: port, Auth: extauthAddrs, App: appAddr, AccessLog: true})
	if err != nil {
		return err
	}
	s.gateway = exec.Command(n.Bin, n.Args()...)
	s.gateway.Stdout, s.gateway.Stderr = os.Stderr, os.Stderr
	if err := s.gateway.Start(); err != nil {
		return fmt.Errorf("start nginx: %w", err)
	}
	if err := n.WaitListening(ctx, 10*time.Second); err != nil {
		return fmt.Errorf("nginx never listened on %d: %w\n%s", port, err, s.NginxLog())
	}
	if err := testenv.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/oauth2/userinfo", port), 10*time.Second); err != nil {
		return fmt.Errorf("nginx never answered: %w\n%s", err, s.NginxLog())
	}
	return nil
}

// startCaddy runs Debian's caddy with examples/caddy/Caddyfile as it is;
// the addresses come in the environment variables the file reads.
func (s *Stack) startCaddy(ctx context.Context, port int, extauthAddr, appAddr string) error {
	bin, err := exec.LookPath("caddy")
	if err != nil {
		return errors.New("caddy not found: apt-get install caddy")
	}
	root, err := testenv.FindRepoRoot()
	if err != nil {
		return err
	}
	caddyfile := filepath.Join(root, "examples", "caddy", "Caddyfile")
	s.gateway = exec.Command(bin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	s.gateway.Env = append(os.Environ(),
		fmt.Sprintf("EXTAUTH_DEMO_PORT=%d", port),
		"EXTAUTH_ADDR="+extauthAddr,
		"EXTAUTH_APP_ADDR="+appAddr,
		// Caddy's own state stays in the stack's folder.
		"XDG_DATA_HOME="+filepath.Join(s.Dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(s.Dir, "config"),
		"HOME="+s.Dir,
	)
	logFile, err := os.Create(filepath.Join(s.Dir, "error.log"))
	if err != nil {
		return err
	}
	s.gateway.Stdout, s.gateway.Stderr = logFile, logFile
	if err := s.gateway.Start(); err != nil {
		return fmt.Errorf("start caddy: %w", err)
	}
	if err := testenv.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/oauth2/userinfo", port), 10*time.Second); err != nil {
		return fmt.Errorf("caddy never answered: %w\n%s", err, s.NginxLog())
	}
	return nil
}

// echoApp is the protected app: a page that shows the identity headers it
// received; /fail answers the same page with status 500; /api/* answers JSON,
// /api/headers with every X-Auth-Request-* header it got, /api/assertion
// with what verifying X-Auth-Request-Jwt found (AssertionReport).
type echoApp struct {
	// keys are extauth's assertion keys (Options.Assertion), else nil.
	keys atomic.Pointer[oidc.RemoteKeySet]
}

// AssertionReport is the app's answer at /api/assertion: whether the
// request carried X-Auth-Request-Jwt, and what go-oidc's verifier (issuer
// AssertionIssuer, audience the request's host without its port, ES256 or
// EdDSA, extauth's JWKS) made of it.
type AssertionReport struct {
	Present  bool     `json:"present"`
	Values   int      `json:"values"` // how many X-Auth-Request-Jwt the app got
	Token    string   `json:"token,omitempty"`
	Verified bool     `json:"verified"`
	Error    string   `json:"error,omitempty"`
	Alg      string   `json:"alg,omitempty"`
	Kid      string   `json:"kid,omitempty"`
	Audience []string `json:"aud,omitempty"`
	Subject  string   `json:"sub,omitempty"`
	Email    string   `json:"email,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	// PreferredUsername and SID are the claims of the same names.
	PreferredUsername string `json:"preferred_username,omitempty"`
	SID               string `json:"sid,omitempty"`
}

// verifyAssertion checks the request's X-Auth-Request-Jwt the way an app
// behind extauth would.
func (e *echoApp) verifyAssertion(r *http.Request) AssertionReport {
	values := r.Header.Values("X-Auth-Request-Jwt")
	rep := AssertionReport{Present: len(values) > 0, Values: len(values)}
	if !rep.Present {
		return rep
	}
	rep.Token = values[0]
	if head, _, ok := strings.Cut(rep.Token, "."); ok {
		var h struct{ Alg, Kid string }
		if b, err := base64.RawURLEncoding.DecodeString(head); err == nil && json.Unmarshal(b, &h) == nil {
			rep.Alg, rep.Kid = h.Alg, h.Kid
		}
	}
	keys := e.keys.Load()
	if keys == nil {
		rep.Error = "the stack runs without assertion.enabled"
		return rep
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	v := oidc.NewVerifier(AssertionIssuer, keys, &oidc.Config{ClientID: strings.ToLower(host),
		SupportedSigningAlgs: []string{oidc.ES256, oidc.EdDSA}})
	tok, err := v.Verify(r.Context(), rep.Token)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	var claims struct {
		Email             string   `json:"email"`
		Groups            []string `json:"groups"`
		PreferredUsername string   `json:"preferred_username"`
		SID               string   `json:"sid"`
	}
	if err := tok.Claims(&claims); err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Verified = true
	rep.Audience, rep.Subject = tok.Audience, tok.Subject
	rep.Email, rep.Groups, rep.PreferredUsername, rep.SID = claims.Email, claims.Groups, claims.PreferredUsername, claims.SID
	return rep
}

func (e *echoApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var names []string
	for name := range r.Header {
		if strings.HasPrefix(name, "X-Auth-Request-") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if r.URL.Path == "/api/headers" {
		// Every identity header as the app received it, to prove that a
		// client's own X-Auth-Request-* never gets through.
		seen := map[string][]string{}
		for _, name := range names {
			seen[name] = r.Header.Values(name)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen)
		return
	}
	if r.URL.Path == "/api/assertion" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e.verifyAssertion(r))
		return
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user":%q}`, r.Header.Get("X-Auth-Request-User"))
		return
	}
	status := http.StatusOK
	if r.URL.Path == "/fail" {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<!doctype html><html><head><title>Protected app</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1 id="greeting">Hello, %s</h1>
<p>You reached <code id="path">%s</code> through nginx and extauth (status %d).</p>
<table id="headers">`, html.EscapeString(r.Header.Get("X-Auth-Request-Email")), html.EscapeString(r.URL.RequestURI()), status)
	for _, name := range names {
		fmt.Fprintf(w, `<tr><th style="text-align:left">%s</th><td data-header="%s">%s</td></tr>`,
			html.EscapeString(name), html.EscapeString(name), html.EscapeString(r.Header.Get(name)))
	}
	fmt.Fprint(w, `</table><p><a href="/oauth2/sign_out">Sign out</a></p></body></html>`)
}
