// Package history keeps what the engine applied recently, for the status
// page and `swallowkeeper status`: the last changes (a fixed-size ring) and
// each upstream's server count over a time window. Both are plain data with
// bounded memory; the caller serialises access.
package history

import (
	"maps"
	"slices"
	"time"
)

// Causes of a change.
const (
	CauseRegistry = "registry"      // a registry snapshot
	CauseStart    = "start"         // the persisted state handed to nginx at start or after a reload
	CauseHUP      = "hup"           // the first plan under a configuration reloaded on SIGHUP
	CauseRetry    = "persist retry" // a failed write tried again
	CauseConfirm  = "guard confirm" // a held drop confirmed by a later read
	CauseDrift    = "drift"         // nginx differed from the applied state
	CauseCompare  = "full compare"  // the periodic plan over every upstream found what a change's delta left out
)

// Event is one applied change.
type Event struct {
	At       time.Time `json:"at"`
	Upstream string    `json:"upstream"` // "" = every upstream (a global hold)
	// Change is what happened: "+ server", "- server", "~ server",
	// "+ upstream", "- upstream", "~ keepalive", "hold", "release",
	// "drift repair".
	Change string `json:"change"`
	Detail string `json:"detail,omitempty"` // the server, what changed, the guard's reason
	Cause  string `json:"cause"`
}

// Ring keeps the last N events. The zero value keeps none.
type Ring struct {
	buf  []Event
	next int // where the next event goes
	full bool
}

// NewRing returns a ring that keeps the last n events.
func NewRing(n int) *Ring { return &Ring{buf: make([]Event, max(n, 0))} }

// Add records e, forgetting the oldest event when the ring is full.
func (r *Ring) Add(e Event) {
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
}

// Events returns a copy of the kept events, oldest first.
func (r *Ring) Events() []Event {
	if !r.full {
		return slices.Clone(r.buf[:r.next])
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}

// Point is an upstream's server count from At on.
type Point struct {
	At      time.Time `json:"at"`
	Servers int       `json:"servers"`
}

// Timeline keeps each upstream's server counts over Window: every point in
// it, and the last one before it (the count the window starts with). An
// upstream keeps at most MaxPoints points; the oldest go first.
type Timeline struct {
	Window    time.Duration
	MaxPoints int
	series    map[string][]Point
	touched   map[string]bool // recorded since the last All or Update
}

// Record notes that the upstream has n servers from at on (0 when it was
// removed), and forgets what fell out of the window.
func (t *Timeline) Record(name string, at time.Time, n int) {
	if t.series == nil {
		t.series = map[string][]Point{}
	}
	s := t.series[name]
	if len(s) > 0 && s[len(s)-1].Servers == n {
		return // no change in the count
	}
	s = append(s, Point{at, n})
	t.series[name] = prune(s, at.Add(-t.Window), t.MaxPoints)
	if t.touched == nil {
		t.touched = map[string]bool{}
	}
	t.touched[name] = true
}

// Has reports whether the upstream has any point yet.
func (t *Timeline) Has(name string) bool { return t != nil && len(t.series[name]) > 0 }

// Series returns a copy of the upstream's points that matter at now:
// those in the window and the last one before it.
func (t *Timeline) Series(name string, now time.Time) []Point {
	if t == nil {
		return nil
	}
	return prune(slices.Clone(t.series[name]), now.Add(-t.Window), t.MaxPoints)
}

// Expire forgets the upstreams whose last point, a removal (0 servers),
// is older than the window: upstream names come from the registry, and a
// churn of names must not grow the timeline without end.
func (t *Timeline) Expire(now time.Time) {
	from := now.Add(-t.Window)
	for name, s := range t.series {
		if last := s[len(s)-1]; last.Servers == 0 && !last.At.After(from) {
			delete(t.series, name)
		}
	}
}

// Published is every upstream's series as All or Update gave it, read
// only: the status a change publishes holds one, and Update copies only
// the shards of the upstreams recorded since, not every upstream's series
// (10,000 of them at scale). The zero Published holds none.
type Published struct {
	shards *[publishedShards]map[string][]Point
}

const publishedShards = 64

func shardOf(name string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return int(h % publishedShards)
}

// Get returns the upstream's series.
func (p Published) Get(name string) ([]Point, bool) {
	if p.shards == nil {
		return nil, false
	}
	s, ok := p.shards[shardOf(name)][name]
	return s, ok
}

// Names returns the upstreams with a series, sorted.
func (p Published) Names() []string {
	if p.shards == nil {
		return nil
	}
	var names []string
	for _, m := range p.shards {
		for name := range m {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// All returns every upstream's series at now.
func (t *Timeline) All(now time.Time) Published {
	out := Published{shards: new([publishedShards]map[string][]Point)}
	for name := range t.series {
		if s := t.Series(name, now); len(s) > 0 {
			m := &out.shards[shardOf(name)]
			if *m == nil {
				*m = map[string][]Point{}
			}
			(*m)[name] = s
		}
	}
	clear(t.touched)
	return out
}

// Update is All made from last, an earlier answer of All or Update that
// nothing changes: only the upstreams recorded since are copied again,
// the others' series are last's, as pruned then. A change then copies
// the shards of what changed, not every upstream's points; a caller that
// must show the window moving calls All now and then. last is not
// modified.
func (t *Timeline) Update(last Published, now time.Time) Published {
	if last.shards == nil {
		return t.All(now)
	}
	out := Published{shards: new([publishedShards]map[string][]Point)}
	*out.shards = *last.shards // the same shard maps, until one is copied
	var copied [publishedShards]bool
	for name := range t.touched {
		i := shardOf(name)
		if !copied[i] {
			out.shards[i], copied[i] = maps.Clone(out.shards[i]), true
			if out.shards[i] == nil {
				out.shards[i] = map[string][]Point{}
			}
		}
		if s := t.Series(name, now); len(s) > 0 {
			out.shards[i][name] = s
		} else {
			delete(out.shards[i], name)
		}
	}
	clear(t.touched)
	return out
}

// prune drops the points before from except the last of them, and the
// oldest beyond limit (0 = no limit).
func prune(s []Point, from time.Time, limit int) []Point {
	i := 0
	for i+1 < len(s) && !s[i+1].At.After(from) {
		i++
	}
	s = s[i:]
	if limit > 0 && len(s) > limit {
		s = s[len(s)-limit:]
	}
	return s
}
