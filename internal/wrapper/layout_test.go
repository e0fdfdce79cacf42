package wrapper

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
)

// The wrapper writes what the daemon's sources read: an instance the etcd
// and ZooKeeper registrars encode, in each of their layouts and under a
// default or a given prefix, is decoded by the source into the upstream
// the wrapper predicted (Options.Upstream), on the instance's address,
// with its weight, and nothing is dropped.
func TestRegistrarEntriesReadBackThroughTheSources(t *testing.T) {
	rules := registry.Rules{CanaryTag: "gray", WeightMeta: "weight", Weight: 1, FailTimeout: 10 * time.Second}
	for _, o := range []Options{
		{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080},
		{Service: "web", ID: "web-2", Address: "10.0.0.2", Port: 8081, Tags: []string{"gray=canary"}, Meta: map[string]string{"weight": "3"}},
		{Service: "api", ID: "api-v6", Address: "2001:db8::7", Port: 443, Tags: []string{"v2"}, Meta: map[string]string{"zone": "b"}},
	} {
		if err := o.Validate(); err != nil {
			t.Fatal(err)
		}
		weight := map[string]int{"": 1, "3": 3}[o.Meta["weight"]]
		check := func(what string, snap engine.Snapshot, invalid []layout.Invalid) {
			t.Helper()
			u := snap.Upstreams[o.Upstream]
			if len(invalid) != 0 || len(snap.Upstreams) != 1 || len(u.Servers) != 1 {
				t.Fatalf("%s: %s reads back as %v (dropped %v), want one server in %s", what, o.ID, snap.Upstreams.Names(), invalid, o.Upstream)
			}
			if s := u.Servers[0]; s.Addr.String() != layout.JoinHostPort(o.Address, o.Port) || s.Weight != weight || s.Down {
				t.Errorf("%s: %s reads back as %v weight %d down %v, want weight %d", what, o.ID, s.Addr, s.Weight, s.Down, weight)
			}
		}
		for _, c := range []struct{ layout, prefix, dir string }{
			{"service", "", "/services/"}, {"upsync", "", "/upstreams/"}, {"service", "/sd/", "/sd/"}, {"upsync", "/", "/"},
		} {
			key, value, err := (&Etcd{Layout: c.layout, Prefix: c.prefix}).Entry(o)
			if err != nil {
				t.Fatal(err)
			}
			snap, invalid := etcd.Snapshot(layout.Layout(c.layout), c.dir, []etcd.KV{{Key: key, Value: []byte(value)}}, rules)
			check("etcd "+c.layout+" under "+c.dir, snap, invalid)
		}
		for _, c := range []struct{ layout, root string }{{"curator", ""}, {"plain", ""}, {"curator", "/sd"}, {"plain", "/"}} {
			path, data, err := (&ZooKeeper{Layout: c.layout, Root: c.root}).Entry(o)
			if err != nil {
				t.Fatal(err)
			}
			root := c.root
			if root == "" {
				root = "/services"
			}
			dir, name, _ := strings.Cut(strings.TrimPrefix(path, layout.Join(root)), "/")
			snap, invalid := layout.Layout(c.layout).Snapshot(layout.Tree{Root: root, Dirs: map[string][]layout.Entry{dir: {{Name: name, Value: data}}}}, rules)
			check("zookeeper "+c.layout+" under "+root, snap, invalid)
		}
	}
}

func TestZooKeeperEntryLayouts(t *testing.T) {
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080, Meta: map[string]string{"weight": "3"}, Upstream: "web_b"}
	path, data, err := (&ZooKeeper{Layout: "plain", Root: "/sd/"}).Entry(o)
	if err != nil || path != "/sd/web_b/10.0.0.1:8080" || string(data) != `{"weight":3,"down":0}` {
		t.Errorf("plain: %q %s %v", path, data, err)
	}
	if _, _, err := (&ZooKeeper{Layout: "upsync"}).Entry(o); err == nil || !strings.Contains(err.Error(), `unknown layout "upsync"`) {
		t.Errorf("an etcd layout in ZooKeeper: %v", err)
	}
}

// One etcd default for both sides (issue 16): `register -registry etcd`
// with no layout or prefix flag writes what a daemon with the default
// configuration (no etcd.layout, no etcd.prefix) reads.
func TestDefaultEtcdRegistrationIsReadByTheDefaultDaemon(t *testing.T) {
	c := &registerLine{getenv: func(string) string { return "" }}
	fs := c.flags(io.Discard)
	if err := fs.Parse([]string{"-registry", "etcd", "-service", "web", "-port", "8080", "-address", "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{c.consul, c.instance, c.stop, c.secrets} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.o.Validate(); err != nil {
		t.Fatal(err)
	}
	key, value, err := (&Etcd{Layout: c.etcdLayout, Prefix: c.etcdPrefix}).Entry(c.o)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	opt, err := cfg.EtcdOptions()
	if err != nil {
		t.Fatal(err)
	}
	if c.etcdLayout != string(opt.Layout) {
		t.Errorf("wrapper's default -etcd-layout %q, daemon's default etcd.layout %q", c.etcdLayout, opt.Layout)
	}
	dir := layout.Join(layout.CleanRoot(opt.Prefix))
	rules := registry.Rules{Weight: 1, FailTimeout: 10 * time.Second}
	snap, invalid := etcd.Snapshot(opt.Layout, dir, []etcd.KV{{Key: key, Value: []byte(value)}}, rules)
	u := snap.Upstreams[c.o.Upstream]
	if len(invalid) != 0 || len(u.Servers) != 1 || u.Servers[0].Addr.String() != "10.0.0.1:8080" {
		t.Fatalf("the default registration %s = %q reads back, under the daemon's default %s layout at %s, as %v (dropped %v), want 10.0.0.1:8080 in %s",
			key, value, opt.Layout, dir, snap.Upstreams, invalid, c.o.Upstream)
	}
}
