package engine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Snapshot is the complete desired state one source saw at one moment.
type Snapshot struct {
	// Upstreams holds every upstream the registry knows, built only from
	// validated instances. An upstream with no servers is one whose instances
	// are all unhealthy or invalid: it is known, and must not be emptied.
	// Neither the map nor its server lists change once sent: the engine
	// keeps the map as its applied state while nothing is held.
	Upstreams upstream.State
	// Services counts the registry services seen after filtering; the
	// min_services guard compares against it.
	Services int
	// Dropped lists the registry entries the source left out as invalid,
	// for the status page; they never reach Upstreams.
	Dropped []registry.Dropped
	// Doubt, when set, is the source's own reason to distrust this answer
	// (Consul without a known leader, results filtered by ACLs): the engine
	// changes nothing while any source doubts, and shows the reason.
	Doubt string
	// Touched, when not nil, names every upstream whose entry may differ
	// from the same source's previous snapshot (present in either): any
	// other name maps to the very same Upstream, server list and all, in
	// both. It lets a change cost what changed; nil says nothing, and the
	// engine compares every upstream. A source's first snapshot has none.
	Touched []string
}

// Guards are the safety rules that keep a bogus registry answer from
// emptying nginx.
type Guards struct {
	// MinServices holds every change while the registry reports fewer
	// services than this. A registry answer with zero services is always
	// held.
	MinServices int
	// MaxDrop is the share of an upstream's servers (0-1) that may go in
	// one step; a bigger drop, or the upstream's removal, is applied only
	// when the registry still shows it ConfirmAfter later. 0 holds every
	// drop, 1 allows any (the configuration resolves the default, 0.5).
	MaxDrop float64
	// MaxTotalDrop is the same for the number of servers of all upstreams
	// together: a bigger fall holds every change until confirmed.
	MaxTotalDrop float64
	// ConfirmAfter is how long a big drop must persist before it is
	// applied. 0 confirms at once: the drop guards are off.
	ConfirmAfter time.Duration
	// Reserved names and the Addresses policy are the sources' rules
	// (registry.Rules), applied here to what nginx holds already: a name
	// reserved, or a server refused, since it was persisted (an upgrade,
	// a new deny_addresses entry) is never kept by a guard.
	Reserved  []string
	Addresses upstream.AddressPolicy
}

// Guard names, for metrics and status.
const (
	GuardNoServices  = "no_services"
	GuardMinServices = "min_services"
	GuardDoubt       = "source_doubt"
	GuardTotalDrop   = "total_drop"
	GuardDrop        = "drop"
	GuardEmpty       = "empty"
	GuardCollision   = "case_collision"
	GuardContested   = "contested_name"
	GuardInvalid     = "invalid_state"
	GuardRefused     = "refused"
)

// Hold says that part of the desired state was not applied, and why.
type Hold struct {
	Upstream string // "" for a hold of the whole state
	Guard    string // which guard holds it (Guard* constants)
	Reason   string
	// Since is when this guard started holding this upstream; the engine
	// sets it in its published status, Plan leaves it zero.
	Since time.Time
}

// Drops remembers big drops seen and not yet confirmed: the upstream's name
// ("" for the total) → when the drop was first seen. Plan keeps it; the
// engine only carries it from one plan to the next.
type Drops map[string]time.Time

func (h Hold) String() string {
	if h.Upstream == "" {
		return "all upstreams: " + h.Reason
	}
	return h.Upstream + ": " + h.Reason
}

// Plan merges the sources' snapshots and applies the guards against prev,
// the state nginx has now. It is pure: the engine loop calls it and does
// the I/O. Snapshots are merged in order; the first source to claim a name
// keeps it.
//
// drops carries the big drops awaiting confirmation from one call to the
// next (Plan updates it); now is the time of the call. recheck, when not
// zero, is when a held drop can be confirmed: the caller plans again then.
func Plan(prev upstream.State, snaps []Snapshot, g Guards, drops Drops, now time.Time) (next upstream.State, holds []Hold, recheck time.Time) {
	p := Planner{Drops: drops}
	return p.Plan(prev, snaps, g, now)
}

// Planner plans as Plan does, and carries from one plan to the next what
// lets a plan cost what changed rather than the catalog: the drops
// awaiting confirmation, and the upstreams it has already checked. A
// single-instance change at thousands of upstreams then checks one
// upstream's servers, names and method, not every server of every
// upstream on each change.
//
// What it remembers is keyed by the identity of an upstream's server list:
// sources hand on the list of an unchanged upstream itself and lists are
// never changed in place (upstream.Upstream.Equal relies on the same), and
// the memory holds the list, so its array cannot be reused for another.
// Results equal Plan's; TestPlannerMatchesPlan compares them.
//
// The zero Planner is ready; it is not safe for concurrent use.
type Planner struct {
	Drops Drops
	// guards is what the memories below were built under: other guards
	// void them.
	guards Guards
	// allowed: upstreams of a prev whose name is not reserved and whose
	// servers the address policy allows, by name.
	allowed map[string][]upstream.Server
	// valid: upstreams of an applied next that nginx -t accepts (a primary
	// server, a method that takes their servers), by name; its names have
	// no two that differ only in case.
	valid map[string]validUpstream
	// distinct: the names of the last merged state, which had no two that
	// differ only in case.
	distinct map[string]struct{}
	// fast: what the last plan left for PlanDelta, when it was clean.
	fast *fastMemory
}

type validUpstream struct {
	servers []upstream.Server
	balance upstream.Balance
}

// sameGuards reports whether a and b check upstreams alike.
func sameGuards(a, b Guards) bool {
	return slices.Equal(a.Reserved, b.Reserved) && a.Addresses.Equal(b.Addresses)
}

// Plan is the package's Plan with what p carries.
func (p *Planner) Plan(prev upstream.State, snaps []Snapshot, g Guards, now time.Time) (next upstream.State, holds []Hold, recheck time.Time) {
	if p.Drops == nil {
		p.Drops = Drops{}
	}
	if !sameGuards(p.guards, g) {
		p.guards, p.allowed, p.valid = g, nil, nil
	}
	drops := p.Drops
	merged, services, doubts, holds := mergeSnapshots(snaps)
	switch {
	case len(doubts) > 0:
		return prev, []Hold{{Upstream: "", Guard: GuardDoubt, Reason: fmt.Sprintf("%s; keeping the last known state", doubts[0])}}, time.Time{}
	case services == 0:
		return prev, []Hold{{Upstream: "", Guard: GuardNoServices, Reason: "the registry reports no services; keeping the last known state"}}, time.Time{}
	case services < g.MinServices:
		return prev, []Hold{{Upstream: "", Guard: GuardMinServices, Reason: fmt.Sprintf("the registry reports %d services, fewer than min_services %d; keeping the last known state", services, g.MinServices)}}, time.Time{}
	}

	prev, refused := p.withoutRefused(prev, g)
	holds = append(holds, refused...)
	merged, collisions := p.dropCollisions(prev, merged)
	holds = append(holds, collisions...)
	next, empty := keepLastServers(prev, merged, invalidByService(snaps))
	holds = append(holds, empty...)

	if g.ConfirmAfter <= 0 {
		clear(drops)
		return p.checked(prev, next, holds, time.Time{})
	}
	d := dropGuard{g: g, drops: drops, now: now, seen: map[string]bool{}}
	// The total: a registry losing most servers at once is more likely
	// broken than right. It is weighed on the registry's answer, before
	// the upstreams' guards put servers back; their clocks run meanwhile.
	before, after := prev.ServerCount(), next.ServerCount()
	next, held := d.upstreams(prev, next)
	holds = append(holds, held...)
	if hold, ok := d.total(before, after); !ok {
		forget(drops, d.seen)
		return prev, append(holds, hold), d.recheck
	}
	forget(drops, d.seen)
	return p.checked(prev, next, holds, d.recheck)
}

// withoutRefused returns prev without what the rules refuse now: reserved
// names, and servers on refused addresses (an upstream left without a
// primary server goes too). Guards then never keep them; the plan's diff
// against nginx removes them. It copies prev only when something goes,
// and looks again only at the upstreams whose servers it has not allowed
// before.
func (p *Planner) withoutRefused(prev upstream.State, g Guards) (upstream.State, []Hold) {
	var out upstream.State
	var holds []Hold
	drop := func(name, why string) {
		if out == nil {
			out = maps.Clone(prev)
		}
		delete(out, name)
		holds = append(holds, Hold{Upstream: name, Guard: GuardRefused, Reason: why})
	}
	if p.allowed == nil || len(p.allowed) > 2*len(prev)+64 {
		p.allowed = make(map[string][]upstream.Server, len(prev)) // a map never gives back its room
	}
	for name, u := range prev { // unsorted: it runs on every plan, and holds are rare
		if ok, known := p.allowed[name]; known && upstream.SameServers(ok, u.Servers) {
			assertUnchanged(name, u.Servers, func(s upstream.Server) error { return g.Addresses.Check(s.Addr.Addr()) })
			continue
		}
		delete(p.allowed, name)
		if registry.IsReserved(g.Reserved, name) {
			drop(name, "the name is reserved (upstreams.reserved); removed")
			continue
		}
		refused := -1
		for i, s := range u.Servers {
			if g.Addresses.Check(s.Addr.Addr()) != nil {
				refused = i
				break
			}
		}
		if refused < 0 {
			p.allowed[name] = u.Servers
			continue
		}
		kept := slices.Clone(u.Servers[:refused])
		var why error
		for _, s := range u.Servers[refused:] {
			if err := g.Addresses.Check(s.Addr.Addr()); err != nil {
				why = err
				continue
			}
			kept = append(kept, s)
		}
		u.Servers = kept
		if !u.HasPrimary() {
			drop(name, fmt.Sprintf("%v; no allowed primary server left, removed", why))
			continue
		}
		if out == nil {
			out = maps.Clone(prev)
		}
		out[name] = u
		holds = append(holds, Hold{Upstream: name, Guard: GuardRefused, Reason: fmt.Sprintf("%v; that server is removed", why)})
	}
	if out == nil {
		return prev, nil
	}
	slices.SortFunc(holds, func(a, b Hold) int { return strings.Compare(a.Upstream, b.Upstream) })
	return out, holds
}

// mergeSnapshots merges the sources' upstreams in order (the first source
// to claim a name keeps it) and adds up their services and doubts. With a
// single source the merged state is that source's own map, which nothing
// after must change (dropCollisions copies it first).
func mergeSnapshots(snaps []Snapshot) (merged upstream.State, services int, doubts []string, holds []Hold) {
	if len(snaps) == 1 {
		s := snaps[0]
		if s.Doubt != "" {
			doubts = append(doubts, s.Doubt)
		}
		merged = s.Upstreams
		if merged == nil {
			merged = upstream.State{}
		}
		return merged, s.Services, doubts, nil
	}
	merged = upstream.State{}
	for i, s := range snaps {
		services += s.Services
		if s.Doubt != "" {
			doubts = append(doubts, s.Doubt)
		}
		var contested []Hold
		for name, u := range s.Upstreams { // names are distinct within one source
			if _, taken := merged[name]; taken {
				contested = append(contested, Hold{Upstream: name, Guard: GuardContested, Reason: fmt.Sprintf("also reported by source %d; the first source keeps it", i+1)})
				continue
			}
			merged[name] = u
		}
		slices.SortFunc(contested, func(a, b Hold) int { return strings.Compare(a.Upstream, b.Upstream) })
		holds = append(holds, contested...)
	}
	return merged, services, doubts, holds
}

// keepLastServers builds the next state from the merged one: an upstream
// without a primary server (no healthy or valid instance, or `backup`
// servers only, which nginx refuses: "no servers in upstream") keeps the
// servers nginx has, or is not created.
//
// nginx and dyups compare upstream names case-insensitively: the upstream
// nginx holds under "api" is the one a registry now calls "Api". It is
// found by its folded name, so that a case-only rename replaces it in
// place (one POST; the file never holds both), and an empty newcomer keeps
// the name nginx has.
func keepLastServers(prev, merged upstream.State, invalid map[string]int) (upstream.State, []Hold) {
	// Nearly always every upstream goes as merged: next is merged itself
	// (a source's map, not to be changed) until one must not.
	var next upstream.State
	var prevByKey map[string]string
	type keyed struct {
		name string // the merged name, which orders the holds
		hold Hold
	}
	var found []keyed
	for name, u := range merged { // unsorted: holds are sorted below, and rare
		if u.HasPrimary() {
			continue
		}
		if next == nil {
			next = maps.Clone(merged)
		}
		delete(next, name)
		why := "no healthy instances"
		if n := invalid[u.Service]; n > 0 {
			why = fmt.Sprintf("no healthy valid instances (%d of service %s dropped as invalid)", n, u.Service)
		}
		if len(u.Servers) > 0 {
			why = fmt.Sprintf("only backup servers (%d), which nginx refuses without a primary", len(u.Servers))
		}
		if prevByKey == nil {
			prevByKey = foldIndex(prev)
		}
		// merged holds no two names that fold alike (dropCollisions), so
		// the name put back here is no other upstream's.
		if oldName, ok := prevByKey[upstream.FoldKey(name)]; ok && prev[oldName].HasPrimary() {
			old := prev[oldName]
			next[oldName] = old
			found = append(found, keyed{name, Hold{Upstream: oldName, Guard: GuardEmpty, Reason: fmt.Sprintf("%s; keeping %d last known servers", why, len(old.Servers))}})
		} else {
			found = append(found, keyed{name, Hold{Upstream: name, Guard: GuardEmpty, Reason: why + " yet; not created"}})
		}
	}
	if next == nil {
		next = merged
	}
	slices.SortFunc(found, func(a, b keyed) int { return strings.Compare(a.name, b.name) })
	var holds []Hold
	for _, f := range found {
		holds = append(holds, f.hold)
	}
	return next, holds
}

// foldIndex maps each name's folded form to the name.
func foldIndex(s upstream.State) map[string]string {
	idx := make(map[string]string, len(s))
	for name := range s {
		idx[upstream.FoldKey(name)] = name
	}
	return idx
}

// checkState is the last line of defence for "every file nginx -t
// accepts": a state that breaks it is never applied, whatever bug let it
// through.
func checkState(s upstream.State) error {
	err := s.CheckNames()
	if err == nil {
		err = checkBalances(s)
	}
	return err
}

func invalidHold(err error) Hold {
	return Hold{Upstream: "", Guard: GuardInvalid, Reason: fmt.Sprintf("the planned state would not pass nginx -t (%v); keeping the last known state", err)}
}

// checked returns next when checkState passes, else prev with a hold. It
// checks again only the upstreams p has not seen valid under the same
// name, servers and method. While the names are those of the last valid
// state, no two of them differ only in case, and only the changed
// upstreams can break the file: the errors are those the whole state's
// check would give.
func (p *Planner) checked(prev, next upstream.State, holds []Hold, recheck time.Time) (upstream.State, []Hold, time.Time) {
	sameNames := p.valid != nil && len(p.valid) == len(next)
	var changed upstream.State
	for name, u := range next {
		v, ok := p.valid[name]
		if !ok {
			sameNames = false
			break
		}
		if !upstream.SameServers(v.servers, u.Servers) || v.balance != u.Balance {
			if changed == nil {
				changed = upstream.State{}
			}
			changed[name] = u
		}
	}
	if !sameNames {
		p.valid = nil
		if err := checkState(next); err != nil {
			return prev, append(holds, invalidHold(err)), recheck
		}
		p.valid = make(map[string]validUpstream, len(next))
		for name, u := range next {
			p.valid[name] = validUpstream{u.Servers, u.Balance}
		}
		return next, holds, recheck
	}
	if err := checkState(changed); err != nil {
		return prev, append(holds, invalidHold(err)), recheck
	}
	if testing.Testing() {
		// See assertUnchanged: what was skipped must pass as a whole.
		if err := checkState(next); err != nil {
			panic(fmt.Sprintf("engine: a server list changed in place after it was checked: %v", err))
		}
	}
	for name, u := range changed {
		p.valid[name] = validUpstream{u.Servers, u.Balance}
	}
	return next, holds, recheck
}

// assertUnchanged is, in tests only, the check of a list the Planner skips
// because it checked the same list before. The skip is sound only while no
// list changes in place once sent (Snapshot.Upstreams); a change in place
// would let a refused address or a broken upstream through, so every test
// that runs the engine checks the contract here.
func assertUnchanged(name string, servers []upstream.Server, check func(upstream.Server) error) {
	if !testing.Testing() {
		return
	}
	for _, s := range servers {
		if err := check(s); err != nil {
			panic(fmt.Sprintf("engine: upstream %s: a server list changed in place after it was checked: %v", name, err))
		}
	}
}

// checkBalances runs upstream.CheckBalance over every upstream of s.
func checkBalances(s upstream.State) error {
	var errs []string
	for _, u := range s {
		if err := u.CheckBalance(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.Sort(errs)
	return errors.New(strings.Join(errs, "; "))
}

// dropGuard holds big drops until the registry has said the same for
// ConfirmAfter.
type dropGuard struct {
	g       Guards
	drops   Drops
	now     time.Time
	seen    map[string]bool // the drops this plan saw, by key
	recheck time.Time       // the earliest time a held drop can be confirmed
}

// confirmed says whether the drop under key, seen now, has lasted
// ConfirmAfter; a first sighting starts the clock.
func (d *dropGuard) confirmed(key string) bool {
	d.seen[key] = true
	first, ok := d.drops[key]
	if !ok {
		d.drops[key] = d.now
		first = d.now
	}
	at := first.Add(d.g.ConfirmAfter)
	if !d.now.Before(at) {
		delete(d.drops, key)
		return true
	}
	if d.recheck.IsZero() || at.Before(d.recheck) {
		d.recheck = at
	}
	return false
}

// upstreams puts back every upstream that would lose more than MaxDrop of
// its servers and has not been confirmed yet, in a copy of next (which
// may be a source's map) made when one is.
func (d *dropGuard) upstreams(prev, next upstream.State) (upstream.State, []Hold) {
	var holds []Hold
	copied := false
	var nextByKey map[string]string // made when a name is not found as it is
	maxDrop := d.g.MaxDrop
	for name, old := range prev { // unsorted: holds are sorted below, and rare
		if !old.HasPrimary() {
			continue // nginx refuses it: losing it can only mend the file
		}
		// The same upstream for nginx, maybe renamed by case: next holds
		// no two names that fold alike, so a name found as it is is the
		// one its folded name finds.
		curName, ok := name, false
		if _, ok = next[name]; !ok {
			if nextByKey == nil {
				nextByKey = foldIndex(next)
			}
			curName, ok = nextByKey[upstream.FoldKey(name)]
		}
		n := len(next[curName].Servers)
		if !ok {
			n = 0
		}
		share := dropShare(len(old.Servers), n)
		if share <= maxDrop || d.confirmed(name) {
			continue
		}
		if !copied {
			next, copied = maps.Clone(next), true
		}
		if ok && curName != name {
			delete(next, curName) // the rename waits with the drop
		}
		next[name] = old
		what := fmt.Sprintf("would fall from %d to %d servers (%.0f%% > max_drop %.0f%%)", len(old.Servers), n, share*100, maxDrop*100)
		if !ok {
			what = fmt.Sprintf("would be removed with its %d servers", len(old.Servers))
		}
		holds = append(holds, Hold{Upstream: name, Guard: GuardDrop, Reason: fmt.Sprintf("%s; applied only if the registry still says so %v after it was first seen", what, d.g.ConfirmAfter)})
	}
	slices.SortFunc(holds, func(a, b Hold) int { return strings.Compare(a.Upstream, b.Upstream) })
	return next, holds
}

// total checks the fall of all servers together, from before to after;
// ok is false when it holds every change.
func (d *dropGuard) total(before, after int) (Hold, bool) {
	maxTotal := d.g.MaxTotalDrop
	share := dropShare(before, after)
	if share <= maxTotal || d.confirmed("") {
		return Hold{}, true
	}
	return Hold{Upstream: "", Guard: GuardTotalDrop, Reason: fmt.Sprintf("servers would fall from %d to %d (%.0f%% > max_total_drop %.0f%%); applied only if the registry still says so %v after it was first seen", before, after, share*100, maxTotal*100, d.g.ConfirmAfter)}, false
}

// invalidByService counts, per service, the instances the sources dropped
// as invalid, so that a hold can say why a service has no servers.
func invalidByService(snaps []Snapshot) map[string]int {
	var n map[string]int
	for _, s := range snaps {
		for _, d := range s.Dropped {
			if n == nil {
				n = map[string]int{}
			}
			n[d.Service]++
		}
	}
	return n
}

// dropShare is the share of before that is gone in after (0 when nothing
// fell).
func dropShare(before, after int) float64 {
	if before == 0 || after >= before {
		return 0
	}
	return float64(before-after) / float64(before)
}

// forget drops the pending drops that the newest answer no longer shows:
// the registry recovered, the clock starts again next time.
func forget(drops Drops, seen map[string]bool) {
	for k := range drops {
		if !seen[k] {
			delete(drops, k)
		}
	}
}

// dropCollisions is the package's dropCollisions on a copy of merged (a
// source's own map, with a single source), made only when names collide;
// while merged has the names of the last merged state without a
// collision, it looks no further.
func (p *Planner) dropCollisions(prev, merged upstream.State) (upstream.State, []Hold) {
	if p.distinct != nil && len(p.distinct) == len(merged) {
		known := true
		for name := range merged {
			if _, known = p.distinct[name]; !known {
				break
			}
		}
		if known {
			return merged, nil
		}
	}
	p.distinct = nil
	merged = maps.Clone(merged)
	holds := dropCollisions(prev, merged)
	if holds == nil {
		p.distinct = make(map[string]struct{}, len(merged))
		for name := range merged {
			p.distinct[name] = struct{}{}
		}
	}
	return merged, holds
}

// dropCollisions removes upstreams whose names differ only in case: dyups
// would store them under one name and they would overwrite each other. The
// one nginx already has keeps its place; newcomers are dropped and
// reported.
func dropCollisions(prev, merged upstream.State) []Hold {
	// Collisions are rare: find out cheaply whether there is one before
	// grouping and sorting thousands of names on every change.
	seen := make(map[string]struct{}, len(merged))
	collide := false
	for name := range merged {
		k := upstream.FoldKey(name)
		if _, ok := seen[k]; ok {
			collide = true
			break
		}
		seen[k] = struct{}{}
	}
	if !collide {
		return nil
	}
	groups := map[string][]string{}
	for _, name := range merged.Names() {
		k := upstream.FoldKey(name)
		groups[k] = append(groups[k], name)
	}
	var holds []Hold
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		names := groups[k]
		if len(names) < 2 {
			continue
		}
		keep := ""
		for _, n := range names {
			if _, ok := prev[n]; ok {
				keep = n
			}
		}
		// None of them is the name nginx holds, but nginx holds one in
		// another case (its service left while two newcomers collide):
		// it keeps its servers while they collide, rather than going.
		held := ""
		if keep == "" {
			for name := range prev {
				if upstream.FoldKey(name) == k {
					held = name
				}
			}
		}
		for _, n := range names {
			if n == keep {
				continue
			}
			delete(merged, n)
			reason := fmt.Sprintf("name collides case-insensitively with %v (dyups treats names case-insensitively); not applied", without(names, n))
			if held != "" {
				reason += fmt.Sprintf("; nginx keeps %s with its last servers", held)
			}
			holds = append(holds, Hold{Upstream: n, Guard: GuardCollision, Reason: reason})
		}
		if held != "" {
			merged[held] = prev[held]
		}
	}
	return holds
}

func without(names []string, n string) []string {
	out := make([]string, 0, len(names)-1)
	for _, x := range names {
		if x != n {
			out = append(out, x)
		}
	}
	return out
}
