package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// jwks is GET /.well-known/jwks.json and GET /oauth2/jwks: the public keys
// of the assertion (current first, then previous ones), for apps to verify
// assertion.header with. Cacheable for five minutes: a verifier that meets
// the kid of a new key fetches the set again (go-oidc's remote key set
// does), and a previous key stays listed until its tokens have expired.
func (h *handler) jwks(c *gin.Context, _ *reqLog) *outcome {
	if h.Assertions == nil {
		return &outcome{status: http.StatusNotFound, code: "not_found", reason: "assertion is not enabled",
			message: "No JWKS: assertion.enabled is false."}
	}
	body := h.Assertions.JWKS()
	return &outcome{status: http.StatusOK, render: func(c *gin.Context) {
		c.Header("Cache-Control", "max-age=300")
		c.Data(http.StatusOK, "application/json", body)
	}}
}
