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
func (h *handler) userinfo(c *gin.Context, rl *reqLog) *outcome {
	a, refusal := h.appFor(c.Request, h.requestHost(c.Request), true)
	if refusal != nil {
		return &outcome{status: http.StatusForbidden, code: "no_app", reason: refusal.reason}
	}
	rl.app = a.name
	// The check's own path: a session the check refuses is refused here.
	st, refusal := h.currentSession(a, c.Writer, c.Request, rl)
	if refusal != nil {
		return &outcome{status: http.StatusUnauthorized, code: "unauthenticated", reason: refusal.reason}
	}
	groups := st.Groups
	if groups == nil {
		groups = []string{}
	}
	body := userinfoResponse{User: st.User, Email: st.Email, PreferredUsername: st.PreferredUsername, Groups: groups}
	return &outcome{status: http.StatusOK, render: func(c *gin.Context) {
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, body)
	}}
}
