package engine

import (
	"fmt"
	"slices"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Snapshot is the complete desired state one source saw at one moment.
type Snapshot struct {
	// Upstreams holds every upstream the registry knows, built only from
	// validated instances. An upstream with no servers is one whose instances
	// are all unhealthy or invalid: it is known, and must not be emptied.
	Upstreams upstream.State
	// Services counts the registry services seen after filtering; the
	// min_services guard compares against it.
	Services int
}

// Guards are the safety rules that keep a bogus registry answer from
// emptying nginx.
type Guards struct {
	// MinServices holds every change while the registry reports fewer
	// services than this. A registry answer with zero services is always
	// held.
	MinServices int
}

// Hold says that part of the desired state was not applied, and why.
type Hold struct {
	Upstream string // "" for a hold of the whole state
	Reason   string
}

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
func Plan(prev upstream.State, snaps []Snapshot, g Guards) (upstream.State, []Hold) {
	var holds []Hold
	merged := upstream.State{}
	services := 0
	for i, s := range snaps {
		services += s.Services
		for _, name := range s.Upstreams.Names() {
			if _, taken := merged[name]; taken {
				holds = append(holds, Hold{name, fmt.Sprintf("also reported by source %d; the first source keeps it", i+1)})
				continue
			}
			merged[name] = s.Upstreams[name]
		}
	}

	if services == 0 {
		return prev, []Hold{{"", "the registry reports no services; keeping the last known state"}}
	}
	if services < g.MinServices {
		return prev, []Hold{{"", fmt.Sprintf("the registry reports %d services, fewer than min_services %d; keeping the last known state", services, g.MinServices)}}
	}

	holds = append(holds, dropCollisions(prev, merged)...)

	next := make(upstream.State, len(merged))
	for _, name := range merged.Names() {
		u := merged[name]
		if len(u.Servers) > 0 {
			next[name] = u
			continue
		}
		if old, ok := prev[name]; ok {
			next[name] = old
			holds = append(holds, Hold{name, fmt.Sprintf("no healthy instances; keeping %d last known servers", len(old.Servers))})
		} else {
			holds = append(holds, Hold{name, "no healthy instances yet; not created"})
		}
	}
	return next, holds
}

// dropCollisions removes upstreams whose names differ only in case: dyups
// would store them under one name and they would overwrite each other. The
// one nginx already has keeps its place; newcomers are dropped and
// reported.
func dropCollisions(prev, merged upstream.State) []Hold {
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
		for _, n := range names {
			if n == keep {
				continue
			}
			delete(merged, n)
			reason := fmt.Sprintf("name collides case-insensitively with %v (dyups treats names case-insensitively); not applied", without(names, n))
			holds = append(holds, Hold{n, reason})
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
