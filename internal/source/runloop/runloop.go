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
