package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a sample of durations, in milliseconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value such that at least p% of the
// sample is less than or equal to it. It returns 0 for an empty sample.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize computes the summary of values given in milliseconds.
func Summarize(values []float64) Summary {
	if len(values) == 0 {
		return Summary{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Summary{
		N:    len(s),
		Min:  s[0],
		Mean: sum / float64(len(s)),
		P50:  Percentile(s, 50),
		P90:  Percentile(s, 90),
		P99:  Percentile(s, 99),
		Max:  s[len(s)-1],
	}
}

// SummarizeDurations is Summarize for durations.
func SummarizeDurations(ds []time.Duration) Summary {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = ms(d)
	}
	return Summarize(v)
}

// Ratio returns a/b, or 0 when b is 0 (no meaningful ratio).
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// CDF returns the points of the empirical cumulative distribution of
// values: x sorted ascending, y[i] the fraction of the sample ≤ x[i].
func CDF(values []float64) (x, y []float64) {
	x = slices.Clone(values)
	slices.Sort(x)
	y = make([]float64, len(x))
	for i := range x {
		y[i] = float64(i+1) / float64(len(x))
	}
	return x, y
}

// Bucket is one interval of a latency time series.
type Bucket struct {
	T      float64 `json:"t_s"` // start of the interval, seconds since the load began
	N      int     `json:"n"`   // requests scheduled in it
	Errors int     `json:"errors"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
}

// Series cuts requests into buckets of width seconds by scheduled time:
// at[i] is request i's scheduled time in seconds since the start,
// latency[i] its latency in ms, failed[i] whether it failed. Latencies of
// failed requests count too (a failure is not faster for being a failure).
// Buckets run from 0 to the last request, empty ones included.
func Series(at, latency []float64, failed []bool, width float64) []Bucket {
	if len(at) == 0 || width <= 0 {
		return nil
	}
	last := slices.Max(at)
	n := int(last/width) + 1
	lat := make([][]float64, n)
	out := make([]Bucket, n)
	for i := range out {
		out[i].T = float64(i) * width
	}
	for i, t := range at {
		if t < 0 {
			continue
		}
		b := int(t / width)
		out[b].N++
		if failed[i] {
			out[b].Errors++
		}
		lat[b] = append(lat[b], latency[i])
	}
	for i := range out {
		if len(lat[i]) == 0 {
			continue
		}
		slices.Sort(lat[i])
		out[i].P50 = Percentile(lat[i], 50)
		out[i].P99 = Percentile(lat[i], 99)
		out[i].Max = lat[i][len(lat[i])-1]
	}
	return out
}
