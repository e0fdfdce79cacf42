package daemon

import (
	"testing"
	"time"
)

// TestSplitResyncEvenWithoutReconcile: the split sink checks its targets
// for lost rules (a restarted nginx) at least every 5s, also when
// reconcile.interval is 0 (no drift check) or long.
func TestSplitResyncEvenWithoutReconcile(t *testing.T) {
	for _, c := range []struct{ reconcile, want time.Duration }{
		{0, 5 * time.Second},
		{time.Minute, 5 * time.Second},
		{time.Second, time.Second},
	} {
		if got := splitResync(c.reconcile); got != c.want {
			t.Errorf("reconcile.interval %v: split resync %v, want %v", c.reconcile, got, c.want)
		}
	}
}
