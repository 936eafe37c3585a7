package logout

import (
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

	if first, _ := m.FirstUse(ctx, "jti-1", now.Add(time.Hour)); !first {
		t.Error("a new jti was refused")
	}
	if first, _ := m.FirstUse(ctx, "jti-1", now.Add(time.Hour)); first {
		t.Error("a replayed jti was accepted")
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
	if got := m.size.Load(); got > 300 {
		t.Errorf("expired records kept: %d", got)
	}
}
