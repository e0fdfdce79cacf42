package wrapper

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRecorder is a slog.Handler that keeps every record as one text line
// ("message key=value ..."), so tests can wait for an event in the log.
type logRecorder struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every record
	attrs   []slog.Attr
	parent  *logRecorder
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (r *logRecorder) logger() *slog.Logger { return slog.New(r) }

func (r *logRecorder) root() *logRecorder {
	if r.parent != nil {
		return r.parent
	}
	return r
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	add := func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve()); return true }
	for _, a := range r.attrs {
		add(a)
	}
	rec.Attrs(add)
	root := r.root()
	root.mu.Lock()
	root.lines = append(root.lines, b.String())
	close(root.changed)
	root.changed = make(chan struct{})
	root.mu.Unlock()
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr(nil), r.attrs...), as...), parent: r.root()}
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// count is the number of lines containing s, and a channel closed on the
// next record.
func (r *logRecorder) count(s string) (int, <-chan struct{}) {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	n := 0
	for _, l := range root.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n, root.changed
}

func (r *logRecorder) String() string {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return strings.Join(root.lines, "\n")
}

// waitN waits until n lines contain s, at most timeout; it reports
// whether they came.
func (r *logRecorder) waitN(s string, n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		got, changed := r.count(s)
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// wait fails the test unless a line containing s comes within timeout.
func (r *logRecorder) wait(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	if !r.waitN(s, 1, timeout) {
		t.Fatalf("no log line %q within %v; log:\n%s", s, timeout, r.String())
	}
}

// fakeRegistrar records calls; it never fails unless told to.
type fakeRegistrar struct {
	mu                       sync.Mutex
	registered, deregistered int
	lastRegistered           Options
}

func (f *fakeRegistrar) Register(_ context.Context, o Options) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered++
	f.lastRegistered = o
	return nil
}

func (f *fakeRegistrar) Deregister(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deregistered++
	return nil
}

func (f *fakeRegistrar) calls() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.registered, f.deregistered
}
