package handlers

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauth/extauth/internal/testenv"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/provider/providertest"
	"github.com/extauth/extauth/pkg/session"
)

// clock is the test's one clock, shared by extauth and the fake provider.
type clock = testenv.Clock

// testEnv is extauth's router wired to a fake provider.
type testEnv struct {
	t        testing.TB
	cfg      *config.Config
	idp      *providertest.Provider
	provider *provider.Provider
	router   *gin.Engine
	clock    *clock
	metrics  *metrics.Metrics
	reg      *prometheus.Registry
	sessions *session.Store
	logouts  *logout.Memory
	logs     *syncBuffer
}

// syncBuffer collects log output for assertions.
type syncBuffer = testenv.LockedBuffer

const testHost = "app.example.com"

// testRefreshTimeout keeps the hang tests short; the fake provider answers
// in microseconds otherwise.
const testRefreshTimeout = time.Second

// newTestEnv builds a router with a default config; update may change it
// before the parts are built. The provider is discovered unless
// update turns the fake provider off with a fault first.
func newTestEnv(t testing.TB, update func(*config.Config), idpOpts ...providertest.Option) *testEnv {
	t.Helper()
	clk := testenv.NewClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	idp := providertest.New(t, append([]providertest.Option{providertest.WithClock(clk.Now)}, idpOpts...)...)

	cfg := config.Default()
	cfg.OIDC.IssuerURL = idp.Issuer
	cfg.OIDC.ClientID = idp.ClientID
	cfg.OIDC.ClientSecret = idp.ClientSecret
	cfg.Session.Secrets = []string{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
	cfg.Authorization.RedirectDomains = []string{".example.com"}
	if update != nil {
		update(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}

	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	p, err := provider.New(provider.Config{
		IssuerURL: cfg.OIDC.IssuerURL, ClientID: cfg.OIDC.ClientID, ClientSecret: cfg.OIDC.ClientSecret,
		Scopes: cfg.OIDC.Scopes, PKCE: cfg.OIDC.PKCE, BearerAudiences: cfg.Authorization.BearerAudiences, ExtraAuthParams: cfg.OIDC.ExtraAuthParams,
		MicrosoftGraphURL: cfg.OIDC.MicrosoftGraphURL, EndSessionURL: cfg.OIDC.EndSessionURL, RevocationURL: cfg.OIDC.RevocationURL,
		RequestTimeout: 2 * testRefreshTimeout, // hanging-provider tests wait this long
	}, clk.Now, log, m)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := session.NewCodec(cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts := session.Options{Name: cfg.Session.CookieName, Path: "/", Secure: true, SameSite: http.SameSiteLaxMode,
		AccessTokenOptional: !cfg.Headers.AccessToken && !cfg.Headers.Authorization}
	sessions := session.NewStore(codec, opts, clk.Now)
	logouts := logout.NewMemory(clk.Now)
	router, err := NewRouter(Deps{
		Config: cfg, Provider: p, Sessions: sessions, Flows: session.NewFlowStore(codec, opts, clk.Now),
		Logouts: logouts, Metrics: m, Log: log, Now: clk.Now, Rand: rand.Reader,
		RefreshTimeout: testRefreshTimeout, Assertions: testAssertions(t, cfg, clk.Now),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, cfg: cfg, idp: idp, provider: p, router: router, clock: clk, metrics: m, reg: reg,
		sessions: sessions, logouts: logouts, logs: logs}
}

// discover loads the fake provider's discovery document.
func (e *testEnv) discover() *testEnv {
	e.t.Helper()
	if err := e.provider.Discover(e.t.Context()); err != nil {
		e.t.Fatalf("discover: %v", err)
	}
	return e
}

// do serves one request through the router.
func (e *testEnv) do(method, target string, cookies []*http.Cookie, header http.Header) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.doBody(method, target, "", header, cookies...)
}

// doBody serves one request with a body through the router.
func (e *testEnv) doBody(method, target, body string, header http.Header, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	req.Host = testHost
	req.RemoteAddr = "10.1.2.3:4567"
	for k, v := range header {
		req.Header[k] = v
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	e.router.ServeHTTP(rec, req)
	return rec
}

// jar keeps the cookies a browser would keep across responses.
type jar map[string]*http.Cookie

func (j jar) update(rec *httptest.ResponseRecorder) {
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(j, c.Name)
		} else {
			j[c.Name] = c
		}
	}
}

func (j jar) list() []*http.Cookie {
	var out []*http.Cookie
	for _, c := range j {
		out = append(out, c)
	}
	return out
}

// startSignIn GETs /oauth2/start and returns the provider URL it redirects to.
func (e *testEnv) startSignIn(j jar, rd string) *url.URL {
	e.t.Helper()
	target := "/oauth2/start"
	if rd != "" {
		target += "?rd=" + url.QueryEscape(rd)
	}
	rec := e.do(http.MethodGet, target, j.list(), nil)
	if rec.Code != http.StatusFound {
		e.t.Fatalf("start: status %d: %s", rec.Code, rec.Body.String())
	}
	j.update(rec)
	loc, err := url.Parse(rec.Header().Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	return loc
}

// callback sends the provider's redirect back to extauth.
func (e *testEnv) callback(j jar, cb *url.URL) *httptest.ResponseRecorder {
	e.t.Helper()
	rec := e.do(http.MethodGet, cb.RequestURI(), j.list(), nil)
	j.update(rec)
	return rec
}

// signIn walks the whole sign-in and returns the browser's cookies.
func (e *testEnv) signIn(rd string) jar {
	e.t.Helper()
	j := jar{}
	authURL := e.startSignIn(j, rd)
	cb := e.idp.Login(e.t, e.t.Context(), authURL.String())
	rec := e.callback(j, cb)
	if rec.Code != http.StatusFound {
		e.t.Fatalf("callback: status %d: %s", rec.Code, rec.Body.String())
	}
	return j
}

// check asks /oauth2/auth as nginx does.
func (e *testEnv) check(cookies []*http.Cookie, query string, header http.Header) *httptest.ResponseRecorder {
	e.t.Helper()
	h := http.Header{
		"X-Original-Url":    {"https://" + testHost + "/app/page?x=1"},
		"X-Original-Method": {"GET"},
	}
	for k, v := range header {
		h[k] = v
	}
	target := "/oauth2/auth"
	if query != "" {
		target += "?" + query
	}
	return e.do(http.MethodGet, target, cookies, h)
}

func readAll(r io.Reader) string {
	b, _ := io.ReadAll(r)
	return strings.TrimSpace(string(b))
}

type ginEngine = gin.Engine

func discardLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// withSessions rebuilds e's router around another session store (a
// TicketStore on a test backend), the rest unchanged.
func (e *testEnv) withSessions(build func(codec *session.Codec, opts session.Options, now func() time.Time) SessionStore) *testEnv {
	e.t.Helper()
	codec, err := session.NewCodec(e.cfg.Session.MustDecodeKeys(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	opts := session.Options{Name: e.cfg.Session.CookieName, Path: "/", Secure: true, SameSite: http.SameSiteLaxMode, AccessTokenOptional: true}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	router, err := NewRouter(Deps{
		Config: e.cfg, Provider: e.provider, Sessions: build(codec, opts, e.clock.Now), Flows: session.NewFlowStore(codec, opts, e.clock.Now),
		Logouts: e.logouts, Metrics: e.metrics, Log: log, Now: e.clock.Now, Rand: rand.Reader,
		RefreshTimeout: testRefreshTimeout,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.router = router
	e.sessions = nil
	return e
}

// memoryBackend is a session.Backend in a map whose Set fails on demand.
type memoryBackend struct {
	mu       sync.Mutex
	values   map[string][]byte
	failSets int // the next failSets Sets fail
	sets     int
}

func newMemoryBackend() *memoryBackend { return &memoryBackend{values: map[string][]byte{}} }

func (b *memoryBackend) Get(_ context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.values[key]
	if !ok {
		return nil, session.ErrNotFound
	}
	return bytes.Clone(v), nil // the store decrypts in place, as from Redis
}

func (b *memoryBackend) Set(_ context.Context, key string, value []byte, _ time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sets++
	if b.failSets > 0 {
		b.failSets--
		return errors.New("memoryBackend: SET refused")
	}
	b.values[key] = bytes.Clone(value)
	return nil
}

func (b *memoryBackend) Delete(_ context.Context, key string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.values, key)
	return nil
}

func (b *memoryBackend) failNext(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failSets = n
}

// TestMain runs gin in test mode: without it gin prints every route it
// mounts (the service sets release mode in server.New).
func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}
