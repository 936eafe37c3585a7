package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// healthz is liveness: 200 while the process serves, whatever the provider does.
func (h *handler) healthz(*gin.Context, *reqLog) *outcome {
	return plainText(http.StatusOK, "ok\n", "")
}

// plainText is a probe's answer.
func plainText(status int, body, reason string) *outcome {
	return &outcome{status: status, reason: reason, render: func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		c.String(status, body)
	}}
}

// redisPingTimeout bounds /readyz's look at Redis.
const redisPingTimeout = 250 * time.Millisecond

// readyz is readiness: 503 until the provider's discovery document has been
// loaded (its keys are then fetched on first use), 200 after. Redis, when
// used, is reported in the body but does not fail readiness: every replica
// shares the one Redis, and taking them all out of the Service would turn
// each check into a 5xx at the ingress, where a check without Redis still
// answers from the cookie (or 401s, for Redis-kept sessions).
func (h *handler) readyz(c *gin.Context, _ *reqLog) *outcome {
	redis, reason := "", ""
	if h.Redis != nil {
		redis = "redis: ok\n"
		// Well within a probe's timeout (1 s by default): a Redis that
		// hangs must not make the probe itself fail.
		ctx, cancel := context.WithTimeout(c.Request.Context(), redisPingTimeout)
		defer cancel()
		if err := h.Redis.Ping(ctx); err != nil {
			redis = "redis: unavailable\n"
			reason = "redis unavailable: " + err.Error()
		}
	}
	switch {
	case !h.providersReady():
		return plainText(http.StatusServiceUnavailable, "provider: discovery pending\n"+redis, reason)
	case redis == "":
		return plainText(http.StatusOK, "ok\n", reason)
	}
	return plainText(http.StatusOK, "provider: ok\n"+redis, reason)
}

// providersReady: every app's provider has been discovered.
func (h *handler) providersReady() bool {
	for _, a := range h.allApps() {
		if !a.provider.Ready() {
			return false
		}
	}
	return true
}
