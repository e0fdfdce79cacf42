package backoff

import (
	"context"
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
