// Package runloop holds the parts of a registry source's Run that do not
// depend on the registry: refusing options it cannot run with and setting
// its client up with retries. The optional periodic resync is
// backoff.Every.
package runloop

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
)

// Check is the start-up check of a source of the registry kind: it needs
// addresses to reach (noun names them in the error), and opt must
// validate.
func Check(kind, noun string, addrs []string, opt interface{ Validate() error }) error {
	if len(addrs) == 0 {
		return fmt.Errorf("%s: no %s", kind, noun)
	}
	return opt.Validate()
}

// Tree is what the etcd and ZooKeeper sources' options share: a key
// layout read from a root, a timeout of the client's, and the optional
// resync period.
type Tree struct {
	Kind     string          // the registry: etcd, zookeeper
	Layout   string          // as configured
	Offered  []layout.Layout // the layouts this registry offers
	RootName string          // the option that holds the root: prefix, root
	Root     string
	RootNoun string // what the root is: key, znode
	// TimeoutName names Timeout in errors: dial timeout, session timeout.
	TimeoutName     string
	Timeout, Resync time.Duration
}

// Validate reports the first of t's options the source cannot run with.
func (t Tree) Validate() error {
	if _, err := layout.Parse(t.Layout, t.Offered...); err != nil {
		return fmt.Errorf("%s: %w", t.Kind, err)
	}
	if err := layout.CheckRoot(layout.CleanRoot(t.Root), t.RootNoun); err != nil {
		return fmt.Errorf("%s: %s %q: %w", t.Kind, t.RootName, t.Root, err)
	}
	if t.Timeout <= 0 {
		return fmt.Errorf("%s: %s %v: want a positive duration", t.Kind, t.TimeoutName, t.Timeout)
	}
	if t.Resync < 0 {
		return fmt.Errorf("%s: resync %v: want 0 (off) or a positive period", t.Kind, t.Resync)
	}
	return nil
}

// Usable reports whether err, the check of a source's options, is nil.
// When it is not, Usable logs it and waits for ctx to end: a source that
// cannot run sends nothing, so the engine keeps the last state it
// persisted.
func Usable(ctx context.Context, log *slog.Logger, err error) bool {
	if err == nil {
		return true
	}
	log.Error("unusable options; sending nothing", "err", err)
	<-ctx.Done()
	return false
}

// Connect calls open until it succeeds, waiting out b's delays between
// attempts; failed hears of each failure with the delay before the next
// attempt. ok is false when ctx ended first.
func Connect[C any](ctx context.Context, b *backoff.Backoff, open func() (C, error), failed func(err error, retryIn time.Duration)) (C, bool) {
	for {
		c, err := open()
		if err == nil {
			return c, true
		}
		d := b.Next()
		failed(err, d)
		if backoff.Sleep(ctx, d) != nil {
			var none C
			return none, false
		}
	}
}
