// Package logout remembers sessions that ended before their cookies did: a
// back-channel logout from the provider (by its session ID or by subject) or
// a sign-out here. A cookie cannot be recalled from the browser, so the
// check asks this record instead, in O(1).
package logout

import (
	"container/heap"
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

// jtiKind files the used logout-token IDs beside the records.
const jtiKind = kinds

// Store keeps the records. A record ends only sessions created before it:
// the same user signing in again afterwards passes. Implementations keep a
// record until `until`, the end of the longest session it could cover.
type Store interface {
	// End records that sessions of kind/key created before at are over.
	End(ctx context.Context, kind Kind, key string, at, until time.Time) error
	// Ended reports whether a session of kind/key created at createdAt is over.
	Ended(ctx context.Context, kind Kind, key string, createdAt time.Time) (bool, error)
	// EndOnce is End for a logout token: it takes the token's jti (kept
	// until jtiUntil) and writes the record as one operation. A jti used
	// before records nothing and returns false: a replay is refused. A
	// failed write takes no jti, so the provider's retry is accepted.
	EndOnce(ctx context.Context, jti string, jtiUntil time.Time, kind Kind, key string, at, until time.Time) (first bool, err error)
}

// Memory is the Store of one replica.
type Memory struct {
	now     func() time.Time
	mu      sync.RWMutex
	records [kinds + 1]map[string]record // jtiKind: the jtis, at unused
	// expiries orders every record by its end, so that dropping the
	// expired ones costs what they are, never a scan of them all.
	expiries expiryHeap
	// size lets the check skip the lock while nothing was ever recorded,
	// the usual case.
	size atomic.Int64
}

type record struct{ at, until time.Time }

// NewMemory returns an empty in-memory store; now is the clock that expires records.
func NewMemory(now func() time.Time) *Memory {
	m := &Memory{now: now}
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
	m.endLocked(kind, key, at, until)
	m.pruneLocked()
	return nil
}

func (m *Memory) endLocked(kind Kind, key string, at, until time.Time) {
	recs := m.records[kind]
	old, ok := recs[key]
	if ok && old.at.After(at) {
		at = old.at
	}
	if ok && old.until.After(until) {
		until = old.until
	}
	if !ok && kind != jtiKind {
		m.size.Add(1)
	}
	recs[key] = record{at: at, until: until}
	if !ok || !until.Equal(old.until) {
		// An unchanged end has its heap entry already (a reload from Redis
		// writes every record again).
		heap.Push(&m.expiries, expiry{until: until, kind: kind, key: key})
	}
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

// EndOnce implements Store.
func (m *Memory) EndOnce(_ context.Context, jti string, jtiUntil time.Time, kind Kind, key string, at, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.records[jtiKind][jti]; ok && m.now().Before(r.until) {
		return false, nil
	}
	m.endLocked(jtiKind, jti, time.Time{}, jtiUntil)
	m.endLocked(kind, key, at, until)
	m.pruneLocked()
	return true, nil
}

// pruneLocked drops the records that have expired.
func (m *Memory) pruneLocked() {
	now := m.now()
	for len(m.expiries) > 0 && !now.Before(m.expiries[0].until) {
		e := heap.Pop(&m.expiries).(expiry)
		recs := m.records[e.kind]
		// A later End may have extended the record: its own entry is
		// still in the heap.
		if r, ok := recs[e.key]; ok && !now.Before(r.until) {
			delete(recs, e.key)
			if e.kind != jtiKind {
				m.size.Add(-1)
			}
		}
	}
}

// Len is the number of logout records held (jtis not counted).
func (m *Memory) Len() int { return int(m.size.Load()) }

// expiry is a record's end, in the heap.
type expiry struct {
	until time.Time
	kind  Kind
	key   string
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
