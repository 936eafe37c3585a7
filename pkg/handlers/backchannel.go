package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// backchannelLogout is /oauth2/backchannel_logout (OpenID Connect
// Back-Channel Logout 1.0). TODO(helper): being written.
func (h *handler) backchannelLogout(c *gin.Context, rl *reqLog) {
	c.JSON(http.StatusNotImplemented, gin.H{"error": "not implemented"})
}
