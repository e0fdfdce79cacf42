package upstream

import (
	"net/netip"
	"slices"
)

// Changes lists what differs between two states, by upstream name, in sorted
// order.
type Changes struct {
	Set     []string // new, or configured differently: POST these
	Removed []string // gone: DELETE these
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Set) == 0 && len(c.Removed) == 0 }

// Diff compares two states.
func Diff(old, next State) Changes {
	var c Changes
	for name, u := range next {
		if o, ok := old[name]; !ok || !o.Equal(u) {
			c.Set = append(c.Set, name)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok {
			c.Removed = append(c.Removed, name)
		}
	}
	slices.Sort(c.Set)
	slices.Sort(c.Removed)
	return c
}

// ServerDelta lists the servers only in next (added) and only in old
// (removed), by address; a server whose parameters changed is in both.
// It drives the "+ web 10.0.0.3:8080" log lines.
func ServerDelta(old, next Upstream) (added, removed []Server) {
	before := make(map[netip.AddrPort]Server, len(old.Servers))
	for _, s := range old.Servers {
		before[s.Addr] = s
	}
	after := make(map[netip.AddrPort]bool, len(next.Servers))
	for _, s := range next.Servers {
		after[s.Addr] = true
		if o, ok := before[s.Addr]; !ok || !o.sameConfig(s) {
			added = append(added, s)
			if ok {
				removed = append(removed, o)
			}
		}
	}
	for _, s := range old.Servers {
		if !after[s.Addr] {
			removed = append(removed, s)
		}
	}
	return added, removed
}
