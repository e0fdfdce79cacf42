package consul

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = registry.Rules{
	Exclude:     []string{"consul"},
	CanaryTag:   "gray",
	WeightMeta:  "weight",
	Weight:      1,
	MaxFails:    3,
	FailTimeout: 10 * time.Second,
	Keepalive:   16,
	// The test backends listen on loopback, which the address policy
	// refuses by default: the tests opt in explicitly, as an operator
	// would with upstreams.allow_addresses.
	Addresses: upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}},
}

type inst struct {
	id, nodeAddr, svcAddr string
	port                  int
	tags                  []string
	meta                  map[string]string
	checks                []string // statuses; the first is the node's serfHealth
}

func entry(svc string, i inst) *api.ServiceEntry {
	e := &api.ServiceEntry{
		Node:    &api.Node{Node: "node-" + i.id, Address: i.nodeAddr},
		Service: &api.AgentService{ID: i.id, Service: svc, Address: i.svcAddr, Port: i.port, Tags: i.tags, Meta: i.meta},
	}
	for n, st := range i.checks {
		id := "service:" + i.id
		if n == 0 {
			id = "serfHealth"
		}
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: id, Status: st})
	}
	return e
}

func entries(svc string, is ...inst) map[string][]*api.ServiceEntry {
	m := map[string][]*api.ServiceEntry{svc: nil}
	for _, i := range is {
		m[svc] = append(m[svc], entry(svc, i))
	}
	return m
}

var ok = []string{api.HealthPassing, api.HealthPassing}

func TestBuild(t *testing.T) {
	tests := []struct {
		name    string
		in      map[string][]*api.ServiceEntry
		r       func(*registry.Rules)
		passing bool     // only_passing
		want    string   // rendered file without header, "" for none
		dropped []string // substrings of the drop reasons, in order
	}{
		{
			name: "service address is preferred and defaults apply",
			in:   entries("web", inst{id: "w1", nodeAddr: "10.0.0.1", svcAddr: "10.1.0.1", port: 8080, checks: ok}),
			want: "upstream web {\n    server 10.1.0.1:8080 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "node address is the fallback",
			in:   entries("web", inst{id: "w1", nodeAddr: "10.0.0.1", port: 8080, checks: ok}),
			want: "upstream web {\n    server 10.0.0.1:8080 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "IPv6 is rendered in brackets",
			in:   entries("web", inst{id: "w1", svcAddr: "2001:db8::1", port: 80, checks: ok}),
			want: "upstream web {\n    server [2001:db8::1]:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "weight comes from service meta",
			in:   entries("web", inst{id: "w1", svcAddr: "10.0.0.1", port: 80, meta: map[string]string{"weight": "5"}, checks: ok}),
			want: "upstream web {\n    server 10.0.0.1:80 weight=5 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "a critical service check takes the instance out but keeps the upstream known",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: []string{api.HealthPassing, api.HealthCritical}},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, checks: ok}),
			want: "upstream web {\n    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "a critical node check (serfHealth) takes the instance out",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: []string{api.HealthCritical, api.HealthPassing}},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, checks: ok}),
			want: "upstream web {\n    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "maintenance takes the instance out",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: []string{api.HealthPassing, api.HealthMaint}},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, checks: ok}),
			want: "upstream web {\n    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "warning stays in by default",
			in:   entries("web", inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: []string{api.HealthPassing, api.HealthWarning}}),
			want: "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "warning goes out with only_passing",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: []string{api.HealthPassing, api.HealthWarning}},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, checks: ok}),
			passing: true,
			want:    "upstream web {\n    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "gray tag sends canaries to their own upstream, gray=default to the main one",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, tags: []string{"gray=default"}, checks: ok},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, tags: []string{"v2", "gray=canary"}, checks: ok}),
			want: "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n\n" +
				"upstream web_canary {\n    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "per-upstream keepalive overrides the default",
			in:   entries("web", inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: ok}),
			r:    func(r *registry.Rules) { r.KeepaliveFor = map[string]int{"web": 64} },
			want: "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 64;\n}\n",
		},
		{
			name: "instances without the required tags are ignored",
			in: entries("web",
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, tags: []string{"http"}, checks: ok},
				inst{id: "w2", svcAddr: "10.0.0.2", port: 80, tags: []string{"grpc"}, checks: ok}),
			r:    func(r *registry.Rules) { r.RequireTags = []string{"http"} },
			want: "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		},
		{
			name: "two instances on one address: the first by id wins, the other is reported",
			in: entries("web",
				inst{id: "w2", svcAddr: "10.0.0.1", port: 80, meta: map[string]string{"weight": "9"}, checks: ok},
				inst{id: "w1", svcAddr: "10.0.0.1", port: 80, checks: ok}),
			want:    "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
			dropped: []string{`already used by instance w1@node-w1`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules
			if tt.r != nil {
				tt.r(&r)
			}
			st, dropped := build(tt.in, r, tt.passing)
			got := strings.TrimPrefix(string(upstream.RenderFile(st)), upstream.FileHeader)
			got = strings.TrimPrefix(got, "\n")
			if got != tt.want {
				t.Errorf("rendered:\n%s\nwant:\n%s", got, tt.want)
			}
			if len(dropped) != len(tt.dropped) {
				t.Fatalf("dropped %v, want %d", dropped, len(tt.dropped))
			}
			for i, d := range dropped {
				if !strings.Contains(d.Reason, tt.dropped[i]) {
					t.Errorf("drop %d: %q, want %q", i, d.Reason, tt.dropped[i])
				}
			}
		})
	}
}

// Every hostile value the registry could hold must be dropped with a
// reason: none may reach a rendered file or a dyups body.
func TestBuildDropsHostileRegistryData(t *testing.T) {
	good := inst{id: "good", svcAddr: "10.0.0.9", port: 80, checks: ok}
	hostile := []struct {
		name string
		svc  string
		i    inst
	}{
		{"semicolon in address", "web", inst{svcAddr: "10.0.0.1;server 6.6.6.6:80", port: 80}},
		{"brace in address", "web", inst{svcAddr: "10.0.0.1}", port: 80}},
		{"comment in address", "web", inst{svcAddr: "10.0.0.1#", port: 80}},
		{"newline in address", "web", inst{svcAddr: "10.0.0.1\nserver 6.6.6.6:80", port: 80}},
		{"quote in address", "web", inst{svcAddr: `"10.0.0.1"`, port: 80}},
		{"hostname", "web", inst{svcAddr: "evil.example.com", port: 80}},
		{"hostname on the node", "web", inst{nodeAddr: "node.local", port: 80}},
		{"no address at all", "web", inst{port: 80}},
		{"port zero", "web", inst{svcAddr: "10.0.0.1", port: 0}},
		{"port 70000", "web", inst{svcAddr: "10.0.0.1", port: 70000}},
		{"negative port", "web", inst{svcAddr: "10.0.0.1", port: -1}},
		{"unicode digits", "web", inst{svcAddr: "１０.0.0.1", port: 80}},
		{"zone", "web", inst{svcAddr: "fe80::1%eth0", port: 80}},
		{"weight meta with directive", "web", inst{svcAddr: "10.0.0.1", port: 80, meta: map[string]string{"weight": "1 backup"}}},
		{"weight meta zero", "web", inst{svcAddr: "10.0.0.1", port: 80, meta: map[string]string{"weight": "0"}}},
		{"weight meta huge", "web", inst{svcAddr: "10.0.0.1", port: 80, meta: map[string]string{"weight": "99999999999999"}}},
		{"gray tag with semicolon", "web", inst{svcAddr: "10.0.0.1", port: 80, tags: []string{"gray=x;}"}}},
		{"gray tag with newline", "web", inst{svcAddr: "10.0.0.1", port: 80, tags: []string{"gray=x\ny"}}},
		{"gray tag with unicode", "web", inst{svcAddr: "10.0.0.1", port: 80, tags: []string{"gray=灰"}}},
		{"conflicting gray tags", "web", inst{svcAddr: "10.0.0.1", port: 80, tags: []string{"gray=a", "gray=b"}}},
		{"service name with semicolon", "we;b", inst{svcAddr: "10.0.0.1", port: 80}},
		{"service name with brace", "web{", inst{svcAddr: "10.0.0.1", port: 80}},
		{"service name with slash", "../list", inst{svcAddr: "10.0.0.1", port: 80}},
		{"service name with space", "web server", inst{svcAddr: "10.0.0.1", port: 80}},
		{"service name with unicode", "wéb", inst{svcAddr: "10.0.0.1", port: 80}},
		// The address policy (the tests' rules allow 127.0.0.0/8 only).
		{"cloud metadata", "web", inst{svcAddr: "169.254.169.254", port: 80}},
		{"IPv6 link-local", "web", inst{svcAddr: "fe80::1", port: 80}},
		{"multicast", "web", inst{svcAddr: "224.0.0.1", port: 80}},
		{"broadcast", "web", inst{svcAddr: "255.255.255.255", port: 80}},
		{"unspecified", "web", inst{svcAddr: "0.0.0.0", port: 80}},
		{"IPv4-compatible IPv6", "web", inst{svcAddr: "::1.2.3.4", port: 80}},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			h.i.id = "bad\n;{id}"
			h.i.checks = ok
			in := map[string][]*api.ServiceEntry{
				h.svc:  {entry(h.svc, h.i)},
				"good": {entry("good", good)},
			}
			st, dropped := build(in, rules, false)
			if len(dropped) != 1 || dropped[0].Service != h.svc {
				t.Fatalf("dropped %v, want exactly the hostile instance", dropped)
			}
			if strings.Contains(dropped[0].Instance, "\n") {
				t.Errorf("instance label %q carries a raw newline into logs", dropped[0].Instance)
			}
			if _, ok := st[h.svc]; ok && len(st[h.svc].Servers) > 0 {
				t.Fatalf("hostile upstream has servers: %+v", st[h.svc])
			}
			// An upstream with no servers stays known to the engine, which
			// never renders it.
			for name, u := range st {
				if len(u.Servers) == 0 {
					delete(st, name)
				}
			}
			file := upstream.RenderFile(st)
			back, err := upstream.ParseFile(file)
			if err != nil {
				t.Fatalf("rendered file does not parse back: %v\n%s", err, file)
			}
			if len(back) != 1 || len(back["good"].Servers) != 1 || back["good"].Servers[0].Addr.String() != "10.0.0.9:80" {
				t.Fatalf("file holds more than the good instance:\n%s", file)
			}
		})
	}
}

// build is what the source does with a read: convert, then registry.Build.
func build(in map[string][]*api.ServiceEntry, r registry.Rules, onlyPassing bool) (upstream.State, []registry.Dropped) {
	services := map[string][]registry.Instance{}
	for svc, entries := range in {
		services[svc] = Instances(entries, onlyPassing)
	}
	return registry.Build(services, r)
}

func TestWantService(t *testing.T) {
	r := registry.Rules{Exclude: []string{"consul"}}
	if r.WantService("consul") || !r.WantService("web") {
		t.Error("exclude list")
	}
	r.Include = []string{"web"}
	if !r.WantService("web") || r.WantService("api") {
		t.Error("allow list")
	}
}
