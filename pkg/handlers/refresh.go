package handlers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/extauth/extauth/pkg/metrics"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/refresh"
	"github.com/extauth/extauth/pkg/session"
)

// refreshed is one refresh's result, shared by every check that carried
// the same refresh token: the new session (never written once made) and,
// once stored, what to write to the browser.
type refreshed struct {
	state *session.State
	// remote: another replica redeemed the token (via the Coordinator)
	// and stored the result.
	remote bool

	mu     sync.Mutex
	sealed *session.Sealed // nil until stored
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

// needsRefresh reports whether the access token expires within the
// refresh margin, by our clock (never oauth2.Token.Valid, which uses the
// wall clock). The margin is session.refreshBefore, at most half the
// token's lifetime: a 60-second token with the default 60-second margin
// would otherwise be refreshed by every check. A session whose provider
// gave no expiry never refreshes.
func (h *handler) needsRefresh(st *session.State, now time.Time) bool {
	if st.AccessExpiry.IsZero() {
		return false
	}
	margin := h.Config.Session.RefreshBefore.Duration
	if half := st.AccessLifetime / 2; st.AccessLifetime > 0 && margin > half {
		margin = half
	}
	return !now.Before(st.AccessExpiry.Add(-margin))
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

	ctx := c.Request.Context()
	res, outcome, err := h.refreshes.Do(ctx, refresh.KeyOf(rt), func(ctx context.Context) (*refreshed, error) {
		return h.redeemShared(ctx, st, rt)
	})
	var over sessionOver
	switch {
	case err == nil:
		result := metrics.RefreshSuccess
		if outcome == refresh.Shared || res.remote {
			result = metrics.RefreshShared
		}
		sealed, err := h.store(ctx, res)
		switch {
		case errors.Is(err, session.ErrExpired):
			rl.reason = "session expired during the refresh"
			h.Sessions.Clear(c.Writer, c.Request)
			return nil
		case err != nil:
			// The provider has rotated the tokens; they stay in the reuse
			// window (and, with Redis, published to the other replicas),
			// so checks with the old cookie get them instead of replaying
			// the old refresh token. This check passes on the new tokens;
			// a later one stores them.
			result = metrics.RefreshStoreError
			rl.reason = "refreshed, but the session could not be stored"
			h.Log.Error("refreshed session could not be stored; the next check retries", "sub", st.Subject, "error", err)
		default:
			h.Sessions.WriteSealed(c.Writer, c.Request, sealed)
			rl.reason = "refreshed (" + result + ")"
			// Caddy's 307 brings a new cookie to the browser; a state that
			// would refresh again at once must not be redirected to.
			rl.newCookie = sealed.HasCookies() && !h.needsRefresh(res.state, h.Now())
		}
		h.Metrics.TokenRefreshes.WithLabelValues(result).Inc()
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

// storeAttempts and storeBackoff bound the retries of a failed store.
const (
	storeAttempts = 3
	storeBackoff  = 50 * time.Millisecond
)

// store writes a refresh's result once for all the checks that share it:
// the first seals it (the cookie value; with Redis sessions, the SET),
// retrying a store that is unavailable; the others reuse what it sealed,
// or try again if it failed. A result another replica stored needs no
// second write (Shared).
func (h *handler) store(ctx context.Context, res *refreshed) (*session.Sealed, error) {
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.sealed != nil {
		return res.sealed, nil
	}
	var sealed *session.Sealed
	var err error
	for attempt := range storeAttempts {
		if res.remote {
			sealed, err = h.Sessions.Shared(res.state)
		} else {
			sealed, err = h.Sessions.Seal(ctx, res.state)
		}
		if err == nil || !errors.Is(err, session.ErrUnavailable) || attempt == storeAttempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(storeBackoff << attempt):
		}
	}
	if err != nil {
		return nil, err
	}
	if !res.remote {
		h.Metrics.SessionCookieBytes.Observe(float64(sealed.Size))
	}
	res.sealed = sealed
	return sealed, nil
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
		return &refreshed{state: next, remote: true}, nil
	}
	return nil, errors.New("refresh coordinator returned an unknown result")
}

// redeem runs one refresh at the provider and builds the new session: the
// rotated refresh token (or the old one when none came back), the new
// access token and expiry, and the identity as the provider states it now
// (see refreshedIdentity). It does not store the session: the result is
// kept for the reuse window (and published) first, so that a failed store
// never loses the rotation.
func (h *handler) redeem(ctx context.Context, st *session.State, rt string) (*refreshed, error) {
	tokens, err := h.Provider.Refresh(ctx, rt)
	if err != nil {
		if errors.Is(err, provider.ErrRefreshRejected) {
			return nil, sessionOver{err}
		}
		return nil, err
	}
	next := *st // times, ID and the rest carry over
	if err := h.refreshedIdentity(ctx, &next, tokens); err != nil {
		return nil, err
	}
	kept := h.keptTokens(tokens)
	if tokens.IDToken == "" && h.Config.Session.StoreTokens.IDToken {
		kept.IDToken = st.Tokens().IDToken
	}
	if st.IDTokenApart {
		// The ID token lives in its own cookie, written at sign-in and left
		// alone so that the refresh fits one Set-Cookie; it serves only as
		// id_token_hint, for which the first one does.
		kept.IDToken = ""
	}
	next.SetTokens(kept)
	setAccessToken(&next, tokens)
	return &refreshed{state: &next}, nil
}

// refreshedIdentity updates next's identity from a refresh: a returned ID
// token, once verified (same issuer, audience and sub), states the claims
// it carries, and they win even when empty ("groups": [] removes every
// group, email_verified false the email). Claims that sign-in took from
// userinfo are read there again. What neither states keeps its value.
func (h *handler) refreshedIdentity(ctx context.Context, next *session.State, tokens *provider.Tokens) error {
	var id identity
	if tokens.IDToken != "" {
		idTok, err := h.Provider.VerifyIDToken(ctx, tokens.IDToken)
		if err != nil {
			return sessionOver{fmt.Errorf("refreshed id token: %w", err)}
		}
		if idTok.Subject != next.Subject {
			return sessionOver{errors.New("refreshed id token is for another subject")}
		}
		claims, err := decodeClaims(idTok)
		if err != nil {
			return sessionOver{fmt.Errorf("refreshed id token claims: %w", err)}
		}
		id = h.readIdentity(claims)
		if sid, _ := claims["sid"].(string); sid != "" {
			next.SID = sid
		}
	}
	if next.ClaimsFromUserinfo && id.missing() != 0 && tokens.AccessToken != "" {
		extra, err := h.userinfoIdentity(ctx, next.Subject, tokens.AccessToken)
		switch {
		case errors.Is(err, errUserinfoSubject):
			return sessionOver{err}
		case err != nil:
			// The tokens are new and the provider's verdict stands; the
			// claims are read again at the next refresh.
			h.Log.Warn("userinfo failed during a refresh; claims keep their values until the next one", "sub", next.Subject, "error", err)
		default:
			id.fill(extra)
		}
	}
	id.fill(identityOf(next))
	id.apply(next)
	return nil
}
