package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// signOut is /oauth2/sign_out. Being written.
func (h *handler) signOut(c *gin.Context, rl *reqLog) {
	c.Status(http.StatusNotImplemented)
}
