package consul

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestSnapshotMergesOnlyChangedServices: a snapshot made from the last
// one by replacing the upstreams of the services read anew must equal a
// merge of every service's part, through a series where that shortcut
// must not be taken: a canary group that takes a name, an instance
// dropped as invalid, a group that comes and goes, a service that comes
// and goes. It also checks that the shortcut is taken for a plain change.
func TestSnapshotMergesOnlyChangedServices(t *testing.T) {
	tr := newTestTracker()
	build := func(svc string, addrs ...string) registry.Part {
		var list []registry.Instance
		for i, a := range addrs {
			in := registry.Instance{Service: svc, ID: fmt.Sprintf("%s-%d", svc, i), Address: a, Port: 8080, Healthy: true}
			if a == "gray" { // a canary instance, in the group svc_x
				in.Address, in.Tags = "10.9.9.9", []string{"gray=x"}
			}
			list = append(list, in)
		}
		return registry.BuildService(svc, list, rules)
	}
	set := func(svc string, addrs ...string) { tr.setService(svc, serviceData{part: build(svc, addrs...)}) }
	steps := []struct {
		what     string
		do       func()
		shortcut bool // the snapshot is made from the last one
	}{
		{"first read", func() {
			set("web", "10.0.0.1", "10.0.0.2")
			set("api", "10.0.1.1")
			set("db", "10.0.2.1")
		}, false},
		{"one instance more", func() { set("web", "10.0.0.1", "10.0.0.2", "10.0.0.3") }, true},
		{"two services at once", func() { set("web", "10.0.0.1"); set("api", "10.0.1.1", "10.0.1.2") }, true},
		{"read again, same", func() { set("db", "10.0.2.1") }, true},
		{"a canary group comes", func() { set("api", "10.0.1.1", "gray") }, false},
		{"its instance moves", func() { set("api", "10.0.1.2", "gray") }, true},
		{"the group goes", func() { set("api", "10.0.1.2") }, false},
		{"every instance in the group", func() { set("api", "gray") }, false},
		{"back", func() { set("api", "10.0.1.2") }, false},
		{"an invalid instance", func() { set("db", "10.0.2.1", "not-an-ip") }, false},
		{"still invalid", func() { set("db", "10.0.2.2", "not-an-ip") }, false},
		{"valid again", func() { set("db", "10.0.2.2") }, false},
		{"plain change after", func() { set("db", "10.0.2.3") }, true},
		{"a service comes", func() { set("cache", "10.0.3.1") }, false},
		{"a service goes", func() { tr.forgetService("cache") }, false},
		{"plain change at last", func() { set("web", "10.0.0.9") }, true},
	}
	var last upstream.State
	for _, st := range steps {
		st.do()
		_, _, shortcut := tr.mergeChanged()
		got := tr.snapshot()
		var parts []registry.Part
		for _, name := range slices.Sorted(maps.Keys(tr.services)) {
			parts = append(parts, tr.services[name].part)
		}
		want, dropped := registry.Merge(parts)
		if !got.Upstreams.Equal(want) || len(got.Dropped) != len(dropped) {
			t.Fatalf("%s: snapshot %v, dropped %v; a whole merge gives %v, dropped %v", st.what, got.Upstreams, got.Dropped, want, dropped)
		}
		for name, u := range want {
			if got.Upstreams[name].Service != u.Service {
				t.Fatalf("%s: upstream %s of service %q, want %q", st.what, name, got.Upstreams[name].Service, u.Service)
			}
		}
		if shortcut != st.shortcut {
			t.Fatalf("%s: made from the last snapshot %v, want %v", st.what, shortcut, st.shortcut)
		}
		// Touched (Snapshot's contract): with the shortcut, every name it
		// leaves out keeps the very Upstream of the last snapshot.
		if (got.Touched != nil) != shortcut {
			t.Fatalf("%s: touched %v, want it exactly when made from the last snapshot", st.what, got.Touched)
		}
		if got.Touched != nil {
			for _, name := range slices.Sorted(maps.Keys(last)) {
				if slices.Contains(got.Touched, name) {
					continue
				}
				u, ok := got.Upstreams[name]
				if o := last[name]; !ok || !upstream.SameServers(o.Servers, u.Servers) || o.Name != u.Name || o.Balance != u.Balance || o.Keepalive != u.Keepalive {
					t.Fatalf("%s: %s is not in touched %v but changed: %v → %v", st.what, name, got.Touched, o, u)
				}
			}
			for name := range got.Upstreams {
				if _, ok := last[name]; !ok && !slices.Contains(got.Touched, name) {
					t.Fatalf("%s: %s came and is not in touched %v", st.what, name, got.Touched)
				}
			}
		}
		last = got.Upstreams
	}
}

// TestProbeGraceFollowsTheChecksWatch: a catalog change waits for the
// checks watch as long as that watch took to answer the last time (twice
// that, within bounds), so that at a size where Consul answers after the
// first grace the change is not read twice; an answer long after, surely
// for another change, does not stretch the wait.
func TestProbeGraceFollowsTheChecksWatch(t *testing.T) {
	tr := newTestTracker()
	at := time.Unix(1000, 0)
	if g := tr.grace(); g != probeGrace {
		t.Fatalf("first grace %v, want %v", g, probeGrace)
	}
	tr.waitChecks(at)
	tr.checksCame(at.Add(600 * time.Millisecond)) // after the grace: the source read them itself
	if g := tr.grace(); g != 1200*time.Millisecond {
		t.Fatalf("after an answer 600ms late: grace %v, want 1.2s", g)
	}
	tr.waitChecks(at.Add(time.Minute))
	tr.checksCame(at.Add(time.Minute + 100*time.Millisecond))
	if g := tr.grace(); g != probeGrace {
		t.Fatalf("after an answer within 100ms: grace %v, want %v", g, probeGrace)
	}
	tr.waitChecks(at.Add(2 * time.Minute))
	tr.checksCame(at.Add(2*time.Minute + 1900*time.Millisecond))
	if g := tr.grace(); g != maxProbeGrace {
		t.Fatalf("after an answer 1.9s late: grace %v, want the bound %v", g, maxProbeGrace)
	}
	tr.waitChecks(at.Add(3 * time.Minute))
	tr.checksCame(at.Add(3*time.Minute + 100*time.Millisecond))
	tr.checksCame(at.Add(4 * time.Minute)) // a later answer, nothing waiting
	tr.waitChecks(at.Add(5 * time.Minute)) // a change without checks: no answer comes
	tr.checksCame(at.Add(10 * time.Minute))
	if g := tr.grace(); g != probeGrace {
		t.Fatalf("after answers that waited for nothing, or came minutes late: grace %v, want %v", g, probeGrace)
	}
}
