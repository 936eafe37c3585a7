// Package handlers serves extauth's HTTP endpoints. router.go is the one
// place routes are mounted; each endpoint has a file of its own.
package handlers

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/assertion"
	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/redirect"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

// SessionStore keeps sessions: in cookies (session.Store) or server-side
// with a ticket in the cookie (session.TicketStore).
type SessionStore interface {
	Load(r *http.Request) (*session.State, error)
	// Save writes a new session (sign-in) and returns its cookie bytes.
	Save(w http.ResponseWriter, r *http.Request, st *session.State) (int, error)
	// Seal stores a refreshed session and returns what to write to the
	// browser; Shared does the latter for a state another check's refresh
	// stored already.
	Seal(ctx context.Context, st *session.State) (*session.Sealed, error)
	Shared(st *session.State) (*session.Sealed, error)
	WriteSealed(w http.ResponseWriter, r *http.Request, sealed *session.Sealed)
	// Clear ends the request's session: its cookies, and its server-side state.
	Clear(w http.ResponseWriter, r *http.Request)
	IDToken(r *http.Request, st *session.State) string
}

// Deps are what the handlers need; main builds them.
type Deps struct {
	Config   *config.Config
	Provider *provider.Provider
	Sessions SessionStore
	Flows    *session.FlowStore
	// Logouts records sessions ended by back-channel logout or sign-out.
	Logouts logout.Store
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Now is the clock of every expiry decision (default time.Now).
	Now func() time.Time
	// Rand supplies state, nonce and PKCE verifiers (default crypto/rand).
	Rand io.Reader
	// RefreshTimeout bounds a refresh during a check (default 5s): nginx
	// waits for the check meanwhile.
	RefreshTimeout time.Duration
	// Coordinator, when replicas share Redis, makes one refresh per refresh
	// token across all of them; nil: this process's single flight only.
	Coordinator refresh.Coordinator
	// Redis, when used, is reported by /readyz.
	Redis Pinger
	// Assertions, when assertion.enabled, signs the identity of every
	// allowed check (assertion.header) and serves the JWKS.
	Assertions *assertion.Signer
	// Apps are the parts of each app of config apps:; Provider, Sessions
	// and Flows above are then the top-level client's (a nil Provider:
	// there is none, and a request no app's host matches is refused).
	Apps []AppDeps
}

// Pinger reports whether a dependency answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

type handler struct {
	Deps
	// top is the top-level client's app, nil when only apps: serve;
	// apps are config apps:, found by name and host.
	top       *app
	apps      []*app
	byName    map[string]*app
	byHost    map[string]*app
	wildcards []wildcardHost
	redirects *redirect.Validator
	prefix    string
	// trusted are server.trustedProxies, parsed.
	trusted []netip.Prefix
	// assertionHeader is assertion.header in canonical form.
	assertionHeader string
}

// NewRouter mounts every endpoint of the main listener.
func NewRouter(d Deps) (*gin.Engine, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	if d.Logouts == nil {
		d.Logouts = logout.NewMemory(d.Now)
	}
	v, err := redirect.New(d.Config.Authorization.RedirectDomains)
	if err != nil {
		return nil, fmt.Errorf("authorization.redirectDomains: %w", err)
	}
	trusted, err := config.ParseTrustedProxies(d.Config.Server.TrustedProxies)
	if err != nil {
		return nil, err
	}
	h := &handler{Deps: d, redirects: v, trusted: trusted, prefix: d.Config.Server.PathPrefix,
		assertionHeader: http.CanonicalHeaderKey(d.Config.Assertion.Header)}
	if err := h.buildApps(d); err != nil {
		return nil, err
	}

	// Each kind of endpoint answers and counts in one way (answer.go).
	page := h.pageRoute(nil)
	m := h.Metrics
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// A check must never answer with a redirect of gin's own making.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.NoRoute(h.serve(page, func(*gin.Context, *reqLog) *outcome {
		return &outcome{status: http.StatusNotFound, message: "Not found."}
	}))
	r.NoMethod(h.serve(page, func(*gin.Context, *reqLog) *outcome {
		return &outcome{status: http.StatusMethodNotAllowed, message: "Method not allowed."}
	}))

	g := r.Group(h.prefix)
	check := h.serve(h.checkRoute(metrics.CheckNginx), h.check)
	g.GET("/auth", check)
	g.HEAD("/auth", check)
	g.Any("/forward-auth", h.serve(h.checkRoute(metrics.CheckForwardAuth), h.forwardAuth))
	g.Any("/ext-authz/*path", h.serve(h.checkRoute(metrics.CheckExtAuthz), h.extAuthz))
	g.GET("/start", h.serve(page, h.start))
	g.GET("/callback", h.serve(h.pageRoute(counter(m.Callbacks)), h.callback))
	g.GET("/userinfo", h.serve(jsonRoute(nil), h.userinfo))
	signOut := h.serve(page, h.signOut)
	g.GET("/sign_out", signOut)
	g.POST("/sign_out", signOut)
	g.POST("/backchannel_logout", h.serve(jsonRoute(func(_, result string, _ float64) {
		m.BackchannelLogouts.WithLabelValues(result).Inc()
	}), h.backchannelLogout))

	// The assertion's public keys, where JWT libraries look (the
	// discovery convention) and under the prefix, which an ingress
	// already routes to extauth.
	jwks := h.serve(jsonRoute(nil), h.jwks)
	r.GET("/.well-known/jwks.json", jwks)
	g.GET("/jwks", jwks)
	r.GET("/healthz", h.serve(page, h.healthz))
	r.GET("/readyz", h.serve(page, h.readyz))
	return r, nil
}
