package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
)

// Ory Hydra v2.3.0, built from e2e/tools/hydra (a module whose only job is
// to pin it: `go get -tool github.com/ory/hydra/v2@v2.3.0`, plus the
// replace of gobuffalo/pop that Hydra's own go.mod carries and a
// dependent module does not inherit).
const (
	hydraModule = "github.com/ory/hydra/v2"
	// hydraTags: the sqlite driver is compiled in only with this tag, and
	// DSN=memory is an in-memory SQLite database (Hydra's Makefile builds
	// with the same tags).
	hydraTags = "sqlite,sqlite_omit_load_extension"
	// hydraAccessTTL is Hydra's access-token lifetime (ttl.access_token).
	hydraAccessTTL = 5 * time.Second

	// The login app's one user.
	hydraUsername = "alice"
	hydraPassword = "wonderland"
	hydraSubject  = "alice@example.com"
)

// TestHydra runs the interop scenario against Ory Hydra: opaque access
// tokens, refresh tokens rotated with reuse detection (Hydra's default),
// RP-initiated logout through Hydra's logout challenge, and a back-channel
// logout when the user signs out at Hydra itself.
func TestHydra(t *testing.T) {
	runInterop(t, startHydra(t))
}

// hydraBinary builds Hydra into the user's cache folder and returns its
// path. go build writes nothing when the binary there is up to date, so a
// repeated run costs well under a second; a cold build (empty module and
// build caches, as on a new CI machine) takes about two minutes here.
func hydraBinary(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "extauth-e2e", "hydra")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hydra")
	mod, err := filepath.Abs(filepath.Join("tools", "hydra"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), "go", "build", "-tags", hydraTags, "-o", bin, hydraModule)
	cmd.Dir = mod
	// The sqlite driver is cgo.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if downloadFailed(string(out)) {
			t.Skipf("hydra: cannot download its modules (outside this test's control):\n%s", out)
		}
		t.Fatalf("build hydra in %s: %v\n%s", mod, err, out)
	}
	t.Logf("hydra: go build took %v (%s)", time.Since(start).Round(10*time.Millisecond), bin)
	return bin
}

// downloadFailed tells a module download that failed (the module proxy
// unreachable) from a build that failed.
func downloadFailed(out string) bool {
	for _, s := range []string{"dial tcp", "no such host", "i/o timeout", "connection refused", "TLS handshake timeout", "502 Bad Gateway", "503 Service Unavailable"} {
		if strings.Contains(out, s) && strings.Contains(out, "go: ") {
			return true
		}
	}
	return false
}

// hydra is a running Hydra with its login app.
type hydra struct {
	issuer string // the counting proxy's URL
	admin  string // Hydra's admin API, e.g. http://127.0.0.1:4445
	log    *testenv.LockedBuffer
	cmd    *exec.Cmd
	client *http.Client
}

// startHydra starts Hydra on loopback ports with an in-memory database,
// behind a front server that adds the login, consent and logout app under
// /ui/ (so that the provider's pages share its origin), behind the counting
// proxy whose URL is the issuer; registers extauth's client; and describes
// it all for runInterop.
func startHydra(t *testing.T) *interopProvider {
	t.Helper()
	bin := hydraBinary(t)
	nginxPort := testenv.FreePort(t)
	nginxURL := fmt.Sprintf("http://127.0.0.1:%d", nginxPort)
	publicPort, adminPort := testenv.FreePort(t), testenv.FreePort(t)
	h := &hydra{
		admin:  fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		log:    &testenv.LockedBuffer{},
		client: &http.Client{Timeout: 10 * time.Second},
	}

	// The front server: the login app under /ui/, Hydra's public API for
	// the rest.
	public, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", publicPort))
	toHydra := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(public)
		r.Out.Host = r.In.Host
		r.Out.Header["X-Forwarded-For"] = r.In.Header["X-Forwarded-For"]
		r.Out.Header["X-Forwarded-Proto"] = r.In.Header["X-Forwarded-Proto"]
		r.Out.Header["X-Forwarded-Host"] = r.In.Header["X-Forwarded-Host"]
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ui/login", h.loginPage)
	mux.HandleFunc("/ui/consent", h.consentPage)
	mux.HandleFunc("/ui/logout", h.logoutPage)
	mux.HandleFunc("/ui/signed-out", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>Signed out</title><h1 id="signed-out">Signed out of Hydra</h1>`)
	})
	mux.HandleFunc("/ui/error", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<!doctype html><title>Error</title><h1 id="hydra-error">%s</h1><p>%s</p><p>%s</p>`,
			template.HTMLEscapeString(r.URL.Query().Get("error")),
			template.HTMLEscapeString(r.URL.Query().Get("error_description")),
			template.HTMLEscapeString(r.URL.Query().Get("error_hint")))
	})
	mux.Handle("/", toHydra)
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	proxy := startCountingProxy(t, front.URL)
	h.issuer = proxy.URL

	// Hydra reads its configuration from the environment only: a clean
	// one, so that nothing of the caller's (LOG_LEVEL, DSN...) leaks in.
	home := t.TempDir()
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	h.cmd = exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	h.cmd.Dir = home
	h.cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + home,
		"TMPDIR=" + home,
		"DSN=memory",
		"SQA_OPT_OUT=true",
		// info: signOutAtHydra reads the line that says a back-channel
		// logout was delivered.
		"LOG_LEVEL=info",
		"SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", publicPort),
		"SERVE_ADMIN_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", adminPort),
		"URLS_SELF_ISSUER=" + h.issuer,
		"URLS_SELF_PUBLIC=" + h.issuer,
		"URLS_LOGIN=" + h.issuer + "/ui/login",
		"URLS_CONSENT=" + h.issuer + "/ui/consent",
		"URLS_LOGOUT=" + h.issuer + "/ui/logout",
		"URLS_POST_LOGOUT_REDIRECT=" + h.issuer + "/ui/signed-out",
		"URLS_ERROR=" + h.issuer + "/ui/error",
		"SECRETS_SYSTEM=" + hex.EncodeToString(secret),
		"TTL_ACCESS_TOKEN=" + hydraAccessTTL.String(),
		// Opaque access tokens and refresh-token rotation without a grace
		// period are Hydra's defaults; said here so that the test states
		// what it runs against.
		"STRATEGIES_ACCESS_TOKEN=opaque",
		"OAUTH2_GRANT_REFRESH_TOKEN_ROTATION_GRACE_PERIOD=0s",
	}
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start hydra: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- h.cmd.Wait() }()
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = h.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("hydra's log (its last 32 KB, without request starts and migrations):\n%s", hydraLogTail(h.log, 32<<10))
		}
	})
	alive := testenv.Alive(func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("hydra exited: %v", err)
		default:
			return nil
		}
	})
	started := time.Now()
	if err := testenv.WaitHTTP(t.Context(), h.admin+"/health/ready", 30*time.Second, testenv.WantStatus(http.StatusOK), alive); err != nil {
		t.Fatalf("hydra never became ready: %v\n%s", err, hydraLogTail(h.log, 32<<10))
	}
	t.Logf("hydra: ready after %v", time.Since(started).Round(time.Millisecond))

	// extauth's client: a confidential web client with refresh tokens,
	// RP-initiated and back-channel logout.
	clientID, clientSecret := "extauth-e2e", hex.EncodeToString(secret[:8])+"-hydra-e2e"
	h.adminJSON(t, http.MethodPost, "/admin/clients", map[string]any{
		"client_id":                           clientID,
		"client_secret":                       clientSecret,
		"token_endpoint_auth_method":          "client_secret_basic",
		"grant_types":                         []string{"authorization_code", "refresh_token"},
		"response_types":                      []string{"code"},
		"scope":                               "openid offline_access email profile",
		"redirect_uris":                       []string{nginxURL + "/oauth2/callback"},
		"post_logout_redirect_uris":           []string{nginxURL + "/"},
		"backchannel_logout_uri":              nginxURL + "/oauth2/backchannel_logout",
		"backchannel_logout_session_required": true,
	}, nil)

	return &interopProvider{
		Name:         "hydra",
		Issuer:       h.issuer,
		ClientID:     clientID,
		ClientSecret: clientSecret,
		NginxPort:    nginxPort,
		Proxy:        proxy,
		Update: func(cfg *config.Config) {
			// offline_access is what makes Hydra issue a refresh token
			// ("offline" works too); profile and email are only names
			// here: Hydra puts into the ID token whatever the consent
			// app's session says.
			cfg.OIDC.Scopes = []string{"openid", "offline_access", "email", "profile"}
		},
		AccessTokenTTL: hydraAccessTTL,
		Login: func(t *testing.T, ctx context.Context) {
			t.Helper()
			h.login(t, ctx, nginxURL)
		},
		ConfirmLogout: func(t *testing.T, ctx context.Context) {
			t.Helper()
			h.confirmLogout(t, ctx, "confirm the sign-out at hydra")
		},
		BackchannelLogout: func(t *testing.T, ctx context.Context) {
			t.Helper()
			h.signOutAtHydra(t, ctx)
		},
	}
}

// login completes Hydra's pages: the login form when Hydra does not
// remember the user (the consent page accepts at once), nothing when it
// does; it returns once the browser is back on nginx.
func (h *hydra) login(t *testing.T, ctx context.Context, nginxURL string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for submitted := false; ; {
		loc := get(t, ctx, "location", chromedp.Location())
		switch {
		case strings.HasPrefix(loc, nginxURL+"/") && !strings.HasPrefix(loc, nginxURL+"/oauth2/"):
			return
		case !submitted && strings.HasPrefix(loc, h.issuer+"/ui/login"):
			run(t, ctx, "hydra login page",
				chromedp.WaitVisible(chromedp.CSS("#username")),
				chromedp.SendKeys(chromedp.CSS("#username"), hydraUsername),
				chromedp.SendKeys(chromedp.CSS("#password"), hydraPassword),
				chromedp.Click(chromedp.CSS("#login-submit")),
			)
			submitted = true
		case strings.HasPrefix(loc, h.issuer+"/ui/error"):
			t.Fatalf("hydra's error page: %s", loc)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sign-in at hydra did not return to nginx (browser at %s)", loc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// confirmLogout clicks the logout app's confirmation and returns once the
// browser has left it (for wherever the post-logout redirect leads).
func (h *hydra) confirmLogout(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	run(t, ctx, what,
		chromedp.WaitVisible(chromedp.CSS("#logout-confirm")),
		chromedp.Click(chromedp.CSS("#logout-confirm")))
	deadline := time.Now().Add(10 * time.Second)
	for {
		loc := get(t, ctx, "location", chromedp.Location())
		if !strings.HasPrefix(loc, h.issuer+"/ui/logout") && !strings.HasPrefix(loc, h.issuer+"/oauth2/sessions/logout") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the browser stayed at %s", what, loc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signOutAtHydra signs the browser out at Hydra itself (an OP-initiated
// logout: /oauth2/sessions/logout without id_token_hint, confirmed in the
// logout app), which makes Hydra POST a logout token to every client of
// the session that has a backchannel_logout_uri. Hydra sends it in the
// background after the redirect; this waits until its log says it was
// delivered.
func (h *hydra) signOutAtHydra(t *testing.T, ctx context.Context) {
	t.Helper()
	const sent = "msg=Back-Channel Logout Request"
	const failed = "Unable to execute OpenID Connect Back-Channel Logout Request"
	before := strings.Count(h.log.String(), sent)
	run(t, ctx, "sign out at hydra", chromedp.Navigate(h.issuer+"/oauth2/sessions/logout"))
	h.confirmLogout(t, ctx, "confirm the sign-out at hydra itself")
	run(t, ctx, "hydra's signed-out page", chromedp.WaitVisible(chromedp.CSS("#signed-out")))
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := h.log.String()
		if strings.Count(log, sent) > before {
			return
		}
		if strings.Contains(log, failed) {
			t.Fatalf("hydra could not deliver the back-channel logout: %s", lineWith(log, failed))
		}
		if time.Now().After(deadline) {
			t.Fatal("hydra sent no back-channel logout within 10s of the sign-out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The login app (Hydra's "login and consent provider"): Hydra sends the
// browser here with a challenge, the app accepts it through the admin API
// and sends the browser to the redirect_to Hydra answers.

var hydraLoginForm = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><title>Sign in to Hydra</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1>Sign in</h1>
<form method="post" action="/ui/login">
<input type="hidden" name="login_challenge" value="{{.Challenge}}">
<p><label>Username <input id="username" name="username" autocomplete="username"></label></p>
<p><label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label></p>
{{if .Error}}<p id="login-error" style="color: #b00">{{.Error}}</p>{{end}}
<p><button id="login-submit" type="submit">Sign in</button></p>
</form></body></html>`))

// loginPage: GET shows the form, unless Hydra remembers the user (skip),
// which it accepts at once; POST checks the password and accepts, remembered
// for an hour so that the next sign-in is silent.
func (h *hydra) loginPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.FormValue("login_challenge")
	if challenge == "" {
		http.Error(w, "no login_challenge", http.StatusBadRequest)
		return
	}
	subject := hydraSubject
	if r.Method == http.MethodGet {
		var req struct {
			Skip    bool   `json:"skip"`
			Subject string `json:"subject"`
		}
		if err := h.adminDo(r.Context(), http.MethodGet, "/admin/oauth2/auth/requests/login?login_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if !req.Skip {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = hydraLoginForm.Execute(w, map[string]string{"Challenge": challenge})
			return
		}
		subject = req.Subject
	} else if r.FormValue("username") != hydraUsername || r.FormValue("password") != hydraPassword {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_ = hydraLoginForm.Execute(w, map[string]string{"Challenge": challenge, "Error": "Wrong username or password."})
		return
	}
	h.acceptAndRedirect(w, r, "/admin/oauth2/auth/requests/login/accept?login_challenge="+url.QueryEscape(challenge), map[string]any{
		"subject":      subject,
		"remember":     true,
		"remember_for": 3600,
	})
}

// consentPage grants what was asked, at once, and gives Hydra the claims
// of the ID token (Hydra's userinfo answers the same claims).
func (h *hydra) consentPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.FormValue("consent_challenge")
	var req struct {
		RequestedScope    []string `json:"requested_scope"`
		RequestedAudience []string `json:"requested_access_token_audience"`
	}
	if err := h.adminDo(r.Context(), http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	h.acceptAndRedirect(w, r, "/admin/oauth2/auth/requests/consent/accept?consent_challenge="+url.QueryEscape(challenge), map[string]any{
		"grant_scope":                 req.RequestedScope,
		"grant_access_token_audience": req.RequestedAudience,
		"remember":                    true,
		"remember_for":                3600,
		"session": map[string]any{
			"id_token": map[string]any{
				"email":              hydraSubject,
				"email_verified":     true,
				"preferred_username": hydraUsername,
				"name":               "Alice Liddell",
				"groups":             []string{"readers", "wonderland"},
			},
		},
	})
}

var hydraLogoutForm = template.Must(template.New("logout").Parse(`<!doctype html>
<html><head><title>Sign out of Hydra</title></head>
<body style="font-family: system-ui, sans-serif; margin: 3em">
<h1>Sign out{{if .Client}} of {{.Client}}{{end}}?</h1>
<form method="post" action="/ui/logout">
<input type="hidden" name="logout_challenge" value="{{.Challenge}}">
<p><button id="logout-confirm" type="submit">Sign out</button></p>
</form></body></html>`))

// logoutPage asks to confirm a logout, RP-initiated (extauth's sign-out,
// with id_token_hint) and OP-initiated alike; the form's POST accepts it.
// Confirming ends Hydra's login session and sends the back-channel logouts;
// it revokes no token (v2.3.0: a refresh token still refreshes after it),
// so the refresh token that no longer refreshes after extauth's sign-out
// was revoked by extauth.
func (h *hydra) logoutPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.FormValue("logout_challenge")
	if challenge == "" {
		http.Error(w, "no logout_challenge", http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodPost {
		h.acceptAndRedirect(w, r, "/admin/oauth2/auth/requests/logout/accept?logout_challenge="+url.QueryEscape(challenge), nil)
		return
	}
	var req struct {
		Client *struct {
			ID string `json:"client_id"`
		} `json:"client"`
	}
	if err := h.adminDo(r.Context(), http.MethodGet, "/admin/oauth2/auth/requests/logout?logout_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	client := ""
	if req.Client != nil {
		client = req.Client.ID
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = hydraLogoutForm.Execute(w, map[string]string{"Challenge": challenge, "Client": client})
}

func (h *hydra) acceptAndRedirect(w http.ResponseWriter, r *http.Request, path string, body any) {
	var res struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := h.adminDo(r.Context(), http.MethodPut, path, body, &res); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	http.Redirect(w, r, res.RedirectTo, http.StatusFound)
}

// adminDo calls Hydra's admin API with a JSON body and decodes its JSON
// answer into out (when not nil).
func (h *hydra) adminDo(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.admin+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("hydra admin %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (h *hydra) adminJSON(t *testing.T, method, path string, body, out any) {
	t.Helper()
	if err := h.adminDo(t.Context(), method, path, body, out); err != nil {
		t.Fatal(err)
	}
}

// hydraLogTail is the last n bytes, from a line start, of Hydra's log without its
// noise: the line it writes as each request starts (another follows when it
// ends) and its migrations.
func hydraLogTail(log *testenv.LockedBuffer, n int) string {
	var b strings.Builder
	for line := range strings.Lines(log.String()) {
		if !strings.Contains(line, "msg=started handling request") && !strings.Contains(line, "igration") {
			b.WriteString(line)
		}
	}
	s := b.String()
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// lineWith is the first line of s that contains sub.
func lineWith(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}
