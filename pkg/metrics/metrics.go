// Package metrics defines every Prometheus metric extauth exports. Names and
// labels are part of the product contract (SPEC.md): the Grafana dashboard and
// the alerts read them. Labels stay low-cardinality: never a user, host or URL.
package metrics

import (
	"runtime"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values of the contract.
const (
	// The check's endpoint, one per gateway contract.
	CheckNginx       = "auth"         // /oauth2/auth: nginx auth_request
	CheckForwardAuth = "forward_auth" // /oauth2/forward-auth: Traefik, Caddy
	CheckExtAuthz    = "ext_authz"    // /oauth2/ext-authz/*: Envoy

	AuthAuthenticated   = "authenticated"
	AuthUnauthenticated = "unauthenticated"
	AuthForbidden       = "forbidden"
	AuthError           = "error"
	// AuthSkipped: passed without a session (an app's skip rule or an
	// allowed CORS preflight); no identity headers.
	AuthSkipped = "skipped"

	SigninRedirected      = "redirected"
	SigninInvalidRedirect = "invalid_redirect"

	CallbackSuccess        = "success"
	CallbackInvalidState   = "invalid_state"
	CallbackIdPError       = "idp_error"
	CallbackExchangeFailed = "exchange_failed"
	CallbackInvalidIDToken = "invalid_id_token"
	CallbackForbidden      = "forbidden"

	RefreshSuccess        = "success"
	RefreshShared         = "shared"
	RefreshInvalidGrant   = "invalid_grant"
	RefreshIdPUnavailable = "idp_unavailable"
	// RefreshStoreError: the provider refreshed, but the new session could
	// not be stored (too large for the cookies, Redis down); the check
	// passes on the new tokens, which stay in the reuse window.
	RefreshStoreError = "store_error"

	RevocationSuccess     = "success"
	RevocationFailure     = "failure"
	RevocationUnsupported = "unsupported"

	BackchannelAccepted = "accepted"
	BackchannelRejected = "rejected"

	EndpointDiscovery  = "discovery"
	EndpointJWKS       = "jwks"
	EndpointToken      = "token"
	EndpointRefresh    = "refresh"
	EndpointRevocation = "revocation"
	EndpointUserinfo   = "userinfo"
	EndpointGraph      = "graph" // Microsoft Graph, for Entra ID's group overage

	OutcomeOK    = "ok"
	OutcomeError = "error"

	// A JWKS refetch for a token with an unknown kid.
	// extauth_signin_warnings_total warnings
	WarningNoRefreshToken = "no_refresh_token" // offline_access asked, no refresh token given

	// extauth_groups_overage_total results (Entra ID's groups from Microsoft Graph)
	OverageFetched = "fetched"
	OverageError   = "error"

	KeyRefetchFetched   = "fetched"
	KeyRefetchThrottled = "throttled" // refused: another fetch was too recent
	KeyRefetchError     = "error"

	// Operations on the shared store (Redis).
	StoreSessionGet    = "session_get"
	StoreSessionSet    = "session_set"
	StoreSessionDelete = "session_delete"
	StoreRefreshLock   = "refresh_lock"   // take, renew or release a refresh lock
	StoreRefreshResult = "refresh_result" // publish or read a refresh's result
	StoreLogoutWrite   = "logout_write"   // record a logout, check a logout token's jti
	StoreLogoutSync    = "logout_sync"    // load the logout records at (re)connect
	StorePing          = "ping"

	StoreOK       = "ok"
	StoreNotFound = "not_found"
	StoreError    = "error"
)

// StoreOps are the op label values of the store metrics.
var StoreOps = []string{StoreSessionGet, StoreSessionSet, StoreSessionDelete, StoreRefreshLock,
	StoreRefreshResult, StoreLogoutWrite, StoreLogoutSync, StorePing}

// Metrics holds the collectors; New registers them on the given registry.
type Metrics struct {
	AuthRequests        *prometheus.CounterVec   // endpoint, result
	AuthRequestDuration *prometheus.HistogramVec // endpoint, result
	Signins             *prometheus.CounterVec   // result
	Callbacks           *prometheus.CounterVec   // result
	TokenRefreshes      *prometheus.CounterVec   // result
	TokenRevocations    *prometheus.CounterVec   // token_type, result
	SignOuts            prometheus.Counter
	BackchannelLogouts  *prometheus.CounterVec   // result
	IdPRequestDuration  *prometheus.HistogramVec // endpoint, outcome
	SessionCookieBytes  prometheus.Histogram
	HTTPRequests        *prometheus.CounterVec   // route, method, code
	HTTPRequestDuration *prometheus.HistogramVec // route
	BuildInfo           *prometheus.GaugeVec     // version, goversion
	StoreOperations     *prometheus.CounterVec   // op, result
	StoreLatency        *prometheus.HistogramVec // op
	RefreshLockWait     prometheus.Histogram
	KeyRefetches        *prometheus.CounterVec     // result
	SigninWarnings      *prometheus.CounterVec     // warning
	GroupsOverage       *prometheus.CounterVec     // result
	authObservers       map[[3]string]authObserver // app, endpoint, result

	httpMu        sync.RWMutex
	httpCounters  map[httpKey]prometheus.Counter
	httpDurations map[string]prometheus.Observer
}

type httpKey struct {
	route, method string
	code          int
}

type authObserver struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// checkBuckets span what a check takes: tens of microseconds from the
// cookie, up to seconds when a refresh waits for the provider.
var checkBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// idpBuckets span a provider call: milliseconds to the client timeout.
var idpBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// storeBuckets span a Redis command on a LAN: a hundred microseconds to
// the client's timeout.
var storeBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// New creates the metrics and registers them, with the Go and process
// collectors, on reg. Every label combination of the contract is created up
// front so that dashboards see zeros instead of gaps, for each of apps
// (config apps:) and for the top-level client, whose app label is empty
// (absent, as before apps existed). The app label takes no other value:
// it is bounded by the configuration.
func New(reg prometheus.Registerer, version string, apps ...string) *Metrics {
	m := &Metrics{
		AuthRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_auth_requests_total", Help: "Auth checks answered, by app, gateway endpoint and result.",
		}, []string{"app", "endpoint", "result"}),
		AuthRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauth_auth_request_duration_seconds", Help: "Time to answer an auth check, by app, gateway endpoint and result.", Buckets: checkBuckets,
		}, []string{"app", "endpoint", "result"}),
		Signins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_signins_total", Help: "Sign-ins started, by app and result.",
		}, []string{"app", "result"}),
		Callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_callbacks_total", Help: "Provider callbacks handled, by app and result.",
		}, []string{"app", "result"}),
		TokenRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_token_refreshes_total", Help: "Access-token refreshes during checks, by app and result.",
		}, []string{"app", "result"}),
		TokenRevocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_token_revocations_total", Help: "Token revocations at sign-out (RFC 7009), by token type and result.",
		}, []string{"token_type", "result"}),
		SignOuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "extauth_sign_outs_total", Help: "Sign-outs handled.",
		}),
		BackchannelLogouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_backchannel_logouts_total", Help: "Back-channel logout requests, by result.",
		}, []string{"result"}),
		IdPRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauth_idp_request_duration_seconds", Help: "Requests to the OpenID provider, by endpoint and outcome.", Buckets: idpBuckets,
		}, []string{"endpoint", "outcome"}),
		SessionCookieBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "extauth_session_cookie_bytes", Help: "Size of the encoded session written to cookies.",
			Buckets: []float64{512, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 6144, 8192, 12288, 16384},
		}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_http_requests_total", Help: "HTTP requests served, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauth_http_request_duration_seconds", Help: "HTTP request duration, by route pattern.", Buckets: checkBuckets,
		}, []string{"route"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extauth_build_info", Help: "Always 1; labels tell the build.",
		}, []string{"version", "goversion"}),
		StoreOperations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_store_operations_total", Help: "Operations on the shared store (Redis), by operation and result.",
		}, []string{"op", "result"}),
		StoreLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauth_store_latency_seconds", Help: "Latency of operations on the shared store (Redis), by operation.", Buckets: storeBuckets,
		}, []string{"op"}),
		RefreshLockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "extauth_refresh_lock_wait_seconds", Help: "Time a check waited for another replica's refresh of the same session.", Buckets: checkBuckets,
		}),
		KeyRefetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_jwks_refetches_total", Help: "JWKS refetches asked for by a token with an unknown kid, by result (throttled: within 30 s of the last fetch, not fetched).",
		}, []string{"result"}),
		SigninWarnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_signin_warnings_total", Help: "Sign-ins that completed with a problem, by warning (no_refresh_token: offline_access asked, none given; the session ends with the access token).",
		}, []string{"warning"}),
		GroupsOverage: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauth_groups_overage_total", Help: "ID tokens with Entra ID's group overage (groups named in _claim_names), by result of reading them from Microsoft Graph.",
		}, []string{"result"}),
	}
	reg.MustRegister(
		m.AuthRequests, m.AuthRequestDuration, m.Signins, m.Callbacks, m.TokenRefreshes,
		m.TokenRevocations, m.SignOuts, m.BackchannelLogouts, m.IdPRequestDuration,
		m.SessionCookieBytes, m.HTTPRequests, m.HTTPRequestDuration, m.BuildInfo,
		m.StoreOperations, m.StoreLatency, m.RefreshLockWait, m.KeyRefetches,
		m.SigninWarnings, m.GroupsOverage,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	m.httpCounters = map[httpKey]prometheus.Counter{}
	m.httpDurations = map[string]prometheus.Observer{}
	m.authObservers = make(map[[3]string]authObserver)
	for _, app := range append([]string{""}, apps...) {
		for _, e := range []string{CheckNginx, CheckForwardAuth, CheckExtAuthz} {
			for _, r := range []string{AuthAuthenticated, AuthUnauthenticated, AuthForbidden, AuthError, AuthSkipped} {
				m.authObservers[[3]string{app, e, r}] = authObserver{m.AuthRequests.WithLabelValues(app, e, r), m.AuthRequestDuration.WithLabelValues(app, e, r)}
			}
		}
		for _, r := range []string{SigninRedirected, SigninInvalidRedirect} {
			m.Signins.WithLabelValues(app, r)
		}
		for _, r := range []string{CallbackSuccess, CallbackInvalidState, CallbackIdPError, CallbackExchangeFailed, CallbackInvalidIDToken, CallbackForbidden} {
			m.Callbacks.WithLabelValues(app, r)
		}
		for _, r := range []string{RefreshSuccess, RefreshShared, RefreshInvalidGrant, RefreshIdPUnavailable, RefreshStoreError} {
			m.TokenRefreshes.WithLabelValues(app, r)
		}
	}
	for _, tt := range []string{"access_token", "refresh_token"} {
		for _, r := range []string{RevocationSuccess, RevocationFailure, RevocationUnsupported} {
			m.TokenRevocations.WithLabelValues(tt, r)
		}
	}
	for _, r := range []string{BackchannelAccepted, BackchannelRejected} {
		m.BackchannelLogouts.WithLabelValues(r)
	}
	for _, e := range []string{EndpointDiscovery, EndpointJWKS, EndpointToken, EndpointRefresh, EndpointRevocation, EndpointUserinfo, EndpointGraph} {
		for _, o := range []string{OutcomeOK, OutcomeError} {
			m.IdPRequestDuration.WithLabelValues(e, o)
		}
	}
	for _, r := range []string{KeyRefetchFetched, KeyRefetchThrottled, KeyRefetchError} {
		m.KeyRefetches.WithLabelValues(r)
	}
	m.SigninWarnings.WithLabelValues(WarningNoRefreshToken)
	for _, r := range []string{OverageFetched, OverageError} {
		m.GroupsOverage.WithLabelValues(r)
	}
	for _, op := range StoreOps {
		m.StoreLatency.WithLabelValues(op)
		for _, r := range []string{StoreOK, StoreNotFound, StoreError} {
			m.StoreOperations.WithLabelValues(op, r)
		}
	}
	return m
}

// Method is the method label of a request: a standard method (RFC 9110
// §9, and PATCH), else "other". Any token is a valid HTTP method, and the
// client picks it: as a label it would make a series per request.
func Method(method string) string {
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		return method
	}
	return "other"
}

// ObserveHTTP counts one request by route pattern (never the raw path),
// method (see Method) and status code, and observes its duration by route.
// route must come from the router's patterns and code from the server's
// answer, never from the client. The label children are cached: this runs
// for every request.
func (m *Metrics) ObserveHTTP(route, method string, code int, seconds float64) {
	key := httpKey{route, Method(method), code}
	m.httpMu.RLock()
	c, ok := m.httpCounters[key]
	d := m.httpDurations[route]
	m.httpMu.RUnlock()
	if !ok || d == nil {
		m.httpMu.Lock()
		if c, ok = m.httpCounters[key]; !ok {
			c = m.HTTPRequests.WithLabelValues(key.route, key.method, strconv.Itoa(code))
			m.httpCounters[key] = c
		}
		if d = m.httpDurations[route]; d == nil {
			d = m.HTTPRequestDuration.WithLabelValues(route)
			m.httpDurations[route] = d
		}
		m.httpMu.Unlock()
	}
	c.Inc()
	d.Observe(seconds)
}

// ObserveAuth counts one check and its duration without a label lookup:
// this runs on every request of every protected app.
func (m *Metrics) ObserveAuth(app, endpoint, result string, seconds float64) {
	o, ok := m.authObservers[[3]string{app, endpoint, result}]
	if !ok {
		o = authObserver{m.AuthRequests.WithLabelValues(app, endpoint, result), m.AuthRequestDuration.WithLabelValues(app, endpoint, result)}
	}
	o.count.Inc()
	o.duration.Observe(seconds)
}
