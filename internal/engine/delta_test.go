package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// deltaWorld drives a registry through random changes, as a source sees
// them: each step is a new map (the one before is never changed) and the
// names whose entries differ.
type deltaWorld struct {
	rng  *rand.Rand
	cur  upstream.State
	port int
	// calm makes what the guards stop rare: a change of that kind turns
	// into an added server but one time in calm.
	calm int
}

// deltaNewcomers are mostly names of their own; a case twin or a
// reserved name comes now and then.
var deltaNewcomers = append(slices.Repeat([]string{"web", "api", "db", "cache", "auth", "mail", "search", "queue"}, 5), "Web", "API", "reserved-x")

func (w *deltaWorld) servers(n int) []upstream.Server {
	var out []upstream.Server
	for range n {
		w.port++
		out = append(out, server(fmt.Sprintf("10.1.%d.%d:%d", w.port/250, w.port%250+1, 8000+w.port%1000)))
	}
	return out
}

// step changes one to three upstreams and returns the new map and what it
// touched.
func (w *deltaWorld) step() (upstream.State, []string) {
	next := maps.Clone(w.cur)
	var touched []string
	for range 1 + w.rng.IntN(3) {
		names := slices.Sorted(maps.Keys(next))
		var name string
		if len(names) == 0 || w.rng.IntN(5) == 0 {
			name = deltaNewcomers[w.rng.IntN(len(deltaNewcomers))] // maybe a newcomer, maybe a case twin
			if w.calm > 0 && w.rng.IntN(w.calm) != 0 && strings.ToLower(name) != name || name == "reserved-x" && w.calm > 0 && w.rng.IntN(w.calm) != 0 {
				name = "db"
			}
		} else {
			name = names[w.rng.IntN(len(names))]
		}
		u, had := next[name]
		if !had {
			u = upstream.Upstream{Name: name}
		}
		list := slices.Clone(u.Servers)
		// Mostly what a healthy registry does; now and then what the
		// guards stop, which the next fresh list mends.
		r := w.rng.IntN(40)
		if (r <= 3 || r >= 21 && r <= 24) && w.calm > 0 && w.rng.IntN(w.calm) != 0 {
			r = 4
		}
		switch {
		case r <= 3 && had:
			delete(next, name)
			touched = append(touched, name)
			continue
		case r <= 14: // one more server
			list = append(list, w.servers(1)...)
		case r <= 20 && len(list) > 4: // one fewer
			list = slices.Delete(list, 0, 1)
		case r == 21: // most of them gone
			list = list[:len(list)/4]
		case r == 22: // a loopback server, which the rules refuse
			list = append(list, server("127.0.0.1:9"))
		case r == 23 && len(list) > 0: // backups only
			for i := range list {
				list[i].Backup = true
			}
		case r == 24: // hash, which takes no backup
			u.Balance = upstream.Balance{Method: upstream.Hash, Key: "$remote_addr"}
			if w.rng.IntN(2) == 0 {
				b := w.servers(1)[0]
				b.Backup = true
				list = append(list, b)
			}
		case r <= 32: // a fresh upstream of several servers
			list = w.servers(max(len(list), 2) + w.rng.IntN(3))
			u.Balance = upstream.Balance{}
		default: // a weight changes
			if len(list) > 0 {
				list[0].Weight = 1 + w.rng.IntN(9)
			}
		}
		u.Servers = list
		u.Sort()
		next[name] = u
		touched = append(touched, name)
	}
	w.cur = next
	return next, touched
}

// TestPlanDeltaMatchesPlan runs random series of changes through one
// Planner's PlanDelta, told what each step touched, and checks every
// result against Plan's without memory: the same state, holds, recheck
// and drops. Some steps say nothing (zero Delta), some fail to persist
// (prev stays), some name more than changed, and the guards change now
// and then.
func TestPlanDeltaMatchesPlan(t *testing.T) {
	deny := upstream.AddressPolicy{Deny: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}}
	guardSets := []Guards{
		{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.5, ConfirmAfter: 3 * time.Second},
		{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.9, ConfirmAfter: 0},
		{MinServices: 1, MaxDrop: 0.3, MaxTotalDrop: 0.9, ConfirmAfter: 2 * time.Second, Reserved: []string{"reserved-x"}},
		// now and then (a reload's guards): every drop held, a denied
		// range, a reserved name in use
		{MinServices: 3, MaxDrop: 0, MaxTotalDrop: 0, ConfirmAfter: time.Second},
		{MinServices: 1, MaxDrop: 1, MaxTotalDrop: 1, ConfirmAfter: time.Second, Addresses: deny},
		{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.9, ConfirmAfter: 2 * time.Second, Reserved: []string{"reserved-x", "db"}},
	}
	fast, total, clean := 0, 0, 0
	guardsSeen := map[string]int{}
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 7))
		w := &deltaWorld{rng: rng, cur: upstream.State{}}
		if seed%2 == 0 {
			w.calm = 20
		}
		for range 4 {
			w.step()
		}
		var p Planner
		drops := Drops{}
		now := time.Unix(1000, 0)
		g := guardSets[0]
		prev := upstream.State{}
		var since upstream.State
		var pending []string // touched since the last plan
		known := false       // pending is complete
		for i := range 150 {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			if rng.IntN(40) == 0 {
				g = guardSets[rng.IntN(len(guardSets))]
			}
			if rng.IntN(10) == 0 {
				g = guardSets[rng.IntN(3)] // back to the usual ones
			}
			cur, touched := w.step()
			pending = append(pending, touched...)
			switch rng.IntN(8) {
			case 0, 1: // a name that did not change
				names := slices.Sorted(maps.Keys(cur))
				if len(names) > 0 {
					pending = append(pending, names[rng.IntN(len(names))])
				}
			case 2: // names in neither map, or in another case
				pending = append(pending, "absent-name", "WEB", "Api")
			}
			if rng.IntN(3) == 0 {
				continue // debounced: the next plan takes this step and the next
			}
			s := Snapshot{Upstreams: cur, Services: len(cur) + rng.IntN(2)}
			switch rng.IntN(30) {
			case 0:
				s.Doubt = "no known leader"
			case 1:
				s.Services = 0
			}
			snaps := []Snapshot{s}
			d := Delta{}
			if known && rng.IntN(15) != 0 {
				d = Delta{Since: since, Touched: slices.Clone(pending)}
			}
			sent := cur.Clone()
			want, wantHolds, wantAt := Plan(prev, snaps, g, drops, now)
			got, gotHolds, gotAt, gotTouched := p.PlanDelta(prev, snaps, g, now, d)
			if !cur.Equal(sent) {
				t.Fatalf("seed %d, step %d: the planner changed the snapshot's map", seed, i)
			}
			if !got.Equal(want) || !slices.Equal(gotHolds, wantHolds) || !gotAt.Equal(wantAt) || !maps.Equal(drops, p.Drops) {
				t.Fatalf("seed %d, step %d (delta %v, fast %v):\nPlanDelta gave %v\n  holds %v, recheck %v, drops %v\nPlan gave %v\n  holds %v, recheck %v, drops %v",
					seed, i, d.Touched, gotTouched != nil, got, gotHolds, gotAt, p.Drops, want, wantHolds, wantAt, drops)
			}
			total++
			if len(wantHolds) == 0 {
				clean++
			}
			for _, h := range wantHolds {
				guardsSeen[h.Guard]++
			}
			if gotTouched != nil {
				fast++
				// next differs from prev only in the names it says.
				c := upstream.Diff(prev, got)
				for _, name := range append(c.Set, c.Removed...) {
					if !slices.Contains(gotTouched, name) {
						t.Fatalf("seed %d, step %d: %s changed but PlanDelta's touched %v leaves it out", seed, i, name, gotTouched)
					}
				}
			}
			since, pending, known = cur, nil, true
			if rng.IntN(10) != 0 { // else the persist failed: prev stays
				prev = got // the engine applies what its planner gave (equal to want)
			}
		}
	}
	t.Logf("%d of %d plans took the delta path; %d held nothing; holds by guard %v", fast, total, clean, guardsSeen)
	if fast < total/4 {
		t.Errorf("only %d of %d plans took the delta path: the test no longer exercises it", fast, total)
	}
}

// TestPlanDeltaLooksAtEverythingWhenItCannotTrustTheDelta: a delta
// relative to another map than the one planned last, or a prev that is
// not the state it returned, plans in full.
func TestPlanDeltaLooksAtEverythingWhenItCannotTrustTheDelta(t *testing.T) {
	g := Guards{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.9, ConfirmAfter: time.Minute}
	a := state(up("web", "10.0.0.1:80", "10.0.0.2:80"), up("api", "10.0.1.1:80"))
	b := maps.Clone(a)
	b["web"] = up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name  string
		since upstream.State
		prev  func(planned upstream.State) upstream.State
		fast  bool
	}{
		{"the map planned last, applied", a, func(p upstream.State) upstream.State { return p }, true},
		{"another map than the one planned", a.Clone(), func(p upstream.State) upstream.State { return p }, false},
		{"a prev other than the plan", a, func(p upstream.State) upstream.State { return p.Clone() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Planner
			planned, _, _, _ := p.PlanDelta(upstream.State{}, []Snapshot{{Upstreams: a, Services: 2}}, g, now, Delta{})
			_, holds, _, touched := p.PlanDelta(tc.prev(planned), []Snapshot{{Upstreams: b, Services: 2}}, g, now, Delta{Since: tc.since, Touched: []string{"web"}})
			if len(holds) > 0 || (touched != nil) != tc.fast {
				t.Fatalf("holds %v, delta path %v; want %v", holds, touched != nil, tc.fast)
			}
			if tc.fast && !slices.Equal(touched, []string{"web"}) {
				t.Fatalf("touched %v, want [web]", touched)
			}
		})
	}
}

func BenchmarkPlanDeltaOneChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			base := scaleState(n, 10)
			snaps := [2]upstream.State{withOneChange(base, "svc_00007", 9001), withOneChange(base, "svc_00007", 9002)}
			var p Planner
			prev, _, _, _ := p.PlanDelta(upstream.State{}, []Snapshot{{Upstreams: base, Services: n}}, scaleGuards, time.Now(), Delta{})
			since := base
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				s := snaps[i%2]
				next, holds, _, touched := p.PlanDelta(prev, []Snapshot{{Upstreams: s, Services: n}}, scaleGuards, time.Now(), Delta{Since: since, Touched: []string{"svc_00007"}})
				if len(holds) > 0 || touched == nil {
					b.Fatalf("plan %d: holds %v, delta path %v", i, holds, touched != nil)
				}
				prev, since = next, s
			}
		})
	}
}

// runEngine runs an engine over one source, a store and sinks until the
// test ends; fullEvery, when not 0, is its FullPlanEvery.
func runEngine(t *testing.T, src Source, st Store, fullEvery time.Duration, sinks ...Sink) *Engine {
	t.Helper()
	e := New([]Source{src}, st, sinks, Guards{MinServices: 1}, Wait{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	e.FullPlanEvery = fullEvery
	return running(t, e)
}

// deltaStore is memStore that also saves from a diff, and records the
// diffs it was given.
type deltaStore struct {
	memStore
	mu     sync.Mutex
	deltas []upstream.Changes
	prevs  []upstream.State
}

func (d *deltaStore) SaveDelta(prev, s upstream.State, c upstream.Changes) error {
	d.mu.Lock()
	d.deltas = append(d.deltas, c)
	d.prevs = append(d.prevs, prev)
	d.mu.Unlock()
	return d.memStore.Save(s)
}

// TestEngineSavesWhatTheSnapshotTouched: a snapshot that says what it
// touched is planned, diffed and saved from those names alone; the store
// learns the exact change, from the state it saved last; a snapshot that
// says nothing is compared in full, with the same outcome.
func TestEngineSavesWhatTheSnapshotTouched(t *testing.T) {
	web, api := up("web", "10.0.0.1:80", "10.0.0.2:80"), up("api", "10.0.1.1:80")
	j := newJournal(upstream.State{})
	ds := &deltaStore{memStore: memStore{j}}
	src := make(chanSource)
	e := runEngine(t, src, ds, 0, recSink{j})

	first := state(web, api)
	src <- Snapshot{Upstreams: first, Services: 2}
	j.wait(t, 2) // save, push
	web3 := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	second := maps.Clone(first)
	second["web"] = web3
	src <- Snapshot{Upstreams: second, Services: 2, Touched: []string{"web"}}
	j.wait(t, 4)
	third := maps.Clone(second)
	delete(third, "api")
	third["db"] = up("db", "10.0.2.1:80")
	src <- Snapshot{Upstreams: third, Services: 2} // says nothing
	j.wait(t, 6)

	if full, delta := testutil.ToFloat64(e.m.plans.WithLabelValues("full")), testutil.ToFloat64(e.m.plans.WithLabelValues("delta")); full != 2 || delta != 1 {
		t.Errorf("%v full plans and %v delta plans, want 2 and 1 (the first snapshot and the one that said nothing in full)", full, delta)
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	want := []upstream.Changes{
		{Set: []string{"api", "web"}},
		{Set: []string{"web"}},
		{Set: []string{"db"}, Removed: []string{"api"}},
	}
	if len(ds.deltas) != len(want) {
		t.Fatalf("the store got %d diffs %v, want %v", len(ds.deltas), ds.deltas, want)
	}
	for i, w := range want {
		if !slices.Equal(ds.deltas[i].Set, w.Set) || !slices.Equal(ds.deltas[i].Removed, w.Removed) {
			t.Errorf("save %d: diff %+v, want %+v", i, ds.deltas[i], w)
		}
	}
	if !upstream.SameState(ds.prevs[1], j.states[0]) || !upstream.SameState(ds.prevs[2], j.states[2]) {
		t.Error("a diff was not given from the state saved last")
	}
	for i, s := range []upstream.State{first, second, third} {
		if !j.states[2*i].Equal(s) || !j.states[2*i+1].Equal(s) {
			t.Errorf("step %d: saved %v, pushed %v, want %v", i, j.states[2*i], j.states[2*i+1], s)
		}
	}
}

func TestDiffNamesIsDiffOverTheNamesGiven(t *testing.T) {
	old := state(up("web", "10.0.0.1:80"), up("api", "10.0.1.1:80"), up("db", "10.0.2.1:80"))
	next := maps.Clone(old)
	next["web"] = up("web", "10.0.0.2:80")
	delete(next, "api")
	next["cache"] = up("cache", "10.0.3.1:80")
	got := upstream.DiffNames(old, next, []string{"web", "api", "cache", "db", "web", "absent"})
	want := upstream.Diff(old, next)
	if !slices.Equal(got.Set, want.Set) || !slices.Equal(got.Removed, want.Removed) {
		t.Fatalf("DiffNames %+v, Diff %+v", got, want)
	}
}

// TestEngineComparesEverythingNowAndThen: a source that leaves a change
// out of Touched misleads the delta plans, but the periodic full plan
// finds the change with no new snapshot, applies it, and says why.
func TestEngineComparesEverythingNowAndThen(t *testing.T) {
	web, api := up("web", "10.0.0.1:80", "10.0.0.2:80"), up("api", "10.0.1.1:80")
	j := newJournal(upstream.State{})
	src := make(chanSource)
	e := runEngine(t, src, memStore{j}, 500*time.Millisecond, recSink{j}) // far beyond the few ms handled takes to look
	first := state(web, api)
	src <- Snapshot{Upstreams: first, Services: 2}
	j.wait(t, 2) // save, push
	second := maps.Clone(first)
	second["web"] = up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	src <- Snapshot{Upstreams: second, Services: 2, Touched: []string{"api"}} // web left out
	j.handled(t, e, 2, 2)                                                     // the delta plan saw no change
	ev := j.wait(t, 4)
	if !slices.Equal(ev, []string{"save", "push", "save", "push"}) || !j.states[2].Equal(second) {
		t.Fatalf("journal %v; the full compare saved %v, want %v", ev, j.states[2], second)
	}
	// The status is published once the apply is done, just after the push.
	deadline := time.Now().Add(5 * time.Second)
	for st := e.Status(); len(st.History) == 0 || st.History[len(st.History)-1].Cause != "full compare"; st = e.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("history %+v, want the change with cause full compare", st.History)
		}
		time.Sleep(time.Millisecond)
	}
}

// touchSink records the Touched of every change it is handed.
type touchSink struct {
	mu      sync.Mutex
	touched [][]string
	changed chan struct{}
}

func (r *touchSink) Update(c Change) {
	r.mu.Lock()
	r.touched = append(r.touched, c.Touched)
	r.mu.Unlock()
	c.Ack()
	r.changed <- struct{}{}
}
func (r *touchSink) Run(stop, _ context.Context) { <-stop.Done() }
func (r *touchSink) SinkStatus() SinkStatus {
	return SinkStatus{Kind: "touch", Name: "touch", Ready: true}
}

// TestFullCompareHealsAnOmissionThatCameWithAChange: a snapshot changes
// web and api but names only api; the delta saves and pushes api alone,
// while the applied state is the snapshot's map, web's change in it. The
// periodic full compare then has the store save the whole state and the
// sinks compare every upstream (Touched nil), which is what brings web
// to them. (Found by review.)
func TestFullCompareHealsAnOmissionThatCameWithAChange(t *testing.T) {
	web, api := up("web", "10.0.0.1:80", "10.0.0.2:80"), up("api", "10.0.1.1:80")
	j := newJournal(upstream.State{})
	ds := &deltaStore{memStore: memStore{j}}
	ts := &touchSink{changed: make(chan struct{}, 100)}
	src := make(chanSource)
	runEngine(t, src, ds, 300*time.Millisecond, ts)
	first := state(web, api)
	src <- Snapshot{Upstreams: first, Services: 2}
	<-ts.changed
	second := maps.Clone(first)
	second["web"] = up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	second["api"] = up("api", "10.0.1.1:80", "10.0.1.2:80")
	src <- Snapshot{Upstreams: second, Services: 2, Touched: []string{"api"}} // web left out
	<-ts.changed                                                              // the delta: api alone
	<-ts.changed                                                              // the full compare
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.touched) != 3 || !slices.Equal(ts.touched[1], []string{"api"}) || ts.touched[2] != nil {
		t.Fatalf("the sink was handed touched %q, want [api] then nil (compare every upstream)", ts.touched)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if last := j.states[len(j.states)-1]; !last.Equal(second) || j.events[len(j.events)-1] != "save" {
		t.Fatalf("journal %v; the full compare saved %v, want a full Save of %v", j.events, last, second)
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if len(ds.deltas) != 2 {
		t.Fatalf("the store was given %d diffs %+v, want 2: the compare saves in full", len(ds.deltas), ds.deltas)
	}
}
