package bench

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	cases := []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"an empty sample has no percentile, 0 by convention", nil, 50, 0},
		{"one value is every percentile", []float64{7}, 99, 7},
		{"p50 of 1..10 is the 5th value (nearest rank)", ten, 50, 5},
		{"p90 of 1..10 is the 9th value", ten, 90, 9},
		{"p99 of 1..10 is the largest value", ten, 99, 10},
		{"p100 is the maximum", ten, 100, 10},
		{"p0 is the minimum", ten, 0, 1},
		{"p99 of 1..100 is 99", hundred, 99, 99},
		{"p50 of 1..100 is 50", hundred, 50, 50},
		{"p99.9 of 1..100 rounds the rank up to the maximum", hundred, 99.9, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Percentile(c.sorted, c.p); got != c.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", c.sorted, c.p, got, c.want)
			}
		})
	}
}

func TestSummarizeDoesNotNeedSortedInputAndLeavesItAlone(t *testing.T) {
	in := []float64{10, 1, 4, 3, 2}
	s := Summarize(in)
	want := Summary{N: 5, Min: 1, Mean: 4, P50: 3, P90: 10, P99: 10, Max: 10}
	if s != want {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if in[0] != 10 || in[1] != 1 {
		t.Errorf("input was reordered: %v", in)
	}
	if (Summarize(nil) != Summary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", Summarize(nil))
	}
}

func TestSummarizeDurationsInMilliseconds(t *testing.T) {
	s := SummarizeDurations([]time.Duration{1500 * time.Microsecond, 3 * time.Millisecond})
	if s.Min != 1.5 || s.Max != 3 || s.Mean != 2.25 {
		t.Errorf("got %+v", s)
	}
}

func TestRatio(t *testing.T) {
	if Ratio(1, 4) != 0.25 {
		t.Error("1/4")
	}
	if Ratio(3, 0) != 0 {
		t.Error("a ratio to zero must be 0 (no meaningful ratio), not Inf")
	}
}

func TestCDF(t *testing.T) {
	x, y := CDF([]float64{30, 10, 20, 40})
	wantX := []float64{10, 20, 30, 40}
	wantY := []float64{0.25, 0.5, 0.75, 1}
	for i := range wantX {
		if x[i] != wantX[i] || y[i] != wantY[i] {
			t.Fatalf("CDF = %v %v, want %v %v", x, y, wantX, wantY)
		}
	}
}

func TestSeriesBucketsBySecondIncludingEmptyOnes(t *testing.T) {
	at := []float64{0.1, 0.5, 0.9, 2.2, 2.3}
	lat := []float64{1, 2, 100, 5, 7}
	failed := []bool{false, false, true, false, false}
	b := Series(at, lat, failed, 1)
	if len(b) != 3 {
		t.Fatalf("%d buckets, want 3 (0s, 1s empty, 2s): %+v", len(b), b)
	}
	if b[0].N != 3 || b[0].Errors != 1 || b[0].P50 != 2 || b[0].P99 != 100 || b[0].Max != 100 {
		t.Errorf("bucket 0 = %+v", b[0])
	}
	if b[1].N != 0 || b[1].T != 1 {
		t.Errorf("bucket 1 should be empty at t=1: %+v", b[1])
	}
	if b[2].N != 2 || b[2].P50 != 5 || b[2].Max != 7 || b[2].T != 2 {
		t.Errorf("bucket 2 = %+v", b[2])
	}
	if Series(nil, nil, nil, 1) != nil {
		t.Error("no requests, no buckets")
	}
	if math.IsNaN(b[1].P99) {
		t.Error("an empty bucket must not hold NaN (JSON cannot encode it)")
	}
}
