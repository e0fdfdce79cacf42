package layout

import (
	"context"
	"slices"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Tree is one complete read of a registry tree.
type Tree struct {
	// Root is where the tree lies: an entry's path is Join(Root, dir, name).
	Root string
	// Dirs maps every service directory read to its instance entries. A
	// directory without entries is a service all the same.
	Dirs map[string][]Entry
	// Invalid is what the read found unusable outside the entries: keys
	// of the wrong shape, directories that cannot be listed.
	Invalid []Invalid
}

// Entry is one instance entry as read: an etcd key or a znode.
type Entry struct {
	Name  string
	Value []byte
	// Err is set when the entry exists but cannot be read (no read
	// permission); such an entry is reported invalid.
	Err error
}

// Invalid is an entry left out of a snapshot, and why.
type Invalid struct {
	Path   string
	Reason string
	// Service is the service the entry belongs to, when its directory
	// says ("" for an entry outside any).
	Service string
}

// Snapshot converts the tree into the engine's snapshot. Directories not
// selected by the rules are left out; Services counts the selected ones.
//
// Every entry the layout cannot read, and every instance registry.Build
// refuses, is left out and returned as Invalid, naming its path, with the
// tree's own Invalid, sorted by path; the snapshot's Dropped lists them
// too. A selected service that has no usable instance at all (no entries,
// as after a mass expiry, or only invalid ones) still yields its upstream,
// with no servers, so that the engine keeps its last servers instead of
// deleting it: a bad write must not empty nginx. A service whose readable
// instances all lack the required tags yields nothing, as in every source.
func (l Layout) Snapshot(t Tree, r registry.Rules) (engine.Snapshot, []Invalid) {
	invalid := slices.Clone(t.Invalid)
	services := map[string][]registry.Instance{}
	paths := map[string]string{} // service + "\x00" + instance label → path
	tagged := map[string]bool{}  // services with an instance carrying every required tag
	for svc, entries := range t.Dirs {
		if !r.WantService(svc) {
			continue
		}
		list := make([]registry.Instance, 0, len(entries))
		for _, e := range entries {
			path := Join(t.Root, svc, e.Name)
			if e.Err != nil {
				invalid = append(invalid, Invalid{Path: path, Reason: "unreadable: " + e.Err.Error(), Service: svc})
				continue
			}
			in, err := l.Decode(svc, e.Name, e.Value)
			if err != nil {
				invalid = append(invalid, Invalid{Path: path, Reason: err.Error(), Service: svc})
				continue
			}
			tagged[svc] = tagged[svc] || r.Tagged(in)
			paths[svc+"\x00"+in.Label()] = path
			list = append(list, in)
		}
		services[svc] = list
	}

	st, dropped := registry.Build(services, r)
	for _, d := range dropped {
		path, ok := paths[d.Service+"\x00"+d.Instance]
		if !ok {
			path = Join(t.Root, d.Service, d.Instance)
		}
		invalid = append(invalid, Invalid{Path: path, Reason: d.Reason, Service: d.Service})
	}
	known(st, services, tagged, r)

	slices.SortFunc(invalid, func(a, b Invalid) int {
		return strings.Compare(a.Path+"\x00"+a.Reason, b.Path+"\x00"+b.Reason)
	})
	snap := engine.Snapshot{Upstreams: st, Services: len(services)}
	for _, iv := range invalid {
		snap.Dropped = append(snap.Dropped, registry.Dropped{Service: iv.Service, Instance: iv.Path, Reason: iv.Reason})
	}
	return snap, invalid
}

// known adds an upstream with no servers for every selected service that
// Build made none for, unless its readable instances all lack the required
// tags or its name cannot be an upstream's.
func known(st upstream.State, services map[string][]registry.Instance, tagged map[string]bool, r registry.Rules) {
	built := map[string]bool{}
	for _, u := range st {
		built[u.Service] = true
	}
	for svc, list := range services {
		withoutTags := len(list) > 0 && !tagged[svc]
		if built[svc] || withoutTags || upstream.ValidName(svc) != nil || registry.IsReserved(r.Reserved, svc) {
			continue
		}
		st[svc] = r.NewUpstream(svc, svc)
	}
}

// Publisher sends a source's snapshots to the engine: each one that
// differs from the last one sent, Doubt included (a doubt that clears must
// reach the engine), after reporting every entry newly dropped (each once
// while it stays dropped for the same reason). It belongs to one goroutine.
type Publisher struct {
	// Report, when set, is called for each newly dropped entry.
	Report func(registry.Dropped)
	// Sent, when set, is called after each snapshot sent.
	Sent func()

	reported map[registry.Dropped]bool
	sent     bool
	last     engine.Snapshot
}

// HasSent reports whether a snapshot was sent.
func (p *Publisher) HasSent() bool { return p.sent }

// Publish reports snap's newly dropped entries and sends snap to out when
// it differs from the last one sent. It reports false when ctx ended
// before out took it.
func (p *Publisher) Publish(ctx context.Context, out chan<- engine.Snapshot, snap engine.Snapshot) bool {
	now := make(map[registry.Dropped]bool, len(snap.Dropped))
	for _, d := range snap.Dropped {
		now[d] = true
		if !p.reported[d] && p.Report != nil {
			p.Report(d)
		}
	}
	p.reported = now
	if p.sent && snap.Services == p.last.Services && snap.Doubt == p.last.Doubt &&
		snap.Upstreams.Equal(p.last.Upstreams) && slices.Equal(snap.Dropped, p.last.Dropped) {
		return true
	}
	select {
	case out <- snap:
	case <-ctx.Done():
		return false
	}
	p.sent, p.last = true, snap
	if p.Sent != nil {
		p.Sent()
	}
	return true
}
