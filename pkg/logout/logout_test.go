package logout

import (
	"strconv"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemory(func() time.Time { return now })
	ctx := t.Context()
	ended := func(kind Kind, key string, created time.Time) bool {
		t.Helper()
		ok, err := m.Ended(ctx, kind, key, created)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if ended(SID, "s1", now.Add(-time.Hour)) {
		t.Fatal("ended before any record")
	}
	if err := m.End(ctx, SID, "s1", now, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !ended(SID, "s1", now.Add(-time.Hour)) {
		t.Error("an older session of that sid still passes")
	}
	if ended(SID, "s1", now.Add(time.Millisecond)) {
		t.Error("a session created after the record is ended")
	}
	if ended(SID, "s2", now.Add(-time.Hour)) || ended(Subject, "s1", now.Add(-time.Hour)) {
		t.Error("a record ended another key or kind")
	}
	// An older record never moves the line back.
	_ = m.End(ctx, SID, "s1", now.Add(-2*time.Hour), now.Add(24*time.Hour))
	if !ended(SID, "s1", now.Add(-time.Minute)) {
		t.Error("an older record replaced a newer one")
	}
	// Records expire.
	now = now.Add(24 * time.Hour)
	if ended(SID, "s1", now.Add(-25*time.Hour)) {
		t.Error("an expired record still ends sessions")
	}

	if first, _ := m.EndOnce(ctx, "jti-1", now.Add(time.Hour), Subject, "u1", now, now.Add(time.Hour)); !first {
		t.Error("a new jti was refused")
	}
	if !ended(Subject, "u1", now.Add(-time.Second)) {
		t.Error("EndOnce recorded nothing")
	}
	if first, _ := m.EndOnce(ctx, "jti-1", now.Add(time.Hour), Subject, "u2", now, now.Add(time.Hour)); first {
		t.Error("a replayed jti was accepted")
	}
	if ended(Subject, "u2", now.Add(-time.Second)) {
		t.Error("a replayed jti recorded a logout")
	}
}

func TestMemoryPrunes(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemory(func() time.Time { return now })
	for i := range 300 {
		_ = m.End(t.Context(), Session, string(rune('a'+i)), now, now.Add(time.Minute))
	}
	now = now.Add(2 * time.Minute)
	for i := range 300 {
		_ = m.End(t.Context(), Session, "new"+string(rune('a'+i)), now, now.Add(time.Minute))
	}
	if got := m.Len(); got != 300 {
		t.Errorf("records held: %d, want the 300 live ones", got)
	}
	if got := len(m.expiries); got != 300 {
		t.Errorf("expiry entries: %d, want 300", got)
	}
}

// TestMemoryPruneCost: every write drops what has expired by then, and
// only that: the work per write stays small however many records live.
func TestMemoryPruneCost(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemory(func() time.Time { return now })
	ctx := t.Context()
	// 100,000 long-lived sign-outs (a week) and a stream of short ones.
	for i := range 100_000 {
		_ = m.End(ctx, Session, "long-"+strconv.Itoa(i), now, now.Add(168*time.Hour))
	}
	for i := range 1000 {
		now = now.Add(time.Second)
		_ = m.End(ctx, SID, "short-"+strconv.Itoa(i), now, now.Add(10*time.Second))
	}
	if got := m.Len(); got != 100_000+10 {
		t.Errorf("records held: %d, want %d", got, 100_000+10)
	}
	// Rewriting a record with the same end adds no heap entry.
	for range 10 {
		_ = m.End(ctx, Session, "long-1", now, now.Add(168*time.Hour-1000*time.Second))
	}
	if got := len(m.expiries); got > 100_000+11 {
		t.Errorf("expiry entries: %d", got)
	}
}

func BenchmarkMemoryEndWith100kRecords(b *testing.B) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemory(func() time.Time { return now })
	for i := range 100_000 {
		_ = m.End(b.Context(), Session, "long-"+strconv.Itoa(i), now, now.Add(168*time.Hour))
	}
	b.ResetTimer()
	for i := range b.N {
		now = now.Add(time.Millisecond)
		_ = m.End(b.Context(), SID, strconv.Itoa(i), now, now.Add(time.Second))
	}
}
