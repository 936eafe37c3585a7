// Package handlers serves extauth's HTTP endpoints. router.go is the one
// place routes are mounted; each endpoint has a file of its own.
package handlers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/config"
	"github.com/extauth/extauth/pkg/logout"
	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/policy"
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
	Coordinator RefreshCoordinator
	// Redis, when used, is reported by /readyz.
	Redis Pinger
}

// RefreshCoordinator shares refreshes among replicas: Do returns the
// published result of redeeming refreshToken, or runs redeem (under a
// lock) and publishes what it returns; shared says the result came from
// another replica. refresh.ErrUnavailable: redeem did not run, and the
// caller may refresh on its own.
type RefreshCoordinator interface {
	Do(ctx context.Context, refreshToken string, redeem func(context.Context) ([]byte, error)) (result []byte, shared bool, err error)
}

// Pinger reports whether a dependency answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

type handler struct {
	Deps
	refreshes *refresh.Group[*refreshed]
	redirects *redirect.Validator
	rules     policy.Rules
	prefix    string
	// trusted are server.trustedProxies, parsed.
	trusted []netip.Prefix
}

func init() { gin.SetMode(gin.ReleaseMode) }

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
	h := &handler{
		Deps:      d,
		redirects: v,
		trusted:   trusted,
		refreshes: newRefreshGroup(d.Now, d.Config.Session.RefreshReuseWindow.Duration, d.RefreshTimeout),
		prefix:    d.Config.Server.PathPrefix,
		rules: policy.Rules{
			EmailDomains: d.Config.Authorization.EmailDomains,
			Emails:       d.Config.Authorization.Emails,
			Groups:       d.Config.Authorization.Groups,
		},
	}

	r := gin.New()
	r.HandleMethodNotAllowed = true
	// A check must never answer with a redirect of gin's own making.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.NoRoute(h.wrap(func(c *gin.Context, _ *reqLog) { h.errorPage(c, http.StatusNotFound, "Not found.") }))
	r.NoMethod(h.wrap(func(c *gin.Context, _ *reqLog) { h.errorPage(c, http.StatusMethodNotAllowed, "Method not allowed.") }))

	g := r.Group(h.prefix)
	g.GET("/auth", h.wrap(h.check))
	g.HEAD("/auth", h.wrap(h.check))
	g.Any("/forward-auth", h.wrap(h.forwardAuth))
	g.Any("/ext-authz/*path", h.wrap(h.extAuthz))
	g.GET("/start", h.wrap(h.start))
	g.GET("/callback", h.wrap(h.callback))
	g.GET("/userinfo", h.wrap(h.userinfo))
	g.GET("/sign_out", h.wrap(h.signOut))
	g.POST("/sign_out", h.wrap(h.signOut))
	g.POST("/backchannel_logout", h.wrap(h.backchannelLogout))

	r.GET("/healthz", h.wrap(h.healthz))
	r.GET("/readyz", h.wrap(h.readyz))
	return r, nil
}

// reqLog collects what the request's log line says beyond the basics.
type reqLog struct {
	result string
	sub    string
	reason string
	// newCookie: the answer carries a new session cookie, for a session
	// that needs no other refresh at once.
	newCookie bool
}

// handlerFunc is an endpoint; it notes what it decided in the request's log line.
type handlerFunc func(c *gin.Context, rl *reqLog)

// wrap gives an endpoint its log line and panic recovery. (A wrapper rather
// than gin middleware: it hands the log fields over without gin's per-request
// map, which the check would otherwise allocate on every request.)
func (h *handler) wrap(next handlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		var rl reqLog
		defer h.logRequest(c, &rl, start)
		defer h.recoverPanic(c, &rl)
		next(c, &rl)
	}
}

// logRequest writes one line per request: request_id (nginx's X-Request-ID
// when sane, else a new one), route pattern, method, status, duration, and
// what the handler decided. Never a token, code, cookie or secret.
func (h *handler) logRequest(c *gin.Context, rl *reqLog, start time.Time) {
	status := c.Writer.Status()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	h.Metrics.ObserveHTTP(route, c.Request.Method, status, time.Since(start).Seconds())
	level := slog.LevelInfo
	// A 5xx is ours to look at, except readiness saying "not yet".
	if status >= 500 && route != "/readyz" {
		level = slog.LevelError
	}
	if !h.Log.Enabled(c.Request.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", requestID(c.Request, h.Rand)),
		slog.String("route", route),
		slog.String("method", metrics.Method(c.Request.Method)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
	}
	if rl.result != "" {
		attrs = append(attrs, slog.String("result", rl.result))
	}
	if rl.sub != "" {
		attrs = append(attrs, slog.String("sub", rl.sub))
	}
	if rl.reason != "" {
		attrs = append(attrs, slog.String("reason", rl.reason))
	}
	h.Log.LogAttrs(context.Background(), level, "request", attrs...)
}

// recoverPanic turns a panic into a logged 500 instead of a dropped
// connection; on the check path a 500 still fails closed.
func (h *handler) recoverPanic(c *gin.Context, rl *reqLog) {
	if v := recover(); v != nil {
		if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
			panic(v)
		}
		h.Log.Error("panic serving request", "route", c.FullPath(), "panic", fmt.Sprint(v))
		rl.reason = "panic"
		c.AbortWithStatus(http.StatusInternalServerError)
	}
}

// requestID is nginx's X-Request-ID when it looks like one, else a new ID:
// the header is client-controlled on some paths and ends up in logs.
func requestID(r *http.Request, rnd io.Reader) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 128 && isToken(id) {
		return id
	}
	var b [8]byte
	_, _ = io.ReadFull(rnd, b[:])
	return hex.EncodeToString(b[:])
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// trustedPeer reports whether the direct peer is in server.trustedProxies,
// the only peers whose X-Forwarded-* headers are believed.
func (h *handler) trustedPeer(r *http.Request) bool {
	prefixes := h.trusted
	if len(prefixes) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// requestHost is the host the browser used: X-Forwarded-Host from a trusted
// proxy, else Host.
func (h *handler) requestHost(r *http.Request) string {
	if h.trustedPeer(r) {
		if fh := r.Header.Get("X-Forwarded-Host"); fh != "" {
			return fh
		}
	}
	return r.Host
}

// requestScheme is http or https as the browser used it.
func (h *handler) requestScheme(r *http.Request) string {
	if h.trustedPeer(r) {
		switch r.Header.Get("X-Forwarded-Proto") {
		case "https":
			return "https"
		case "http":
			return "http"
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// redirectURL is oidc.redirectURL, or the callback on the host the browser used.
func (h *handler) redirectURL(r *http.Request) string {
	if u := h.Config.OIDC.RedirectURL; u != "" {
		return u
	}
	return h.requestScheme(r) + "://" + h.requestHost(r) + h.prefix + "/callback"
}

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em">
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{if .Retry}}<p><a href="{{.Retry}}">Sign in again</a></p>{{end}}
</body></html>
`))

// errorPage answers a browser with a short HTML page that names the
// problem; it never echoes request input.
func (h *handler) errorPage(c *gin.Context, status int, message string) {
	h.errorPageRetry(c, status, message, "")
}

func (h *handler) errorPageRetry(c *gin.Context, status int, message, retry string) {
	writePage(c, status, errorTemplate, struct{ Title, Message, Retry string }{http.StatusText(status), message, retry})
	c.Abort()
}

// writePage answers with one of extauth's own pages: never cached, never
// sniffed, never framed (a hidden frame could click its buttons), and
// allowed nothing but its inline style and forms posting back here.
func writePage(c *gin.Context, status int, page *template.Template, data any) {
	hdr := c.Writer.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	c.Status(status)
	_ = page.Execute(c.Writer, data)
}
