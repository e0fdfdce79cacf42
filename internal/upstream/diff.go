package upstream

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
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

// DiffNames is Diff for old and next that differ in no name outside
// names: it looks only at those, so that a change costs what changed.
func DiffNames(old, next State, names []string) Changes {
	var c Changes
	for _, name := range names {
		u, inNext := next[name]
		o, inOld := old[name]
		switch {
		case inNext && (!inOld || !o.Equal(u)):
			c.Set = append(c.Set, name)
		case inOld && !inNext:
			c.Removed = append(c.Removed, name)
		}
	}
	slices.Sort(c.Set)
	slices.Sort(c.Removed)
	c.Set, c.Removed = slices.Compact(c.Set), slices.Compact(c.Removed)
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

// ServerChange says what differs between two versions of a server on the
// same address, e.g. "weight 1→5, max_fails 1→3", for the "~ server" log
// line.
func ServerChange(old, next Server) string {
	var parts []string
	add := func(what string, a, b any) {
		if a != b {
			parts = append(parts, fmt.Sprintf("%s %v→%v", what, a, b))
		}
	}
	add("weight", old.Weight, next.Weight)
	add("max_fails", old.MaxFails, next.MaxFails)
	add("fail_timeout", old.FailTimeout, next.FailTimeout)
	add("max_conns", old.MaxConns, next.MaxConns)
	add("backup", old.Backup, next.Backup)
	add("down", old.Down, next.Down)
	return strings.Join(parts, ", ")
}
