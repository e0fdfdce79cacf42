// Package upstream is SwallowKeeper's model: the servers and upstreams that
// end up in nginx, how they are validated, rendered to nginx text, parsed
// back and compared. It is pure: standard library only, no I/O.
//
// Everything that reaches a rendered file or a dyups body passes through
// the constructors here (NewServer, ValidName), so registry data can never
// inject nginx configuration.
package upstream

import (
	"cmp"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Server is one validated backend of an upstream.
type Server struct {
	Addr        netip.AddrPort // an IP literal and a port, never a hostname
	Weight      int
	MaxFails    int
	FailTimeout time.Duration // whole seconds (nginx and dyups keep seconds)
	MaxConns    int
	Backup      bool
	Down        bool

	// Instance names where the server came from (e.g. "web-1 on node-a"),
	// for logs and status. It is never rendered and ignored by Equal.
	Instance string
	// Tags are the instance's registry tags, for status only, like
	// Instance: never rendered, ignored by Equal.
	Tags []string
}

// Upstream is one nginx upstream block.
type Upstream struct {
	Name      string
	Servers   []Server // kept sorted by address (see Sort)
	Keepalive int      // idle keepalive connections per worker; 0 renders no line
	Balance   Balance  // the balancing method; zero is round robin

	// Service is the registry service this upstream was built from; for logs
	// and status only, ignored by Equal.
	Service string
}

// State is the full set of upstreams, keyed by name.
type State map[string]Upstream

// Sort puts the servers in canonical order, so that equal sets compare and
// render equal whatever order the registry listed them in.
func (u *Upstream) Sort() {
	slices.SortFunc(u.Servers, func(a, b Server) int {
		if c := a.Addr.Addr().Compare(b.Addr.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Addr.Port(), b.Addr.Port())
	})
}

// ServerAt returns the index of the server on addr, or -1.
func (u Upstream) ServerAt(addr netip.AddrPort) int {
	return slices.IndexFunc(u.Servers, func(s Server) bool { return s.Addr == addr })
}

// sameConfig reports whether two servers render the same way.
func (s Server) sameConfig(o Server) bool {
	return s.Addr == o.Addr && s.Weight == o.Weight && s.MaxFails == o.MaxFails &&
		s.FailTimeout == o.FailTimeout && s.MaxConns == o.MaxConns &&
		s.Backup == o.Backup && s.Down == o.Down
}

// Equal reports whether two upstreams configure nginx identically. Both must
// be sorted.
func (u Upstream) Equal(o Upstream) bool {
	if u.Name != o.Name || u.Keepalive != o.Keepalive || u.Balance != o.Balance || len(u.Servers) != len(o.Servers) {
		return false
	}
	// Sources hand on the server list of an unchanged upstream itself, and
	// lists are never changed in place: the same list is equal without a
	// look at its thousands of servers.
	if SameServers(u.Servers, o.Servers) {
		return true
	}
	return slices.EqualFunc(u.Servers, o.Servers, Server.sameConfig)
}

// SameState reports whether a and b are the same map, not only equal
// ones. Sound only because a state, once handed on, is never changed in
// place: the stages use it to tell the state they saw last from a new one
// without comparing every upstream.
func SameState(a, b State) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// SameServers reports whether a and b are the same list (one array, same
// length), not only equal ones. Sound only because a server list, once
// handed on, is never changed in place.
func SameServers(a, b []Server) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Names returns the upstream names in sorted order.
func (s State) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Equal reports whether two states configure nginx identically.
func (s State) Equal(o State) bool {
	if len(s) != len(o) {
		return false
	}
	for name, u := range s {
		v, ok := o[name]
		if !ok || !u.Equal(v) {
			return false
		}
	}
	return true
}

// ServerCount is the number of servers of all upstreams together.
func (s State) ServerCount() int {
	n := 0
	for _, u := range s {
		n += len(u.Servers)
	}
	return n
}

// Clone returns a copy that shares no slices with s.
func (s State) Clone() State {
	c := make(State, len(s))
	for name, u := range s {
		u.Servers = slices.Clone(u.Servers)
		c[name] = u
	}
	return c
}

// FoldKey is the key under which dyups stores a name: dyups matches upstream
// names case-insensitively, so two names with the same FoldKey collide.
func FoldKey(name string) string { return strings.ToLower(name) }
