package refresh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/extauth/extauth/pkg/identity"
	"github.com/extauth/extauth/pkg/provider"
	"github.com/extauth/extauth/pkg/session"
)

// Provider is what a refresh needs of the OpenID provider.
type Provider interface {
	Refresh(ctx context.Context, refreshToken string) (*provider.Tokens, error)
	VerifyIDToken(ctx context.Context, raw string) (*oidc.IDToken, error)
}

// Store writes refreshed sessions: Seal stores one and returns what to
// write to the browser; Shared does the latter for a state another
// replica stored already.
type Store interface {
	Seal(ctx context.Context, st *session.State) (*session.Sealed, error)
	Shared(st *session.State) (*session.Sealed, error)
}

// Coordinator shares refreshes among replicas (redisstore implements it):
// Do returns the published result of redeeming refreshToken, or runs
// redeem (under a lock) and publishes what it returns; shared says the
// result came from another replica. ErrUnavailable: redeem did not run,
// and the caller may refresh on its own.
type Coordinator interface {
	Do(ctx context.Context, refreshToken string, redeem func(context.Context) ([]byte, error)) (result []byte, shared bool, err error)
}

// ErrUnavailable is returned by a Coordinator that could not be reached
// before the refresh ran: the caller refreshes on its own, within this
// process's Group.
var ErrUnavailable = errors.New("refresh: coordinator unavailable")

// Config is what a Refresher is made of; its durations are session.*.
type Config struct {
	Provider Provider
	Identity *identity.Builder
	Store    Store
	// Coordinator, when replicas share Redis; nil: this process only.
	Coordinator Coordinator
	// Now is the clock of every expiry decision: never oauth2.Token.Valid,
	// which reads the wall clock.
	Now func() time.Time
	// Before is session.refreshBefore: how long before the access token's
	// expiry a check refreshes it.
	Before time.Duration
	// Grace is session.refreshGrace: how long past the expiry a session
	// keeps passing while the provider cannot refresh it.
	Grace time.Duration
	// ReuseWindow is session.refreshReuseWindow: how long a refresh's
	// result answers checks that still carry the old cookie.
	ReuseWindow time.Duration
	// Timeout bounds one refresh (default 5s): nginx waits for the check.
	Timeout time.Duration
	Log     *slog.Logger
}

const (
	defaultTimeout = 5 * time.Second
	// cacheSize bounds the results kept for the reuse window.
	cacheSize = 10000
	// StoreAttempts and storeBackoff bound the retries of a failed store.
	StoreAttempts = 3
	storeBackoff  = 50 * time.Millisecond
)

// Refresher keeps sessions alive across their access tokens' expiry.
type Refresher struct {
	cfg   Config
	group *Group[*result]
}

// NewRefresher returns a Refresher; cfg.Provider, Identity, Store and Now are required.
func NewRefresher(cfg Config) *Refresher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Refresher{cfg: cfg, group: New[*result](cfg.Now, cfg.ReuseWindow, cfg.Timeout, cacheSize)}
}

// Status says what Refresh did.
type Status int

const (
	// NotDue: the access token is good for longer than the margin.
	NotDue Status = iota
	// Redeemed: this check redeemed the refresh token.
	Redeemed
	// Shared: another check's refresh (in flight, within the reuse
	// window, or another replica's) answered this one.
	Shared
)

// Result is a session to answer with.
type Result struct {
	State  *session.State
	Status Status
	// Sealed is what to write to the browser; nil when nothing changed.
	Sealed *session.Sealed
	// CookieBytes is the size of the cookie this call sealed, 0 when it
	// wrote none (another check sealed the result, or another replica).
	CookieBytes int
	// NewCookie: Sealed sets cookies, for a session that needs no other
	// refresh at once (so a gateway may redirect to bring them home).
	NewCookie bool
}

// SessionOver is a session the refresh ended: the cookies go.
type SessionOver struct {
	// Reason is for the log line.
	Reason string
	// Rejected: the provider refused the refresh token (invalid_grant) or
	// answered for another user.
	Rejected bool
	Err      error
}

func (e *SessionOver) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}
func (e *SessionOver) Unwrap() error { return e.Err }

// ProviderDown is a refresh the provider could not answer (down, slow,
// broken). Within session.refreshGrace past the expiry the old session
// passes (InGrace, and Result.State is it); after, it does not, but its
// cookie stays for a later check to refresh.
type ProviderDown struct {
	InGrace bool
	Err     error
}

func (e *ProviderDown) Error() string { return "refresh failed: " + e.Err.Error() }
func (e *ProviderDown) Unwrap() error { return e.Err }

// StoreFailed is a refresh whose new session could not be stored. The
// provider has rotated the tokens: they stay in the reuse window (and,
// with a Coordinator, published to the other replicas), so checks with
// the old cookie get them instead of replaying the old refresh token.
// Result.State is the new session, good for this check; a later one
// stores it.
type StoreFailed struct{ Err error }

func (e *StoreFailed) Error() string { return "refreshed session not stored: " + e.Err.Error() }
func (e *StoreFailed) Unwrap() error { return e.Err }

// Due reports whether st's access token expires within the refresh margin
// at now. The margin is session.refreshBefore, at most half the token's
// lifetime: a 60-second token with the default 60-second margin would
// otherwise be refreshed by every check. A session whose provider gave
// no expiry never refreshes.
func (r *Refresher) Due(st *session.State, now time.Time) bool {
	if st.AccessExpiry.IsZero() {
		return false
	}
	margin := r.cfg.Before
	if half := st.AccessLifetime / 2; st.AccessLifetime > 0 && margin > half {
		margin = half
	}
	return !now.Before(st.AccessExpiry.Add(-margin))
}

// Refresh returns the session a check answers with: st itself while its
// access token is good, else st refreshed and stored. The errors are
// *SessionOver, *ProviderDown and *StoreFailed; with the last two,
// Result.State may still be a session to pass (see each).
func (r *Refresher) Refresh(ctx context.Context, st *session.State) (Result, error) {
	now := r.cfg.Now()
	if !r.Due(st, now) {
		return Result{State: st}, nil
	}
	rt := st.RefreshToken()
	if rt == "" {
		// Without a refresh token the session ends with the access token.
		if !now.Before(st.AccessExpiry) {
			return Result{}, &SessionOver{Reason: "access token expired, no refresh token"}
		}
		return Result{State: st}, nil
	}
	res, shared, err := r.group.Do(ctx, KeyOf(rt), func(ctx context.Context) (*result, error) {
		return r.redeemShared(ctx, st, rt)
	})
	var over overErr
	switch {
	case errors.As(err, &over):
		return Result{}, &SessionOver{Reason: "refresh rejected, session over", Rejected: true, Err: over.err}
	case err != nil:
		down := &ProviderDown{InGrace: now.Before(st.AccessExpiry.Add(r.cfg.Grace)), Err: err}
		if down.InGrace {
			return Result{State: st}, down
		}
		return Result{}, down
	}
	out := Result{State: res.state, Status: Redeemed}
	if shared || res.remote {
		out.Status = Shared
	}
	sealed, size, err := r.store(ctx, res)
	switch {
	case errors.Is(err, session.ErrExpired):
		return Result{}, &SessionOver{Reason: "session expired during the refresh", Err: err}
	case err != nil:
		return out, &StoreFailed{Err: err}
	}
	out.Sealed, out.CookieBytes = sealed, size
	out.NewCookie = sealed.HasCookies() && !r.Due(res.state, r.cfg.Now())
	return out, nil
}

// result is one refresh's result, shared by every check that carried the
// same refresh token: the new session (never written once made) and, once
// stored, what to write to the browser.
type result struct {
	state *session.State
	// remote: another replica redeemed the token (via the Coordinator)
	// and stored the result.
	remote bool

	mu     sync.Mutex
	sealed *session.Sealed // nil until stored
}

// overErr marks redemption failures that end the session: the provider
// rejected the refresh token (invalid_grant), or answered with an ID token
// that cannot be believed. Kept for the reuse window like a result.
type overErr struct{ err error }

func (e overErr) Error() string  { return e.err.Error() }
func (e overErr) Unwrap() error  { return e.err }
func (e overErr) Reusable() bool { return true }

// store writes a refresh's result once for all the checks that share it:
// the first seals it (the cookie value; with Redis sessions, the SET),
// retrying a store that is unavailable, and reports the cookie's size;
// the others reuse what it sealed, or try again if it failed. A result
// another replica stored needs no second write (Shared).
func (r *Refresher) store(ctx context.Context, res *result) (*session.Sealed, int, error) {
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.sealed != nil {
		return res.sealed, 0, nil
	}
	var sealed *session.Sealed
	var err error
	for attempt := range StoreAttempts {
		if res.remote {
			sealed, err = r.cfg.Store.Shared(res.state)
		} else {
			sealed, err = r.cfg.Store.Seal(ctx, res.state)
		}
		if err == nil || !errors.Is(err, session.ErrUnavailable) || attempt == StoreAttempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, 0, err
		case <-time.After(storeBackoff << attempt):
		}
	}
	if err != nil {
		return nil, 0, err
	}
	res.sealed = sealed
	if res.remote {
		return sealed, 0, nil
	}
	return sealed, sealed.Size, nil
}

// redeem runs one refresh at the provider and builds the next session. It
// does not store it: the result is kept for the reuse window (and
// published) first, so that a failed store never loses the rotation.
func (r *Refresher) redeem(ctx context.Context, st *session.State, rt string) (*result, error) {
	tokens, err := r.cfg.Provider.Refresh(ctx, rt)
	if err != nil {
		if errors.Is(err, provider.ErrRefreshRejected) {
			return nil, overErr{err}
		}
		return nil, err
	}
	var idTok *oidc.IDToken
	if tokens.IDToken != "" {
		// Same issuer, audience and signature as at sign-in; identity
		// checks it names the same user.
		if idTok, err = r.cfg.Provider.VerifyIDToken(ctx, tokens.IDToken); err != nil {
			return nil, overErr{fmt.Errorf("refreshed id token: %w", err)}
		}
	}
	next, err := r.cfg.Identity.Refreshed(ctx, st, idTok, tokens)
	if err != nil {
		return nil, overErr{err}
	}
	return &result{state: next}, nil
}
