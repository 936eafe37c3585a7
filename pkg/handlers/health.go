package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// healthz is liveness: 200 while the process serves, whatever the provider does.
func (h *handler) healthz(c *gin.Context, rl *reqLog) {
	c.Header("Cache-Control", "no-store")
	c.String(http.StatusOK, "ok\n")
}

// redisPingTimeout bounds /readyz's look at Redis.
const redisPingTimeout = 250 * time.Millisecond

// readyz is readiness: 503 until the provider's discovery document has been
// loaded (its keys are then fetched on first use), 200 after. Redis, when
// used, is reported in the body but does not fail readiness: every replica
// shares the one Redis, and taking them all out of the Service would turn
// each check into a 5xx at the ingress, where a check without Redis still
// answers from the cookie (or 401s, for Redis-kept sessions).
func (h *handler) readyz(c *gin.Context, rl *reqLog) {
	c.Header("Cache-Control", "no-store")
	redis := ""
	if h.Redis != nil {
		redis = "redis: ok\n"
		// Well within a probe's timeout (1 s by default): a Redis that
		// hangs must not make the probe itself fail.
		ctx, cancel := context.WithTimeout(c.Request.Context(), redisPingTimeout)
		defer cancel()
		if err := h.Redis.Ping(ctx); err != nil {
			redis = "redis: unavailable\n"
			rl.reason = "redis unavailable: " + err.Error()
		}
	}
	if !h.Provider.Ready() {
		c.String(http.StatusServiceUnavailable, "provider: discovery pending\n"+redis)
		return
	}
	if redis == "" {
		c.String(http.StatusOK, "ok\n")
		return
	}
	c.String(http.StatusOK, "provider: ok\n"+redis)
}
