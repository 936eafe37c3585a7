// Package logout remembers sessions that ended before their cookies did: a
// back-channel logout from the provider (by its session ID or by subject) or
// a sign-out here. A cookie cannot be recalled from the browser, so the
// check asks this record instead, in O(1).
package logout

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Kind says what a record's key is.
type Kind uint8

const (
	// SID is the provider's session ID (the ID token's sid claim).
	SID Kind = iota
	// Subject is the user (sub): all of the user's sessions end.
	Subject
	// Session is extauth's own session ID, ended by a sign-out here.
	Session
	kinds
)

// Store keeps the records. A record ends only sessions created before it:
// the same user signing in again afterwards passes. Implementations keep a
// record until `until`, the end of the longest session it could cover.
type Store interface {
	// End records that sessions of kind/key created before at are over.
	End(ctx context.Context, kind Kind, key string, at, until time.Time) error
	// Ended reports whether a session of kind/key created at createdAt is over.
	Ended(ctx context.Context, kind Kind, key string, createdAt time.Time) (bool, error)
	// FirstUse records a logout token's jti and reports whether it is new:
	// a replayed token is refused.
	FirstUse(ctx context.Context, jti string, until time.Time) (bool, error)
}

// Memory is the Store of one replica.
type Memory struct {
	now     func() time.Time
	mu      sync.RWMutex
	records [kinds]map[string]record
	jtis    map[string]time.Time
	// size lets the check skip the lock while nothing was ever recorded,
	// the usual case.
	size   atomic.Int64
	writes int
}

type record struct{ at, until time.Time }

// NewMemory returns an empty in-memory store; now is the clock that expires records.
func NewMemory(now func() time.Time) *Memory {
	m := &Memory{now: now, jtis: map[string]time.Time{}}
	for i := range m.records {
		m.records[i] = map[string]record{}
	}
	return m
}

var _ Store = (*Memory)(nil)

// End implements Store. A later record for the same key wins when it is newer.
func (m *Memory) End(_ context.Context, kind Kind, key string, at, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := m.records[kind]
	if old, ok := recs[key]; ok && old.at.After(at) {
		at = old.at
	}
	if _, ok := recs[key]; !ok {
		m.size.Add(1)
	}
	recs[key] = record{at: at, until: until}
	m.pruneLocked()
	return nil
}

// Ended implements Store.
func (m *Memory) Ended(_ context.Context, kind Kind, key string, createdAt time.Time) (bool, error) {
	if key == "" || m.size.Load() == 0 {
		return false, nil
	}
	m.mu.RLock()
	r, ok := m.records[kind][key]
	m.mu.RUnlock()
	return ok && createdAt.Before(r.at) && m.now().Before(r.until), nil
}

// FirstUse implements Store.
func (m *Memory) FirstUse(_ context.Context, jti string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if exp, ok := m.jtis[jti]; ok && m.now().Before(exp) {
		return false, nil
	}
	m.jtis[jti] = until
	m.pruneLocked()
	return true, nil
}

// pruneLocked drops expired records every 256 writes.
func (m *Memory) pruneLocked() {
	m.writes++
	if m.writes%256 != 0 {
		return
	}
	now := m.now()
	for _, recs := range m.records {
		for k, r := range recs {
			if !now.Before(r.until) {
				delete(recs, k)
				m.size.Add(-1)
			}
		}
	}
	for k, exp := range m.jtis {
		if !now.Before(exp) {
			delete(m.jtis, k)
		}
	}
}
