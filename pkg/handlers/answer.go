package handlers

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauth/extauth/pkg/metrics"
)

// outcome is what an endpoint decided; answer turns it into the status,
// the metric's result, the log line and the body, in one place, for every
// endpoint. Endpoints never write a status themselves.
type outcome struct {
	status int
	// result is the endpoint metric's label and the log line's result.
	result string
	// reason is why, for the log line only: never a token, code or secret.
	reason string
	// message is what a person reads on an error page, or an OAuth
	// error_description.
	message string
	// code is the OAuth error code of a JSON error (invalid_request).
	code string
	// location is a redirect's target.
	location string
	// retry: the error page offers to sign in again.
	retry bool
	// render writes a body of the endpoint's own (a JSON answer, the
	// sign-out confirmation) in place of the route's.
	render func(c *gin.Context)
}

// redirectTo is a 302 (or status) to location.
func redirectTo(status int, location, result string) *outcome {
	return &outcome{status: status, location: location, result: result}
}

// route is how a kind of endpoint answers and counts its outcomes.
type route struct {
	// write answers an outcome without a render of its own.
	write func(c *gin.Context, o *outcome)
	// count records the request's result (for its app) in the endpoint's
	// metric; nil: none beyond the HTTP metrics every request gets.
	count func(app, result string, seconds float64)
	// panicResult is counted when the endpoint panics; "": nothing.
	panicResult string
}

// checkRoute answers a gateway's check: a status, no body, and only the
// headers the gateway should see. Only a 200 carries identity or token
// headers: every other answer (401, 403, a sign-in 302, Caddy's 307) goes
// to the browser as it is, so it keeps Location, Set-Cookie and
// Cache-Control and nothing else.
func (h *handler) checkRoute(endpoint string) route {
	return route{
		write: writeCheck,
		count: func(app, result string, seconds float64) {
			h.Metrics.ObserveAuth(app, endpoint, result, seconds)
		},
		panicResult: metrics.AuthError,
	}
}

// noStore is shared by every answer of the check; net/http only reads it.
var noStore = []string{"no-store"}

func writeCheck(c *gin.Context, o *outcome) {
	hdr := c.Writer.Header()
	if o.status != http.StatusOK {
		for name := range hdr {
			if name != "Location" && name != "Set-Cookie" {
				delete(hdr, name)
			}
		}
	}
	if o.location != "" {
		hdr.Set("Location", o.location)
	}
	hdr["Cache-Control"] = noStore
	c.Status(o.status)
	c.Writer.WriteHeaderNow()
}

// pageRoute answers a browser: a redirect, or a short HTML page that
// names the problem.
func (h *handler) pageRoute(count func(app, result string, seconds float64)) route {
	return route{write: h.writePageOutcome, count: count}
}

func (h *handler) writePageOutcome(c *gin.Context, o *outcome) {
	if o.location != "" {
		c.Header("Cache-Control", "no-store")
		c.Redirect(o.status, o.location)
		return
	}
	retry := ""
	if o.retry {
		retry = h.prefix + "/start"
	}
	writePage(c, o.status, errorTemplate, struct{ Title, Message, Retry string }{http.StatusText(o.status), o.message, retry})
}

// jsonRoute answers a program: an empty 200, or an OAuth-style JSON error.
func jsonRoute(count func(app, result string, seconds float64)) route {
	return route{write: writeJSON, count: count}
}

func writeJSON(c *gin.Context, o *outcome) {
	c.Header("Cache-Control", "no-store")
	if o.status == http.StatusOK {
		c.Status(http.StatusOK)
		c.Writer.WriteHeaderNow()
		return
	}
	body := gin.H{"error": o.code}
	if o.message != "" {
		body["error_description"] = o.message
	}
	c.JSON(o.status, body)
}

// counter adapts a counter by app and result to route.count.
func counter(vec *prometheus.CounterVec) func(app, result string, seconds float64) {
	return func(app, result string, _ float64) { vec.WithLabelValues(app, result).Inc() }
}

// endpoint serves one route; rl collects what the log line says beyond
// the outcome (the user, a note on a refresh).
type endpoint func(c *gin.Context, rl *reqLog) *outcome

// reqLog collects what the request's log line says beyond the basics.
type reqLog struct {
	result string
	app    string // the app's name; "" for the top-level client
	sub    string
	reason string
	// newCookie: the check's answer carries a new session cookie, for a
	// session that needs no other refresh at once.
	newCookie bool
}

// serve gives an endpoint its answer, metric, log line and panic recovery.
// (A wrapper rather than gin middleware: it hands the log fields over
// without gin's per-request map, which the check would otherwise allocate
// on every request.)
func (h *handler) serve(rt route, ep endpoint) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		var rl reqLog
		defer h.logRequest(c, &rl, start)
		defer h.recoverPanic(c, &rl, rt, start)
		if o := ep(c, &rl); o != nil {
			h.answer(c, &rl, rt, o)
		}
		if rt.count != nil && rl.result != "" {
			// Values, not &rl: a pointer handed to a func value escapes,
			// which would cost every check an allocation.
			rt.count(rl.app, rl.result, time.Since(start).Seconds())
		}
	}
}

// answer writes an outcome and notes it for the log line.
func (h *handler) answer(c *gin.Context, rl *reqLog, rt route, o *outcome) {
	if o.result != "" {
		rl.result = o.result
	}
	if o.reason != "" {
		rl.reason = o.reason
	}
	if o.render != nil {
		o.render(c)
		return
	}
	rt.write(c, o)
}

// logRequest writes one line per request: request_id (nginx's X-Request-ID
// when sane, else a new one), route pattern, method, status, duration, and
// what the endpoint decided. Never a token, code, cookie or secret.
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
	if rl.app != "" {
		attrs = append(attrs, slog.String("app", rl.app))
	}
	if rl.sub != "" {
		attrs = append(attrs, slog.String("sub", rl.sub))
	}
	if rl.reason != "" {
		attrs = append(attrs, slog.String("reason", rl.reason))
	}
	h.Log.LogAttrs(context.Background(), level, "request", attrs...)
}

// recoverPanic turns a panic into a logged and counted 500 instead of a
// dropped connection; on the check path a 500 still fails closed.
func (h *handler) recoverPanic(c *gin.Context, rl *reqLog, rt route, start time.Time) {
	if v := recover(); v != nil {
		if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
			panic(v)
		}
		h.Log.Error("panic serving request", "route", c.FullPath(), "panic", fmt.Sprint(v))
		rl.reason = "panic"
		if rt.count != nil && rt.panicResult != "" {
			rl.result = rt.panicResult
			rt.count(rl.app, rl.result, time.Since(start).Seconds())
		}
		c.AbortWithStatus(http.StatusInternalServerError)
	}
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

// writePage answers with one of extauth's own pages: never cached, never
// sniffed, never framed (a hidden frame could click its buttons), and
// allowed nothing but its inline style and forms posting back here. It
// never echoes request input.
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
