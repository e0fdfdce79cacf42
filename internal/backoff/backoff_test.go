package backoff

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNextGrowsWithJitterAndStaysUnderCap(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, n := range nominal {
		n *= time.Millisecond
		d := b.Next()
		if d < n/2 || d > n {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, n/2, n)
		}
	}
	if b.Attempts() != len(nominal) {
		t.Fatalf("Attempts = %d", b.Attempts())
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestJitterSpreadsDelays(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := New(time.Second, time.Minute)
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 first delays gave only %d distinct values: no jitter", len(seen))
	}
}

func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); err == nil {
		t.Fatal("Sleep ignored a cancelled context")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not return at once")
	}
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

func TestEveryOffNeverTicks(t *testing.T) {
	tick, stop := Every(0)
	defer stop()
	if tick != nil {
		t.Fatal("period 0 has a ticker")
	}
	tick, stop = Every(time.Millisecond)
	defer stop()
	select {
	case <-tick:
	case <-time.After(10 * time.Second):
		t.Fatal("period 1ms did not tick in 10s")
	}
}

// Poll returns once a try succeeds, and when ctx ends first it says so
// and what the last try found.
func TestPollRetriesUntilSuccessOrContextEnd(t *testing.T) {
	tries := 0
	err := Poll(context.Background(), time.Millisecond, func() error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("Poll = %v after %d tries; want nil after 3", err, tries)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tries = 0
	err = Poll(ctx, 5*time.Millisecond, func() error { tries++; return fmt.Errorf("refused %d", tries) })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fmt.Sprintf("(last error: refused %d)", tries)) {
		t.Fatalf("Poll = %v after %d tries; want the deadline and the last try's error", err, tries)
	}
	if tries < 2 {
		t.Fatalf("Poll tried %d times in 50ms at a 5ms period; want it to retry", tries)
	}
}

// SleepOr ends when wake is closed, long before d, without an error; a
// nil wake leaves it to d or ctx.
func TestSleepOrWakes(t *testing.T) {
	wake := make(chan struct{})
	close(wake)
	if err := SleepOr(context.Background(), time.Hour, wake); err != nil {
		t.Fatalf("closed wake: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := SleepOr(ctx, time.Hour, nil); err != context.Canceled {
		t.Fatalf("ended ctx, nil wake: %v, want context.Canceled", err)
	}
}
