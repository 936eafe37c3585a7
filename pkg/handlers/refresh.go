package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

// refreshed is one refresh's result, shared by every check that carried
// the same refresh token: the new session and its sealed cookie value. It
// is read-only once made.
type refreshed struct {
	state  *session.State
	sealed *session.Sealed
	// remote: another replica redeemed the token (via the Coordinator).
	remote bool
}

// sessionOver marks refresh failures that end the session: the provider
// rejected the refresh token (invalid_grant), or answered with an ID token
// for another user. Kept for the reuse window like a result.
type sessionOver struct{ err error }

func (e sessionOver) Error() string  { return e.err.Error() }
func (e sessionOver) Unwrap() error  { return e.err }
func (e sessionOver) Reusable() bool { return true }

const (
	// defaultRefreshTimeout bounds a refresh during a check: nginx waits for it.
	defaultRefreshTimeout = 5 * time.Second
	// refreshCacheSize bounds the results kept for the reuse window.
	refreshCacheSize = 10000
)

func newRefreshGroup(now func() time.Time, window, timeout time.Duration) *refresh.Group[*refreshed] {
	if timeout <= 0 {
		timeout = defaultRefreshTimeout
	}
	return refresh.New[*refreshed](now, window, timeout, refreshCacheSize)
}

// needsRefresh reports whether the access token expires within
// session.refreshBefore, by our clock (never oauth2.Token.Valid, which uses
// the wall clock). A session whose provider gave no expiry never refreshes.
func (h *handler) needsRefresh(st *session.State, now time.Time) bool {
	return !st.AccessExpiry.IsZero() && !now.Before(st.AccessExpiry.Add(-h.Config.Session.RefreshBefore.Duration))
}

// refreshSession keeps a session alive across its access token's expiry.
// It returns the session to answer with, or nil when the session is over
// (its cookies cleared); on success with new tokens it has written the
// Set-Cookie.
func (h *handler) refreshSession(c *gin.Context, rl *reqLog, st *session.State) *session.State {
	now := h.Now()
	expired := !now.Before(st.AccessExpiry)
	rt := st.RefreshToken()
	if rt == "" {
		// Without a refresh token the session ends with the access token.
		if expired {
			rl.reason = "access token expired, no refresh token"
			h.Sessions.Clear(c.Writer, c.Request)
			return nil
		}
		return st
	}

	res, outcome, err := h.refreshes.Do(c.Request.Context(), refresh.KeyOf(rt), func(ctx context.Context) (*refreshed, error) {
		return h.redeemShared(ctx, st, rt)
	})
	var over sessionOver
	switch {
	case err == nil:
		h.Sessions.WriteSealed(c.Writer, c.Request, res.sealed)
		result := metrics.RefreshSuccess
		if outcome == refresh.Shared || res.remote {
			result = metrics.RefreshShared
		}
		h.Metrics.TokenRefreshes.WithLabelValues(result).Inc()
		rl.reason = "refreshed (" + result + ")"
		rl.refreshed = true
		return res.state
	case errors.As(err, &over):
		h.Metrics.TokenRefreshes.WithLabelValues(metrics.RefreshInvalidGrant).Inc()
		rl.reason = "refresh rejected, session over"
		h.Log.Info("refresh rejected; session over", "sub", st.Subject, "error", err)
		h.Sessions.Clear(c.Writer, c.Request)
		return nil
	default:
		// The provider is down, slow or broken: keep the session passing
		// for refreshGrace past the access token's expiry; a later check
		// tries again.
		h.Metrics.TokenRefreshes.WithLabelValues(metrics.RefreshIdPUnavailable).Inc()
		h.Log.Warn("refresh failed; provider unavailable", "sub", st.Subject, "error", err)
		if now.Before(st.AccessExpiry.Add(h.Config.Session.RefreshGrace.Duration)) {
			rl.reason = "refresh failed, within grace"
			return st
		}
		rl.reason = "refresh failed, grace over"
		return nil
	}
}

// Outcomes of a refresh as published to other replicas: the first byte,
// then the encoded state or the reason the session is over.
const (
	publishedState = 1
	publishedOver  = 2
)

// redeemShared redeems rt once across replicas when a Coordinator is
// configured: another replica's published result is taken as it is, and
// so is its verdict that the session is over. Redis being unreachable
// falls back to this process's single flight.
func (h *handler) redeemShared(ctx context.Context, st *session.State, rt string) (*refreshed, error) {
	if h.Coordinator == nil {
		return h.redeem(ctx, st, rt)
	}
	var mine *refreshed
	var myErr error
	ran := false
	payload, shared, err := h.Coordinator.Do(ctx, rt, func(ctx context.Context) ([]byte, error) {
		ran = true
		mine, myErr = h.redeem(ctx, st, rt)
		var over sessionOver
		switch {
		case myErr == nil:
			b, err := mine.state.MarshalBinary()
			return append([]byte{publishedState}, b...), err
		case errors.As(myErr, &over):
			return append([]byte{publishedOver}, over.Error()...), nil
		default:
			return nil, myErr // the provider is down: nothing to publish
		}
	})
	if ran {
		return mine, myErr
	}
	if errors.Is(err, refresh.ErrUnavailable) {
		h.Log.Warn("redis unavailable; refreshing without cross-replica coordination", "sub", st.Subject, "error", err)
		return h.redeem(ctx, st, rt)
	}
	if err != nil {
		return nil, err
	}
	if !shared || len(payload) == 0 {
		return nil, errors.New("refresh coordinator returned no result")
	}
	switch payload[0] {
	case publishedOver:
		return nil, sessionOver{fmt.Errorf("another replica's refresh: %s", payload[1:])}
	case publishedState:
		next := new(session.State)
		if err := next.UnmarshalBinary(payload[1:]); err != nil {
			return nil, fmt.Errorf("another replica's refresh result: %w", err)
		}
		if next.ID != st.ID {
			return nil, errors.New("another replica's refresh result is for another session")
		}
		sealed, err := h.Sessions.Shared(next)
		if err != nil {
			return nil, err
		}
		return &refreshed{state: next, sealed: sealed, remote: true}, nil
	}
	return nil, errors.New("refresh coordinator returned an unknown result")
}

// redeem runs one refresh at the provider and builds the new session: the
// rotated refresh token (or the old one when none came back), the new
// access token and expiry, and a returned ID token once verified (same
// issuer, audience and sub), else the previous one.
func (h *handler) redeem(ctx context.Context, st *session.State, rt string) (*refreshed, error) {
	tokens, err := h.Provider.Refresh(ctx, rt)
	if err != nil {
		if errors.Is(err, provider.ErrRefreshRejected) {
			return nil, sessionOver{err}
		}
		return nil, err
	}
	next := *st // claims, times and ID carry over
	old := st.Tokens()
	kept := session.Tokens{IDToken: old.IDToken}
	if tokens.IDToken != "" {
		idTok, err := h.Provider.VerifyIDToken(ctx, tokens.IDToken)
		if err != nil {
			return nil, sessionOver{fmt.Errorf("refreshed id token: %w", err)}
		}
		if idTok.Subject != st.Subject {
			return nil, sessionOver{errors.New("refreshed id token is for another subject")}
		}
		var claims map[string]any
		if err := idTok.Claims(&claims); err == nil {
			// Claims that changed at the provider (groups) take effect now;
			// those the new token lacks keep their old values.
			id, _ := h.readIdentity(claims)
			id.merge(identity{user: st.User, email: st.Email, preferredUsername: st.PreferredUsername, groups: st.Groups})
			next.User, next.Email, next.PreferredUsername, next.Groups = id.user, id.email, id.preferredUsername, id.groups
			if sid, _ := claims["sid"].(string); sid != "" {
				next.SID = sid
			}
		}
		kept.IDToken = tokens.IDToken
	}
	if st.IDTokenApart {
		// The ID token lives in its own cookie, written at sign-in and left
		// alone so that the refresh fits one Set-Cookie; it serves only as
		// id_token_hint, for which the first one does.
		kept.IDToken = ""
	}
	keep := h.Config.Session.StoreTokens
	if keep.AccessToken {
		kept.AccessToken = tokens.AccessToken
	}
	if !keep.IDToken {
		kept.IDToken = ""
	}
	if keep.RefreshToken {
		kept.RefreshToken = tokens.RefreshToken
	}
	next.SetTokens(kept)
	next.AccessExpiry = tokens.Expiry
	sealed, err := h.Sessions.Seal(ctx, &next)
	if err != nil {
		return nil, err
	}
	h.Metrics.SessionCookieBytes.Observe(float64(sealed.Size))
	return &refreshed{state: &next, sealed: sealed}, nil
}
