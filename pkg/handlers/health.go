package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// healthz is liveness: 200 while the process serves, whatever the provider does.
func (h *handler) healthz(c *gin.Context, rl *reqLog) {
	c.Header("Cache-Control", "no-store")
	c.String(http.StatusOK, "ok\n")
}

// readyz is readiness: 503 until the provider's discovery document has been
// loaded (its keys are then fetched on first use), 200 after.
func (h *handler) readyz(c *gin.Context, rl *reqLog) {
	c.Header("Cache-Control", "no-store")
	if !h.Provider.Ready() {
		c.String(http.StatusServiceUnavailable, "provider discovery pending\n")
		return
	}
	c.String(http.StatusOK, "ok\n")
}
