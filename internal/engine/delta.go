package engine

import (
	"slices"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Delta tells PlanDelta what changed since the plan before: the single
// snapshot's map differs from Since, the map that plan took, only in the
// Touched names (present in either, or both). The zero Delta says
// nothing: the plan looks at every upstream.
type Delta struct {
	Since   upstream.State
	Touched []string
}

// fastMemory is what a clean plan leaves for the next delta plan: the
// source's map it took (merged), the state it returned (next, equal to
// merged in content: a plan without holds changes nothing), that state's
// server count and folded names. A plan is clean when it held nothing,
// no drop awaits confirmation, and every upstream of next is allowed by
// the rules (name not reserved, every address allowed), so that next,
// once applied as the next plan's prev, refuses nothing.
type fastMemory struct {
	merged, next upstream.State
	total        int
	folded       map[string]string // folded name → name, of next
}

// PlanDelta is Plan with a Delta: when the plan before was clean, prev is
// the state it returned (applied since), and d names what changed in the
// single source's map since, it checks only the touched upstreams, and
// returns in touched the names in which next may differ from prev. Only
// a change that every guard lets through as it is takes that path; any
// other (a hold, a drop to confirm, a case collision, an upstream without
// a primary server, a refused address) is planned as Plan does, and then
// touched is nil. Results always equal Plan's; TestPlanDeltaMatchesPlan
// compares them over random series of changes.
func (p *Planner) PlanDelta(prev upstream.State, snaps []Snapshot, g Guards, now time.Time, d Delta) (next upstream.State, holds []Hold, recheck time.Time, touched []string) {
	if next, touched, ok := p.planTouched(prev, snaps, g, d); ok {
		return next, nil, time.Time{}, touched
	}
	p.fast = nil
	next, holds, recheck = p.Plan(prev, snaps, g, now)
	if len(snaps) == 1 && len(holds) == 0 && recheck.IsZero() && len(p.Drops) == 0 {
		p.arm(snaps[0].Upstreams, next, g)
	}
	return next, holds, recheck, nil
}

// arm remembers a clean plan for the next delta plan, when every
// upstream of next is allowed by the rules.
func (p *Planner) arm(merged, next upstream.State, g Guards) {
	if p.allowed == nil {
		p.allowed = make(map[string][]upstream.Server, len(next))
	}
	f := &fastMemory{merged: merged, next: next, folded: make(map[string]string, len(next))}
	for name, u := range next {
		if !p.allow(name, u, g) {
			return
		}
		f.total += len(u.Servers)
		f.folded[upstream.FoldKey(name)] = name
	}
	p.fast = f
}

// allow reports whether the rules allow upstream u under name, and
// remembers an allowed list for withoutRefused.
func (p *Planner) allow(name string, u upstream.Upstream, g Guards) bool {
	if p.allowed == nil {
		p.allowed = map[string][]upstream.Server{}
	}
	if ok, known := p.allowed[name]; known && upstream.SameServers(ok, u.Servers) {
		return true
	}
	if registry.IsReserved(g.Reserved, name) {
		return false
	}
	for _, s := range u.Servers {
		if g.Addresses.Check(s.Addr.Addr()) != nil {
			return false
		}
	}
	p.allowed[name] = u.Servers
	return true
}

// planTouched is the delta plan's path: ok is false when it cannot
// prove that Plan would return the snapshot's map with no hold.
func (p *Planner) planTouched(prev upstream.State, snaps []Snapshot, g Guards, d Delta) (upstream.State, []string, bool) {
	f := p.fast
	if f == nil || d.Touched == nil || len(snaps) != 1 || len(p.Drops) > 0 || !sameGuards(p.guards, g) ||
		!upstream.SameState(d.Since, f.merged) || !upstream.SameState(prev, f.next) {
		return nil, nil, false
	}
	s := snaps[0]
	cur := s.Upstreams
	if cur == nil || s.Doubt != "" || s.Services == 0 || s.Services < g.MinServices {
		return nil, nil, false
	}
	touched := slices.Clone(d.Touched)
	slices.Sort(touched)
	touched = slices.Compact(touched)

	// The folded names of cur: those of prev, less what went, plus what
	// came. A name that came may not fold like one that stays.
	total := f.total
	for _, t := range touched {
		if old, ok := prev[t]; ok {
			total -= len(old.Servers)
			if f.folded[upstream.FoldKey(t)] == t {
				delete(f.folded, upstream.FoldKey(t))
			}
		}
	}
	for _, t := range touched {
		u, ok := cur[t]
		if !ok {
			continue
		}
		k := upstream.FoldKey(t)
		if other, taken := f.folded[k]; taken && other != t {
			return nil, nil, false // a case collision: Plan holds one of them
		}
		f.folded[k] = t
		total += len(u.Servers)
		// keepLastServers, checked and, for the plan after, withoutRefused
		// would each stop it.
		if !u.HasPrimary() || u.CheckBalance() != nil || !p.allow(t, u, g) {
			return nil, nil, false
		}
	}
	if g.ConfirmAfter > 0 {
		for _, t := range touched {
			old, ok := prev[t]
			if !ok || !old.HasPrimary() {
				continue
			}
			n := 0
			if u, ok := cur[t]; ok {
				n = len(u.Servers)
			} else if renamed, ok := f.folded[upstream.FoldKey(t)]; ok {
				n = len(cur[renamed].Servers) // the same upstream for nginx
			}
			if dropShare(len(old.Servers), n) > g.MaxDrop {
				return nil, nil, false
			}
		}
		if dropShare(f.total, total) > g.MaxTotalDrop {
			return nil, nil, false
		}
	}

	// Plan would return cur as it is: keep what it remembers in step.
	for _, t := range touched {
		u, ok := cur[t]
		switch {
		case !ok:
			delete(p.allowed, t)
			delete(p.valid, t)
			delete(p.distinct, t)
		default:
			if p.valid != nil {
				p.valid[t] = validUpstream{u.Servers, u.Balance}
			}
			if p.distinct != nil {
				p.distinct[t] = struct{}{}
			}
		}
	}
	f.merged, f.next, f.total = cur, cur, total
	return cur, touched, true
}
