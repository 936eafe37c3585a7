// Package refresh keeps a session alive across its access token's expiry:
// the Refresher decides when a session needs a refresh, redeems its
// refresh token at the provider once, re-verifies the ID token that comes
// back, builds the next session (package identity) and stores it.
//
// One refresh token is redeemed once. Browsers fire many requests at once, each with the cookie as it was when
// it left. When the access token expires, every one of those checks wants a
// refresh; a provider that rotates refresh tokens accepts the first
// redemption only, and reuse-detecting providers (Okta, Auth0, Keycloak)
// answer a second one by revoking the whole token family — signing the
// user out. A Group therefore runs one refresh per refresh token and hands
// its result to every check that asks while it runs (single flight), and
// keeps the result for a reuse window so that checks still carrying the old
// cookie afterwards get the new tokens instead of replaying the old one.
package refresh

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// Key identifies a refresh token without keeping it: its SHA-256.
type Key [sha256.Size]byte

// KeyOf hashes a refresh token.
func KeyOf(refreshToken string) Key { return sha256.Sum256([]byte(refreshToken)) }

// Group runs refreshes of type T. The zero value is not usable: use New.
type Group[T any] struct {
	now      func() time.Time
	window   time.Duration
	timeout  time.Duration
	maxItems int

	mu      sync.Mutex
	flights map[Key]*flight[T]
	done    map[Key]*list.Element // of *entry[T], oldest first in order
	order   *list.List
}

type flight[T any] struct {
	wait chan struct{}
	val  T
	err  error
}

type entry[T any] struct {
	key     Key
	val     T
	err     error
	expires time.Time
}

// New returns a Group whose results are reused for window (by now's clock),
// keeping at most maxItems of them; each refresh gets timeout.
func New[T any](now func() time.Time, window, timeout time.Duration, maxItems int) *Group[T] {
	return &Group[T]{
		now: now, window: window, timeout: timeout, maxItems: maxItems,
		flights: map[Key]*flight[T]{},
		done:    map[Key]*list.Element{},
		order:   list.New(),
	}
}

// Reusable marks errors that are kept for the reuse window like results:
// a refresh token the provider rejected stays rejected, so asking again
// only burdens the provider. Other errors (the provider is down) are
// retried by the next check.
type Reusable interface{ Reusable() bool }

// Do returns the result of the refresh for key: a finished one from the
// reuse window, the one in flight, or a new one run by fn. fn gets a
// context that outlives ctx (other checks may be waiting on it), bounded by
// the group's timeout. A caller whose ctx ends stops waiting with ctx's error.
// shared says another caller's refresh, in flight or finished within the
// reuse window, answered this one.
func (g *Group[T]) Do(ctx context.Context, key Key, fn func(context.Context) (T, error)) (v T, shared bool, err error) {
	g.mu.Lock()
	if el, ok := g.done[key]; ok {
		e := el.Value.(*entry[T])
		if g.now().Before(e.expires) {
			g.mu.Unlock()
			return e.val, true, e.err
		}
		g.removeLocked(el)
	}
	if f, ok := g.flights[key]; ok {
		g.mu.Unlock()
		select {
		case <-f.wait:
			return f.val, true, f.err
		case <-ctx.Done():
			var zero T
			return zero, true, ctx.Err()
		}
	}
	f := &flight[T]{wait: make(chan struct{})}
	g.flights[key] = f
	g.mu.Unlock()

	runCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	func() {
		defer cancel()
		defer func() {
			// A panic must not leave waiters hanging.
			if r := recover(); r != nil {
				f.err = errors.New("refresh: panic in refresh")
				g.finish(key, f, false)
				panic(r)
			}
		}()
		f.val, f.err = fn(runCtx)
	}()
	var r Reusable
	keep := f.err == nil || (errors.As(f.err, &r) && r.Reusable())
	g.finish(key, f, keep)
	return f.val, false, f.err
}

// finish publishes a flight's result and, when keep, stores it for the window.
func (g *Group[T]) finish(key Key, f *flight[T], keep bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.flights, key)
	close(f.wait)
	if !keep || g.window <= 0 {
		return
	}
	now := g.now()
	// Drop what has expired, then the oldest while full.
	for el := g.order.Front(); el != nil; el = g.order.Front() {
		if e := el.Value.(*entry[T]); now.Before(e.expires) && g.order.Len() < g.maxItems {
			break
		}
		g.removeLocked(el)
	}
	g.done[key] = g.order.PushBack(&entry[T]{key: key, val: f.val, err: f.err, expires: now.Add(g.window)})
}

func (g *Group[T]) removeLocked(el *list.Element) {
	delete(g.done, el.Value.(*entry[T]).key)
	g.order.Remove(el)
}

// Len is the number of results kept for reuse.
func (g *Group[T]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.order.Len()
}
