package handlers

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// originalRequest is the request a gateway asks about.
type originalRequest struct {
	method, scheme, host, uri string // uri: path and query, starting with "/"
}

func (o originalRequest) url() string { return o.scheme + "://" + o.host + o.uri }

// forwardAuth is /oauth2/forward-auth, Traefik's ForwardAuth and Caddy's
// forward_auth: the original request comes in X-Forwarded-Method, -Proto,
// -Host and -Uri, believed only from a peer in server.trustedProxies.
// Signed in: 200 with the identity headers. Not signed in: a browser
// navigation gets a 302 straight to the provider (these gateways pass any
// non-2xx answer to the client as is), anything else 401. Forbidden: 403.
func (h *handler) forwardAuth(c *gin.Context, rl *reqLog) *outcome {
	r := c.Request
	if !h.trustedPeer(r) {
		// Anyone who reaches us directly could claim any original request.
		h.Log.Warn("forward-auth request from an untrusted peer; answering 401", "peer", r.RemoteAddr)
		return unauthenticated("X-Forwarded-* from a peer not in server.trustedProxies")
	}
	orig, reason := forwardedRequest(r.Header)
	if reason != "" {
		return unauthenticated(reason)
	}
	a, refusal := h.appFor(r, orig.host, true)
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	return h.gatewayCheck(a, c.Writer, r, rl, orig, r.URL.RawQuery)
}

// extAuthz is /oauth2/ext-authz/*, Envoy's ext_authz HTTP service (and
// Envoy Gateway's SecurityPolicy extAuth): the check request keeps the
// client's method and Host, and its path is the original path (and query)
// after the prefix. Answers as forwardAuth's. The original query belongs to
// the app, so allowed_* rules do not apply here.
func (h *handler) extAuthz(c *gin.Context, rl *reqLog) *outcome {
	r := c.Request
	path := strings.TrimPrefix(r.URL.EscapedPath(), h.prefix+"/ext-authz")
	orig := originalRequest{method: r.Method, scheme: "https", host: r.Host, uri: path}
	if orig.uri == "" {
		orig.uri = "/"
	}
	if r.URL.RawQuery != "" {
		orig.uri += "?" + r.URL.RawQuery
	}
	// Envoy sends no scheme; the gateway terminates TLS unless a trusted
	// peer says otherwise.
	if h.trustedPeer(r) && r.Header.Get("X-Forwarded-Proto") == "http" {
		orig.scheme = "http"
	}
	if reason := orig.invalid(); reason != "" {
		return unauthenticated(reason)
	}
	// The query is the app's, not ours: the host alone picks the app.
	a, refusal := h.appFor(r, orig.host, false)
	if refusal != nil {
		return refusal
	}
	rl.app = a.name
	return h.gatewayCheck(a, c.Writer, r, rl, orig, "")
}

// gatewayCheck is the check core plus what gateways other than nginx need:
// the sign-in redirect for browsers.
func (h *handler) gatewayCheck(a *app, w http.ResponseWriter, r *http.Request, rl *reqLog, orig originalRequest, policyQuery string) *outcome {
	if o, ok := a.passesWithoutSession(orig.method, originalPath(orig.uri), r.Header); ok {
		return o
	}
	o := h.authorize(a, w, r, rl, orig.host, policyQuery)
	if o.status == http.StatusOK && rl.newCookie && refreshByRedirect(policyQuery) {
		// Caddy's forward_auth drops the headers of a 2xx answer on the way
		// to the browser: bring the new cookie there in a 307 back to the
		// same URL (same method and body), which the browser follows.
		if target, ok := h.redirects.Sanitize(orig.url(), orig.host); ok {
			return redirectTo(http.StatusTemporaryRedirect, target, o.result)
		}
	}
	if o.status != http.StatusUnauthorized || !browserNavigation(r, orig.method) || !a.provider.Ready() {
		return o
	}
	// The return URL passes the same rules as /oauth2/start's rd.
	returnURL, ok := h.redirects.Sanitize(orig.url(), orig.host)
	redirectURL := a.oidc.RedirectURL
	if redirectURL == "" {
		redirectURL = orig.scheme + "://" + orig.host + h.prefix + "/callback"
	}
	authURL, _, refusal := h.beginSignIn(a, w, a.flows.Load(r), returnURL, ok, redirectURL, false)
	if refusal != nil {
		// No sign-in this time: the 401 still fails closed.
		return &outcome{status: http.StatusUnauthorized, result: o.result, reason: o.reason + "; sign-in: " + refusal.reason}
	}
	return &outcome{status: http.StatusFound, location: authURL, result: o.result, reason: o.reason}
}

// refreshByRedirect reads refresh=redirect from the check URL's query.
// A bare ";" (allowed_claims' rule separator) would make ParseQuery fail
// and drop every parameter: it is read as any other character here.
func refreshByRedirect(query string) bool {
	q, err := url.ParseQuery(strings.ReplaceAll(query, ";", "%3B"))
	return err == nil && q.Get("refresh") == "redirect"
}

// browserNavigation is a GET or HEAD that asks for HTML: the only request a
// redirect to a login page helps. An API call gets its 401.
func browserNavigation(r *http.Request, method string) bool {
	return (method == http.MethodGet || method == http.MethodHead) && strings.Contains(r.Header.Get("Accept"), "text/html")
}

// forwardedRequest reads Traefik's and Caddy's headers. Only the canonical
// names are read: Go keeps X_Forwarded_Host or X.Forwarded.Host under names
// of their own, so the aliases of past Traefik advisories never count.
func forwardedRequest(h http.Header) (originalRequest, string) {
	o := originalRequest{
		method: h.Get("X-Forwarded-Method"),
		scheme: h.Get("X-Forwarded-Proto"),
		host:   h.Get("X-Forwarded-Host"),
		uri:    h.Get("X-Forwarded-Uri"),
	}
	if o.method == "" {
		o.method = http.MethodGet
	}
	if o.scheme == "" {
		o.scheme = "https"
	}
	if o.uri == "" {
		o.uri = "/"
	}
	for _, name := range []string{"X-Forwarded-Method", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Uri"} {
		if len(h.Values(name)) > 1 {
			return o, "repeated " + name
		}
	}
	return o, o.invalid()
}

// invalid names what is wrong with an original request, or "". Anything
// unusual fails closed: the return URL is built from these parts.
func (o originalRequest) invalid() string {
	switch {
	case !validMethod(o.method):
		return "invalid original method"
	case o.scheme != "http" && o.scheme != "https":
		return "invalid original scheme"
	case !validHost(o.host):
		return "invalid original host"
	case !validURI(o.uri):
		return "invalid original URI"
	}
	return ""
}

// validHost accepts host or host:port, a DNS name or an IP literal.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	name := host
	if h, port, err := net.SplitHostPort(host); err == nil {
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return false
		}
		name = h
	}
	if strings.HasPrefix(name, "[") || strings.Contains(name, ":") {
		return net.ParseIP(strings.Trim(name, "[]")) != nil
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// validURI accepts an origin-form request target: one leading "/", no
// fragment (browsers never send one), no backslash or control characters,
// and nothing an absolute or scheme-relative URL could hide in.
func validURI(uri string) bool {
	if len(uri) > 8192 || !strings.HasPrefix(uri, "/") || strings.HasPrefix(uri, "//") {
		return false
	}
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= 0x20 || c == 0x7f || c == '#' || c == '\\' {
			return false
		}
	}
	u, err := url.ParseRequestURI(uri)
	return err == nil && u.Host == "" && u.Scheme == ""
}
