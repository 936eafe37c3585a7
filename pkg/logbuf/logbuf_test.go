package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingWriter records each write it gets.
type countingWriter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.b.Write(p)
}

func (c *countingWriter) get() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String(), c.writes
}

// TestBatchesWholeLinesInOrder: many concurrent lines arrive whole, each
// goroutine's in order, in far fewer writes than lines.
func TestBatchesWholeLinesInOrder(t *testing.T) {
	out := &countingWriter{}
	w := New(out, time.Hour) // only full batches and Close write
	const goroutines, lines = 8, 2000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, `{"g":%d,"i":%d,"pad":"%s"}`+"\n", g, i, strings.Repeat("x", 40))
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	text, writes := out.get()
	got := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(got) != goroutines*lines {
		t.Fatalf("%d lines, want %d", len(got), goroutines*lines)
	}
	next := make([]int, goroutines)
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, `{"g":%d,"i":%d,`, &g, &i); err != nil {
			t.Fatalf("torn line %q", l)
		}
		if i != next[g] {
			t.Fatalf("goroutine %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	// Full batches are about 64 KB: ~16 here, more when several goroutines
	// find the batch full at once; one per line would be 16,000.
	if writes > 3*(len(text)/maxBatch+1) {
		t.Errorf("%d writes for %d lines (%d bytes): not batched", writes, len(got), len(text))
	}
}

// TestFlushesOnInterval: a line is out within the interval without Close.
func TestFlushesOnInterval(t *testing.T) {
	out := &countingWriter{}
	w := New(out, 10*time.Millisecond)
	defer w.Close()
	fmt.Fprintln(w, "hello")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if text, _ := out.get(); text == "hello\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the line was never flushed")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkWrite(b *testing.B) {
	w := New(&countingWriter{}, 100*time.Millisecond)
	defer w.Close()
	line := []byte(`{"time":"2026-12-02T18:00:00Z","level":"INFO","msg":"request","route":"/oauth2/auth","status":200}` + "\n")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = w.Write(line)
	}
}
