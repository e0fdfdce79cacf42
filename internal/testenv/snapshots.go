package testenv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
)

// RunSource runs src until the test ends and returns its snapshots; the
// source must return within 5s of the end of the test.
func RunSource(t testing.TB, src engine.Source) <-chan engine.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan engine.Snapshot, 100)
	done := make(chan struct{})
	go func() { src.Run(ctx, out); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("source did not return within 5s after its context ended")
		}
	})
	return out
}

// WaitSnapshot reads snapshots until cond holds for one, or fails after 10s.
func WaitSnapshot(t testing.TB, snaps <-chan engine.Snapshot, what string, cond func(engine.Snapshot) bool) engine.Snapshot {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var last engine.Snapshot
	for {
		select {
		case s := <-snaps:
			last = s
			if cond(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("no snapshot where %s within 10s; last (%d services):\n%s", what, last.Services, DescribeSnapshot(last))
		}
	}
}

// NoSnapshot fails if a snapshot arrives within d.
func NoSnapshot(t testing.TB, snaps <-chan engine.Snapshot, d time.Duration, why string) {
	t.Helper()
	select {
	case s := <-snaps:
		t.Fatalf("%s, yet a snapshot arrived:\n%s", why, DescribeSnapshot(s))
	case <-time.After(d):
	}
}

// DescribeSnapshot lists a snapshot's upstreams and server addresses.
func DescribeSnapshot(s engine.Snapshot) string {
	var b strings.Builder
	for _, name := range s.Upstreams.Names() {
		fmt.Fprintf(&b, "  %s: %v\n", name, Servers(s, name))
	}
	return b.String()
}

// Servers lists the addresses of the upstream name in s.
func Servers(s engine.Snapshot, name string) []string {
	var out []string
	for _, srv := range s.Upstreams[name].Servers {
		out = append(out, srv.Addr.String())
	}
	return out
}

// HasServers holds when the upstream name exists with exactly these
// server addresses, in order.
func HasServers(name string, want ...string) func(engine.Snapshot) bool {
	return func(s engine.Snapshot) bool {
		_, ok := s.Upstreams[name]
		return ok && slices.Equal(Servers(s, name), want)
	}
}
