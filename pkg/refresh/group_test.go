package refresh

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

type rejected struct{}

func (rejected) Error() string  { return "rejected" }
func (rejected) Reusable() bool { return true }

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[string](clk.Now, 30*time.Second, time.Second, 100)
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(context.Context) (string, error) {
		calls.Add(1)
		<-release
		return "new-tokens", nil
	}
	const n = 50
	var wg sync.WaitGroup
	var redeemed, sharedN atomic.Int32
	started := make(chan struct{}, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			v, shared, err := g.Do(t.Context(), KeyOf("rt-1"), fn)
			if err != nil || v != "new-tokens" {
				t.Errorf("got %q, %v", v, err)
			}
			if !shared {
				redeemed.Add(1)
			} else {
				sharedN.Add(1)
			}
		}()
	}
	for range n {
		<-started
	}
	// Let every goroutine reach Do before the refresh finishes.
	for {
		g.mu.Lock()
		inFlight := len(g.flights)
		g.mu.Unlock()
		if inFlight == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if calls.Load() != 1 || redeemed.Load() != 1 || sharedN.Load() != n-1 {
		t.Errorf("calls %d, redeemed %d, shared %d", calls.Load(), redeemed.Load(), sharedN.Load())
	}

	// 5 s later the old token still gets the result, without a second call.
	clk.Advance(5 * time.Second)
	v, shared, err := g.Do(t.Context(), KeyOf("rt-1"), fn)
	if v != "new-tokens" || !shared || err != nil || calls.Load() != 1 {
		t.Errorf("within the window: %q %v %v, calls %d", v, shared, err, calls.Load())
	}
	// After the window the old token is redeemed again (the provider decides).
	clk.Advance(30 * time.Second)
	close2 := make(chan struct{})
	close(close2)
	release = close2
	if _, shared, _ := g.Do(t.Context(), KeyOf("rt-1"), fn); shared || calls.Load() != 2 {
		t.Errorf("after the window: %v, calls %d", shared, calls.Load())
	}
}

func TestErrors(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[string](clk.Now, 30*time.Second, time.Second, 100)
	var calls int
	down := func(context.Context) (string, error) { calls++; return "", errors.New("503") }
	g.Do(t.Context(), KeyOf("a"), down)
	g.Do(t.Context(), KeyOf("a"), down)
	if calls != 2 {
		t.Errorf("an unavailable provider must be retried by the next check: %d calls", calls)
	}
	calls = 0
	rej := func(context.Context) (string, error) { calls++; return "", rejected{} }
	g.Do(t.Context(), KeyOf("b"), rej)
	_, shared, err := g.Do(t.Context(), KeyOf("b"), rej)
	if calls != 1 || !shared || !errors.As(err, new(rejected)) {
		t.Errorf("a rejected token must stay rejected for the window: %d calls, %v %v", calls, shared, err)
	}
}

func TestRefreshOutlivesTheLeadersRequest(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[string](clk.Now, 30*time.Second, 5*time.Second, 100)
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the browser went away
	v, _, err := g.Do(ctx, KeyOf("a"), func(ctx context.Context) (string, error) {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "ok", nil
	})
	if err != nil || v != "ok" {
		t.Errorf("refresh cancelled with the leader's request: %q %v", v, err)
	}
}

func TestTimeoutBoundsTheRefresh(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[string](clk.Now, 30*time.Second, 20*time.Millisecond, 100)
	_, _, err := g.Do(t.Context(), KeyOf("a"), func(ctx context.Context) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v", err)
	}
}

func TestWaiterGivesUpWithItsContext(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[string](clk.Now, 30*time.Second, 5*time.Second, 100)
	release := make(chan struct{})
	go g.Do(t.Context(), KeyOf("a"), func(context.Context) (string, error) { <-release; return "x", nil })
	for {
		g.mu.Lock()
		n := len(g.flights)
		g.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := g.Do(ctx, KeyOf("a"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
	close(release)
}

func TestBounded(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	g := New[int](clk.Now, time.Minute, time.Second, 10)
	for i := range 25 {
		g.Do(t.Context(), KeyOf(string(rune('a'+i))), func(context.Context) (int, error) { return i, nil })
	}
	if g.Len() > 10 {
		t.Errorf("kept %d results, bound is 10", g.Len())
	}
	// The newest is kept.
	if v, shared, _ := g.Do(t.Context(), KeyOf(string(rune('a'+24))), nil); !shared || v != 24 {
		t.Errorf("newest result dropped: %v %v", v, shared)
	}
}
