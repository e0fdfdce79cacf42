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

// build is what the source does with a read: convert and build each
// service's part, then merge them.
func build(in map[string][]*api.ServiceEntry, r registry.Rules, onlyPassing bool) (upstream.State, []registry.Dropped) {
	return buildWith(in, r, Convert{OnlyPassing: onlyPassing})
}

func buildWith(in map[string][]*api.ServiceEntry, r registry.Rules, c Convert) (upstream.State, []registry.Dropped) {
	var parts []registry.Part
	for svc, entries := range in {
		parts = append(parts, c.BuildService(svc, entries, r))
	}
	return registry.Merge(parts)
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

// consul.weights native and consul.address_from: where the weight and the
// address come from (issue 17, part 4).
func TestConvertNativeWeightsAndTaggedAddresses(t *testing.T) {
	const (
		out      = "" // the instance serves nothing: no server line
		defaults = "max_fails=3 fail_timeout=10s"
	)
	type tc struct {
		name      string
		c         Convert
		status    string // of the service check
		weights   api.AgentWeights
		meta      map[string]string
		svcTagged map[string]api.ServiceAddress
		nodeAddr  string
		nodeTag   map[string]string
		want      string // the server line, "" for none
		dropped   string // substring of the drop reason, "" for none
	}
	tests := []tc{
		{name: "by default the weight meta applies and Weights are ignored",
			status: api.HealthPassing, weights: api.AgentWeights{Passing: 7, Warning: 2}, meta: map[string]string{"weight": "3"},
			want: "server 10.1.0.1:80 weight=3 " + defaults},
		{name: "native: a passing instance takes Weights.Passing, over the weight meta",
			c:      Convert{NativeWeights: true},
			status: api.HealthPassing, weights: api.AgentWeights{Passing: 7, Warning: 2}, meta: map[string]string{"weight": "3"},
			want: "server 10.1.0.1:80 weight=7 " + defaults},
		{name: "native: an instance in warning keeps serving at Weights.Warning",
			c:      Convert{NativeWeights: true},
			status: api.HealthWarning, weights: api.AgentWeights{Passing: 7, Warning: 2},
			want: "server 10.1.0.1:80 weight=2 " + defaults},
		{name: "native: Weights.Warning 0 takes an instance in warning out",
			c:      Convert{NativeWeights: true},
			status: api.HealthWarning, weights: api.AgentWeights{Passing: 7, Warning: 0},
			want: out},
		{name: "native: Weights.Warning 0 does not touch a passing instance",
			c:      Convert{NativeWeights: true},
			status: api.HealthPassing, weights: api.AgentWeights{Passing: 7, Warning: 0},
			want: "server 10.1.0.1:80 weight=7 " + defaults},
		{name: "native with only_passing: warning is out whatever its weight",
			c:      Convert{NativeWeights: true, OnlyPassing: true},
			status: api.HealthWarning, weights: api.AgentWeights{Passing: 7, Warning: 2},
			want: out},
		{name: "native: critical is out",
			c:      Convert{NativeWeights: true},
			status: api.HealthCritical, weights: api.AgentWeights{Passing: 7, Warning: 2},
			want: out},
		{name: "native: no Weights in the entry (a catalog registration) keeps the meta",
			c:      Convert{NativeWeights: true},
			status: api.HealthWarning, meta: map[string]string{"weight": "3"},
			want: "server 10.1.0.1:80 weight=3 " + defaults},
		{name: "native: a weight above nginx's limit is dropped with the reason",
			c:      Convert{NativeWeights: true},
			status: api.HealthPassing, weights: api.AgentWeights{Passing: 100000, Warning: 1},
			dropped: "weight"},
		{name: "native: a negative warning weight is dropped",
			c:      Convert{NativeWeights: true},
			status: api.HealthWarning, weights: api.AgentWeights{Passing: 1, Warning: -1},
			dropped: "weight"},
		{name: "address_from: the service's tagged address and its port",
			c:      Convert{AddressFrom: "wan_ipv4"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"wan_ipv4": {Address: "10.9.0.1", Port: 8443}, "lan_ipv4": {Address: "10.1.0.1", Port: 80}},
			want: "server 10.9.0.1:8443 weight=1 " + defaults},
		{name: "address_from: a tagged address without port takes the service port",
			c:      Convert{AddressFrom: "lan"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"lan": {Address: "10.9.0.2"}},
			want: "server 10.9.0.2:80 weight=1 " + defaults},
		{name: "address_from: the node's tagged address when the service has none",
			c:      Convert{AddressFrom: "wan"},
			status: api.HealthPassing, nodeTag: map[string]string{"wan": "10.8.0.1", "lan": "10.0.0.1"},
			want: "server 10.8.0.1:80 weight=1 " + defaults},
		{name: "address_from: missing on service and node is dropped with the reason, not sent to Service.Address",
			c:      Convert{AddressFrom: "wan_ipv6"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"wan_ipv4": {Address: "10.9.0.1", Port: 80}},
			nodeTag: map[string]string{"wan": "10.8.0.1"},
			dropped: `no tagged address "wan_ipv6" on the service or its node`},
		{name: "address_from: a hostile tagged address is dropped by validation",
			c:      Convert{AddressFrom: "wan"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"wan": {Address: "10.9.0.1;server 6.6.6.6:80", Port: 80}},
			dropped: "10.9.0.1;server"},
		{name: "address_from: a tagged address the policy refuses is dropped",
			c:      Convert{AddressFrom: "wan"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"wan": {Address: "169.254.169.254", Port: 80}},
			dropped: "refused"},
		{name: "address_from: a tagged port out of range is dropped",
			c:      Convert{AddressFrom: "wan"},
			status: api.HealthPassing, svcTagged: map[string]api.ServiceAddress{"wan": {Address: "10.9.0.1", Port: 70000}},
			dropped: "port"},
		{name: "address_from and native together",
			c:      Convert{AddressFrom: "lan_ipv4", NativeWeights: true},
			status: api.HealthWarning, weights: api.AgentWeights{Passing: 4, Warning: 2},
			svcTagged: map[string]api.ServiceAddress{"lan_ipv4": {Address: "10.7.0.1", Port: 81}},
			want:      "server 10.7.0.1:81 weight=2 " + defaults},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodeAddr := tt.nodeAddr
			if nodeAddr == "" {
				nodeAddr = "10.0.0.1"
			}
			e := &api.ServiceEntry{
				Node: &api.Node{Node: "n1", Address: nodeAddr, TaggedAddresses: tt.nodeTag},
				Service: &api.AgentService{ID: "w1", Service: "web", Address: "10.1.0.1", Port: 80, Meta: tt.meta,
					Weights: tt.weights, TaggedAddresses: tt.svcTagged},
				Checks: api.HealthChecks{
					{CheckID: "serfHealth", Status: api.HealthPassing},
					{CheckID: "service:w1", Status: tt.status},
				},
			}
			st, dropped := buildWith(map[string][]*api.ServiceEntry{"web": {e}}, rules, tt.c)
			u, ok := st["web"]
			if !ok {
				t.Fatalf("upstream web unknown: a service whose instance is out or dropped must stay known; state %v", st)
			}
			var got string
			if len(u.Servers) == 1 {
				got = strings.TrimSuffix(strings.TrimSpace(string(upstream.RenderFile(upstream.State{"web": u}))), "}")
				got = strings.TrimSpace(got[strings.Index(got, "server "):strings.Index(got, ";")])
			} else if len(u.Servers) > 1 {
				t.Fatalf("servers %v, want at most one", u.Servers)
			}
			if got != tt.want {
				t.Errorf("server line %q, want %q", got, tt.want)
			}
			switch {
			case tt.dropped == "" && len(dropped) > 0:
				t.Errorf("dropped %v, want none", dropped)
			case tt.dropped != "" && (len(dropped) != 1 || !strings.Contains(dropped[0].Reason, tt.dropped)):
				t.Errorf("dropped %v, want one whose reason holds %q", dropped, tt.dropped)
			}
		})
	}
}

func TestCheckAddressFrom(t *testing.T) {
	for _, k := range append([]string{""}, TaggedAddressKeys...) {
		if err := CheckAddressFrom(k); err != nil {
			t.Errorf("%q refused: %v", k, err)
		}
	}
	for _, k := range []string{"virtual", "LAN", "lan ", "service"} {
		if err := CheckAddressFrom(k); err == nil {
			t.Errorf("%q accepted", k)
		}
	}
}
