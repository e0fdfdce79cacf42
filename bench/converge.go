package bench

import (
	"slices"
	"time"
)

// Probe is one request of the propagation prober: sent on a fresh
// connection (so probes spread over every nginx worker), answered by
// Backend (the instance id in the body), or failed.
type Probe struct {
	Start   time.Time
	Backend string
	Err     bool
}

// Convergence decides when nginx started routing to the new set after a
// registry write that returned at t0, from the probes sent since.
//
// join (the instance target enters the set): the moment is the start of
// the first probe, sent at or after t0, that target answered.
//
// leave (target leaves the set): the moment is the start of the first
// probe sent after the last probe that target answered (or of the first
// probe at all, if none did), and it counts only once probes have gone on
// for quiet after it without target answering again: until then a stale
// worker could still show up.
//
// ok is false while the moment is not known yet. Probes need not be in
// order.
func Convergence(probes []Probe, t0 time.Time, target string, join bool, quiet time.Duration) (lat time.Duration, ok bool) {
	var ps []Probe
	for _, p := range probes {
		if !p.Start.Before(t0) {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b Probe) int { return a.Start.Compare(b.Start) })
	if join {
		for _, p := range ps {
			if !p.Err && p.Backend == target {
				return p.Start.Sub(t0), true
			}
		}
		return 0, false
	}
	first := 0
	for i, p := range ps {
		if !p.Err && p.Backend == target {
			first = i + 1
		}
	}
	if first >= len(ps) {
		return 0, false
	}
	if ps[len(ps)-1].Start.Sub(ps[first].Start) < quiet {
		return 0, false
	}
	return ps[first].Start.Sub(t0), true
}
