// Package logbuf batches log lines into few writes.
//
// extauth logs one line per request, and a check takes microseconds: a
// write(2) per line to stdout (a pipe to the container runtime) costs as
// much as a good part of the check. A Writer keeps the lines in memory and
// writes them out together every interval, or sooner when a batch fills
// up, so thousands of checks per second cost a few writes per second.
// Lines are written whole and in order; what a crash catches in the buffer
// (at most one interval's worth) is lost, which Close prevents on a normal
// shutdown.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// maxBatch is the most bytes kept before a write, whatever the interval.
const maxBatch = 64 << 10

// Writer is an io.Writer for a slog handler; safe for concurrent use.
type Writer struct {
	out io.Writer

	mu  sync.Mutex // guards buf
	buf []byte

	flushMu sync.Mutex // one write to out at a time, in order
	spare   []byte     // the other buffer, owned by the flusher

	stop chan struct{}
	done chan struct{}
}

// New starts a Writer that flushes to out every interval.
func New(out io.Writer, interval time.Duration) *Writer {
	w := &Writer{
		out:   out,
		buf:   make([]byte, 0, maxBatch),
		spare: make([]byte, 0, maxBatch),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go w.run(interval)
	return w
}

func (w *Writer) run(interval time.Duration) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = w.Flush()
		case <-w.stop:
			return
		}
	}
}

// Write keeps p (one log line, as slog's handlers write them) for the next
// flush; a full batch is flushed at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	full := len(w.buf) >= maxBatch
	w.mu.Unlock()
	if full {
		if err := w.Flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes out what is kept.
func (w *Writer) Flush() error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	batch := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	var err error
	if len(batch) > 0 {
		_, err = w.out.Write(batch)
	}
	if cap(batch) <= 4*maxBatch { // don't keep a buffer a burst blew up
		w.spare = batch[:0]
	} else {
		w.spare = make([]byte, 0, maxBatch)
	}
	return err
}

// Close stops the interval and flushes; later writes are flushed by Flush
// only.
func (w *Writer) Close() error {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return w.Flush()
}
