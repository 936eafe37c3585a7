// Package server assembles extauth from its configuration: the provider,
// the session stores, the router, the metrics listener, and their lifecycle.
package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/handlers"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/redisstore"
	"github.com/extauth/extauth/pkg/session"
)

// Server is a configured extauth, ready to Run.
type Server struct {
	cfg       *config.Config
	log       *slog.Logger
	providers []*provider.Provider // one per app
	main      *http.Server
	metrics   *http.Server
	redis     *redisstore.Store   // nil without Redis
	logouts   *redisstore.Logouts // nil without Redis
}

// New builds every part from cfg, deriving what each package takes (the CA
// bundles read, the session keys decoded); it does no network I/O.
func New(cfg *config.Config, log *slog.Logger, version string) (*Server, error) {
	// gin's debug mode prints every route and warns on stdout; extauth
	// logs through slog. The mode is gin's one global, set here for the
	// process rather than by the handlers package when it is imported.
	gin.SetMode(gin.ReleaseMode)
	reg := prometheus.NewRegistry()
	apps := make([]string, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		apps = append(apps, a.Name)
	}
	m := metrics.New(reg, version, apps...)
	now := time.Now

	keys, err := cfg.Session.DecodeKeys()
	if err != nil {
		return nil, err
	}
	codec, err := session.NewCodec(keys, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("session.secrets: %w", err)
	}
	srv := &Server{cfg: cfg, log: log}
	deps := handlers.Deps{Config: cfg, Metrics: m, Log: log, Now: now, Rand: rand.Reader}
	if a := cfg.Assertion; a.Enabled {
		if deps.Assertions, err = newAssertions(a, now); err != nil {
			return nil, err
		}
	}
	var tickets session.Backend
	if cfg.Session.RedisUsed() {
		ropts, err := redisOptions(cfg.Session.Redis)
		if err != nil {
			return nil, err
		}
		if srv.redis, err = redisstore.New(ropts, m, log); err != nil {
			return nil, fmt.Errorf("session.redis: %w", err)
		}
		srv.logouts = redisstore.NewLogouts(srv.redis, now)
		deps.Logouts = srv.logouts
		deps.Coordinator = redisstore.NewCoordinator(srv.redis, cfg.Session.RefreshReuseWindow.Duration)
		deps.Redis = srv.redis
		if cfg.Session.Store == config.StoreRedis {
			tickets = redisstore.Sessions{Store: srv.redis}
		}
	}
	// One client per app: the top-level one (when the file names it) and
	// each of apps:, with its own provider and its own cookie, sealed for
	// the app alone (Codec.For).
	newClient := func(at string, oidc config.OIDC, ca []byte, bearerAudiences []string, opts session.Options, codec *session.Codec) (*provider.Provider, handlers.SessionStore, *session.FlowStore, error) {
		p, err := provider.New(provider.Config{
			IssuerURL:         oidc.IssuerURL,
			ClientID:          oidc.ClientID,
			ClientSecret:      oidc.ClientSecret,
			Scopes:            oidc.Scopes,
			PKCE:              oidc.PKCE,
			ExtraAuthParams:   oidc.ExtraAuthParams,
			RevocationURL:     oidc.RevocationURL,
			EndSessionURL:     oidc.EndSessionURL,
			CAPEM:             ca,
			BearerAudiences:   bearerAudiences,
			MicrosoftGraphURL: oidc.MicrosoftGraphURL,
		}, now, log, m)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", at, err)
		}
		srv.providers = append(srv.providers, p)
		var sessions handlers.SessionStore = session.NewStore(codec, opts, now)
		if tickets != nil {
			sessions = session.NewTicketStore(codec, opts, tickets, cfg.Session.Redis.KeyPrefix, rand.Reader, now)
		}
		return p, sessions, session.NewFlowStore(codec, opts, now), nil
	}
	if cfg.HasClient() {
		ca, err := config.ReadCA(cfg.OIDC.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc.caFile: %w", err)
		}
		if deps.Provider, deps.Sessions, deps.Flows, err = newClient("oidc", cfg.OIDC, ca, cfg.Authorization.BearerAudiences, CookieOptions(cfg), codec); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		opts := CookieOptions(&config.Config{Session: a.SessionConfig(cfg.Session), Headers: cfg.Headers})
		// The app's CA bundle serves its provider and its bearer issuers.
		ca, err := config.ReadCA(a.OIDC.CAFile)
		if err != nil {
			return nil, fmt.Errorf("apps[%d].oidc.caFile: %w", i, err)
		}
		p, sessions, flows, err := newClient(fmt.Sprintf("apps[%d].oidc", i), a.OIDC, ca, nil, opts, codec.For(a.Name))
		if err != nil {
			return nil, err
		}
		ad := handlers.AppDeps{Name: a.Name, Provider: p, Sessions: sessions, Flows: flows}
		if len(a.Authorization.Bearer) > 0 {
			// The issuers are outside extauth (CI systems, the cluster): each
			// is discovered on its first token, not at start-up, and being
			// down refuses only its own tokens.
			issuers := make([]provider.BearerIssuer, len(a.Authorization.Bearer))
			for k, b := range a.Authorization.Bearer {
				issuers[k] = provider.BearerIssuer{IssuerURL: b.IssuerURL, Audiences: b.Audiences, JWKSURL: b.JWKSURL}
			}
			if ad.Bearers, err = provider.NewBearers(issuers, provider.BearerOptions{CAPEM: ca, Now: now, Log: log, Metrics: m}); err != nil {
				return nil, fmt.Errorf("apps[%d].authorization.bearer: %w", i, err)
			}
		}
		deps.Apps = append(deps.Apps, ad)
	}
	router, err := handlers.NewRouter(deps)
	if err != nil {
		return nil, err
	}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if cfg.Server.Pprof {
		// Opt-in profiling for operators, on the metrics port only.
		metricsMux.HandleFunc("/debug/pprof/", pprof.Index)
		metricsMux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		metricsMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		metricsMux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		metricsMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv.main = newHTTPServer(cfg.Server.Address, router, log)
	srv.metrics = newHTTPServer(cfg.Server.MetricsAddress, metricsMux, log)
	return srv, nil
}

// newAssertions loads the assertion's keys and builds its signer.
func newAssertions(a config.Assertion, now func() time.Time) (*assertion.Signer, error) {
	current, err := assertion.LoadKeyFile(a.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("assertion.keyFile: %w", err)
	}
	var previous []*assertion.Key
	for i, f := range a.PreviousKeyFiles {
		k, err := assertion.LoadKeyFile(f)
		if err != nil {
			return nil, fmt.Errorf("assertion.previousKeyFiles[%d]: %w", i, err)
		}
		previous = append(previous, k)
	}
	s, err := assertion.NewSigner(current, previous, assertion.Options{Issuer: a.Issuer, Lifetime: a.Lifetime.Duration, Now: now})
	if err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	return s, nil
}

// redisOptions are redisstore's options from session.redis, with the CA
// bundle read.
func redisOptions(r config.Redis) (redisstore.Options, error) {
	o := redisstore.Options{
		Address:   r.Address,
		Username:  r.Username,
		Password:  r.Password,
		DB:        r.DB,
		KeyPrefix: r.KeyPrefix,
	}
	if r.Sentinel.MasterName != "" {
		o.MasterName = r.Sentinel.MasterName
		o.SentinelAddresses = r.Sentinel.Addresses
		o.SentinelPassword = r.Sentinel.Password
	}
	if r.TLS.Enabled {
		ca, err := config.ReadCA(r.TLS.CAFile)
		if err != nil {
			return redisstore.Options{}, fmt.Errorf("session.redis.tls.caFile: %w", err)
		}
		o.TLS = &redisstore.TLS{CAPEM: ca, ServerName: r.TLS.ServerName, InsecureSkipVerify: r.TLS.InsecureSkipVerify}
	}
	return o, nil
}

// CookieOptions are the session cookie attributes from session.*.
func CookieOptions(cfg *config.Config) session.Options {
	return session.Options{
		Name:     cfg.Session.CookieName,
		Domain:   cfg.Session.CookieDomain,
		Path:     cfg.Session.CookiePath,
		Secure:   cfg.Session.CookieSecure,
		SameSite: cfg.Session.SameSite(),
		// Only the headers need the access token in the session; revoking
		// the refresh token at sign-out covers it otherwise.
		AccessTokenOptional: !cfg.Headers.AccessToken && !cfg.Headers.Authorization,
	}
}

func newHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		// nginx forwards the browser's headers, cookies included: room for
		// split sessions, with a bound.
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// logoutSyncWait bounds how long start-up waits for the shared logout records.
const logoutSyncWait = 2 * time.Second

// Run listens on both addresses, discovers the provider in the background,
// and on ctx's end shuts down within server.shutdownTimeout, letting
// requests in flight finish.
func (s *Server) Run(ctx context.Context) error {
	mainLn, err := net.Listen("tcp", s.cfg.Server.Address)
	if err != nil {
		return fmt.Errorf("server.address: %w", err)
	}
	metricsLn, err := net.Listen("tcp", s.cfg.Server.MetricsAddress)
	if err != nil {
		mainLn.Close()
		return fmt.Errorf("server.metricsAddress: %w", err)
	}
	return s.Serve(ctx, mainLn, metricsLn)
}

// Serve is Run on listeners the caller opened.
func (s *Server) Serve(ctx context.Context, mainLn, metricsLn net.Listener) error {
	discoverCtx, stopDiscovery := context.WithCancel(ctx)
	defer stopDiscovery()
	for _, p := range s.providers {
		go p.Run(discoverCtx)
	}
	if s.logouts != nil {
		go s.logouts.Run(discoverCtx)
		// A replica started after a back-channel logout must know it before
		// it passes sessions: wait for the records, but never long for a
		// Redis that is down (connections wait in the listen backlog).
		select {
		case <-s.logouts.Synced():
		case <-time.After(logoutSyncWait):
			s.log.Warn("serving before the logout records were loaded from redis", "waited", logoutSyncWait.String())
		case <-ctx.Done():
		}
	}

	errc := make(chan error, 2)
	for _, srv := range []struct {
		s  *http.Server
		ln net.Listener
	}{{s.main, mainLn}, {s.metrics, metricsLn}} {
		go func() {
			if err := srv.s.Serve(srv.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	s.log.Info("extauth listening", "address", mainLn.Addr().String(), "metrics_address", metricsLn.Addr().String())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.log.Info("shutting down", "timeout", s.cfg.Server.ShutdownTimeout.Duration.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.Server.ShutdownTimeout.Duration)
	defer cancel()
	err := errors.Join(serveErr, s.main.Shutdown(shutdownCtx), s.metrics.Shutdown(shutdownCtx))
	if s.redis != nil {
		stopDiscovery()
		_ = s.redis.Close()
	}
	return err
}
