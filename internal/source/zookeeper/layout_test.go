package zookeeper

import (
	"errors"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = testenv.Rules("zookeeper")

// curator builds a Curator JSON body around the given members.
func curator(members string) string {
	return `{"name":"web","id":"i1",` + members + `,"registrationTimeUTC":1,"serviceType":"DYNAMIC"}`
}

func spring(metadata string) string {
	return curator(`"address":"10.0.0.1","port":8080,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web-1","name":"web","metadata":` + metadata + `}`)
}

// node is a Curator znode of service web on addr:port.
func node(name, addr string, port int) layout.Entry {
	return layout.Entry{Name: name, Value: []byte(curator(`"address":"` + addr + `","port":` + strconv.Itoa(port)))}
}

var servers = testenv.Addrs

func TestLayoutSnapshotDropsHostileZnodes(t *testing.T) {
	tree := map[string][]layout.Entry{
		"web": {
			node("good", "10.0.0.1", 8080),
			node("semicolon", "10.0.0.2;server 6.6.6.6:80", 8080),
			node("newline", "10.0.0.3\nserver 6.6.6.6:80", 8080),
			node("brace", "10.0.0.4}", 8080),
			node("hash", "10.0.0.5#", 8080),
			node("quote", `10.0.0.6\"`, 8080),
			node("hostname", "evil.example.com", 8080),
			node("unicode", "１０.0.0.7", 8080),
			node("port0", "10.0.0.8", 0),
			node("port70000", "10.0.0.9", 70000),
			node("negative", "10.0.0.10", -80),
			node("zone", "fe80::1%eth0", 8080),
			node("unspecified", "0.0.0.0", 8080),
			{Name: "weight", Value: []byte(spring(`{"weight":"1 backup"}`))},
			{Name: "gray", Value: []byte(spring(`{"gray":"x;}"}`))},
			{Name: "badjson", Value: []byte(`{"address":"10.0.0.11","port":80`)},
			{Name: "unreadable", Err: errors.New("zk: not authenticated")},
		},
		"we#b": {node("bad-name", "10.0.0.12", 8080)},
	}
	snap, invalid := layout.Curator.Snapshot(layout.Tree{Root: "/services", Dirs: tree}, rules)
	if got := servers(snap.Upstreams["web"]); !reflect.DeepEqual(got, []string{"10.0.0.1:8080"}) {
		t.Fatalf("web servers %v, want only the good one", got)
	}
	if len(snap.Upstreams) != 1 {
		t.Errorf("upstreams %v, want only web", snap.Upstreams.Names())
	}
	if snap.Services != 2 {
		t.Errorf("services = %d, want 2 (web and we#b were both seen)", snap.Services)
	}
	file := string(upstream.RenderFile(snap.Upstreams))
	for _, bad := range []string{"6.6.6.6", "evil", "backup", ":0;", "70000", "x;", "we#b", "#", `"`} {
		if strings.Contains(strings.TrimPrefix(file, upstream.FileHeader), bad) {
			t.Errorf("rendered file contains %q:\n%s", bad, file)
		}
	}
	want := len(tree["web"]) - 1 + len(tree["we#b"])
	if len(invalid) != want {
		t.Errorf("%d invalid znodes, want %d: %v", len(invalid), want, invalid)
	}
	paths := map[string]bool{}
	for _, iv := range invalid {
		paths[iv.Path] = true
		if iv.Reason == "" {
			t.Errorf("%s: no reason", iv.Path)
		}
	}
	for _, p := range []string{"/services/web/semicolon", "/services/web/badjson", "/services/web/unreadable", "/services/web/gray", "/services/we#b/bad-name"} {
		if !paths[p] {
			t.Errorf("no invalid entry names %s; got %v", p, invalid)
		}
	}
}

func TestLayoutSnapshot(t *testing.T) {
	tests := []struct {
		name     string
		layout   layout.Layout
		tree     map[string][]layout.Entry
		r        func(*registry.Rules)
		want     map[string][]string // upstream → servers; a nil list is an upstream with no servers
		services int
	}{
		{
			name:   "instances of a service become one upstream, sorted",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"web": {node("b", "10.0.0.2", 80), node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "an empty service directory is an upstream with no servers, so the engine holds its last ones",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"web": nil, "api": {node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": nil, "api": {"10.0.0.1:80"}}, services: 2,
		},
		{
			name:   "a service with only invalid znodes is held the same way",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"web": {{Name: "x", Value: []byte("{")}, node("y", "evil.example.com", 80)}},
			want:   map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "unhealthy instances leave the upstream known with no servers",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"web": {{Name: "a", Value: []byte(spring(`{"instance_status":"OUT_OF_SERVICE"}`))}}},
			want:   map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "metadata gray=canary goes to its own upstream and weight meta applies",
			layout: layout.Curator,
			tree: map[string][]layout.Entry{"web": {
				node("a", "10.0.0.1", 80),
				{Name: "b", Value: []byte(spring(`{"gray":"canary"}`))},
			}},
			want: map[string][]string{"web": {"10.0.0.1:80"}, "web_canary": {"10.0.0.1:8080"}}, services: 1,
		},
		{
			name:   "excluded services are neither built nor counted",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"zookeeper": {node("a", "10.0.0.1", 80)}, "web": {node("a", "10.0.0.2", 80)}},
			want:   map[string][]string{"web": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "a service whose valid instances lack the required tags yields nothing",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"web": {node("a", "10.0.0.1", 80)}, "api": {{Name: "a", Value: []byte(spring(`{"env":"prod"}`))}}},
			r:      func(r *registry.Rules) { r.RequireTags = []string{"env=prod"} },
			want:   map[string][]string{"api": {"10.0.0.1:8080"}}, services: 2,
		},
		{
			name:   "a service directory with an invalid name is counted but never built",
			layout: layout.Curator,
			tree:   map[string][]layout.Entry{"we b": nil, "web": {node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": {"10.0.0.1:80"}}, services: 2,
		},
		{
			name:   "plain znodes carry their own parameters",
			layout: layout.Plain,
			tree: map[string][]layout.Entry{"web": {
				{Name: "10.0.0.1:80", Value: []byte(`{"weight":5}`)},
				{Name: "[2001:db8::1]:80"},
			}},
			want: map[string][]string{"web": {"10.0.0.1:80", "[2001:db8::1]:80"}}, services: 1,
		},
		{
			name:   "no services at all is an empty snapshot the engine holds",
			layout: layout.Plain,
			tree:   map[string][]layout.Entry{},
			want:   map[string][]string{}, services: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules
			if tt.r != nil {
				tt.r(&r)
			}
			snap, _ := tt.layout.Snapshot(layout.Tree{Root: "/services", Dirs: tt.tree}, r)
			testenv.CheckUpstreams(t, snap, tt.want, tt.services)
		})
	}
}

func TestLayoutPlainParamsReachTheServer(t *testing.T) {
	tree := map[string][]layout.Entry{"web": {{Name: "10.0.0.1:80", Value: []byte(`{"weight":5,"max_fails":0,"fail_timeout":30,"down":1}`)}}}
	snap, invalid := layout.Plain.Snapshot(layout.Tree{Root: "/", Dirs: tree}, rules)
	if len(invalid) != 0 {
		t.Fatal(invalid)
	}
	body := snap.Upstreams["web"].Body()
	if want := "server 10.0.0.1:80 weight=5 max_fails=0 fail_timeout=30s down;"; !strings.Contains(body, want) {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestLayoutParseAndOptions(t *testing.T) {
	// Nothing is defaulted here (config.ZooKeeperOptions resolves the
	// defaults): the zero value is refused, not taken as /services.
	if err := (Options{}).Validate(); err == nil {
		t.Error("the zero Options were accepted")
	}
	valid := Options{Root: "/services", Layout: layout.Curator, SessionTimeout: 10 * time.Second}
	if err := valid.Validate(); err != nil {
		t.Errorf("%+v: %v", valid, err)
	}
	with := func(f func(*Options)) Options { o := valid; f(&o); return o }
	if err := with(func(o *Options) { o.Layout = layout.Plain }).Validate(); err != nil {
		t.Errorf("the plain layout: %v", err)
	}
	if got := New(nil, with(func(o *Options) { o.Root = "/a/b/" }), rules, slog.New(slog.DiscardHandler), nil).opt.Root; got != "/a/b" {
		t.Errorf("trailing slash kept: %q", got)
	}
	for _, root := range []string{"/", "/services", "/a/b-c/d.e", "/a/b/"} {
		if err := with(func(o *Options) { o.Root = root }).Validate(); err != nil {
			t.Errorf("root %q: %v", root, err)
		}
	}
	for _, root := range []string{"", "services", "/a//b", "/a/../b", "/a/./b", "/a\nb", "/a\xffb"} {
		if err := with(func(o *Options) { o.Root = root }).Validate(); err == nil {
			t.Errorf("root %q accepted", root)
		}
	}
	for name, o := range map[string]Options{
		"an unknown layout":  with(func(o *Options) { o.Layout = "etcd" }),
		"a miscased layout":  with(func(o *Options) { o.Layout = "Curator" }),
		"an etcd layout":     with(func(o *Options) { o.Layout = layout.Upsync }),
		"no layout":          with(func(o *Options) { o.Layout = "" }),
		"no session timeout": with(func(o *Options) { o.SessionTimeout = 0 }),
		"a negative resync":  with(func(o *Options) { o.Resync = -time.Second }),
	} {
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), "zookeeper: ") {
			t.Errorf("%s: %v, want a zookeeper: error", name, err)
		}
	}
}
