package handlers

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// userinfoResponse is /oauth2/userinfo's answer: who is signed in, never a token.
type userinfoResponse struct {
	User              string   `json:"user"`
	Email             string   `json:"email"`
	PreferredUsername string   `json:"preferredUsername"`
	Groups            []string `json:"groups"`
}

// userinfo is /oauth2/userinfo: the session's identity as JSON, or 401.
func (h *handler) userinfo(c *gin.Context, rl *reqLog) {
	c.Header("Cache-Control", "no-store")
	// The check's own path: a session the check refuses is refused here.
	st, err := h.currentSession(c, rl)
	if err != nil {
		c.JSON(http.StatusUnauthorized, gin.H{"error": "unauthenticated"})
		return
	}
	groups := st.Groups
	if groups == nil {
		groups = []string{}
	}
	c.JSON(http.StatusOK, userinfoResponse{User: st.User, Email: st.Email, PreferredUsername: st.PreferredUsername, Groups: groups})
}
