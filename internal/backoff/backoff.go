// Package backoff is capped exponential backoff with jitter, shared by the
// watch loops and the push retries, a sleep that honours its context, a
// ticker that may be off, and a steady poll for waits.
package backoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff doubles from Base up to Cap. Next returns a duration drawn
// uniformly from [d/2, d] ("equal jitter"), so many clients that failed
// together do not retry together, and no retry comes sooner than half the
// nominal delay. The zero value is unusable; use New.
type Backoff struct {
	base, cap time.Duration
	attempt   int
}

// New returns a backoff starting at base and never exceeding cap.
func New(base, cap time.Duration) *Backoff { return &Backoff{base: base, cap: cap} }

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	d := b.base << min(b.attempt, 30)
	if d > b.cap || d <= 0 {
		d = b.cap
	}
	b.attempt++
	return d/2 + rand.N(d/2+1)
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts returns how many delays were handed out since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Sleep waits for d or until ctx ends, whichever comes first, and reports
// ctx's error in the second case.
func Sleep(ctx context.Context, d time.Duration) error { return SleepOr(ctx, d, nil) }

// SleepOr is Sleep that also ends, without an error, when wake is closed
// (nil: never).
func SleepOr(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	case <-wake:
		return nil
	}
}

// Every ticks every period, for a periodic re-read behind a loop's other
// events; with period 0 (off) it never ticks. stop releases the ticker.
func Every(period time.Duration) (tick <-chan time.Time, stop func()) {
	if period <= 0 {
		return nil, func() {}
	}
	t := time.NewTicker(period)
	return t.C, t.Stop
}

// Poll calls try every period until it succeeds or ctx ends; then the
// error wraps ctx's and says what the last try found. It is for waiting
// on something expected soon (a port, a health check), where a steady
// period answers sooner than a growing backoff.
func Poll(ctx context.Context, period time.Duration, try func() error) error {
	for {
		err := try()
		if err == nil {
			return nil
		}
		if Sleep(ctx, period) != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
}
