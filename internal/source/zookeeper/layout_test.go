package zookeeper

import (
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = registry.Rules{
	Exclude:     []string{"zookeeper"},
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

// springCloudUp is what a Spring Cloud Zookeeper application registered,
// verbatim as `zkCli get /services/cloud-provider-payment/<id>` printed it in
// a public tutorial (Curator's JsonInstanceSerializer output, payload a
// Spring Cloud ZookeeperInstance).
const springCloudUp = `{"name":"cloud-provider-payment","id":"ece4ce6c-a457-4874-8b3c-09f465e57939","address":"192.168.101.9","port":8004,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"cloud-provider-payment","name":"cloud-provider-payment","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1658569595889,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`

// springCloudNoStatus is an older Spring Cloud Zookeeper registration,
// verbatim from another public tutorial: empty metadata, no instance_status.
const springCloudNoStatus = `{"name":"waiter-service","id":"53565860-2cdd-493f-ac9d-f7d4a546cbf6","address":"10.20.14.30","port":52930,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"waiter-service-1","name":"waiter-service","metadata":{}},"registrationTimeUTC":1628750040704,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`

// curator builds a Curator JSON body around the given members.
func curator(members string) string {
	return `{"name":"web","id":"i1",` + members + `,"registrationTimeUTC":1,"serviceType":"DYNAMIC"}`
}

func spring(metadata string) string {
	return curator(`"address":"10.0.0.1","port":8080,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web-1","name":"web","metadata":` + metadata + `}`)
}

func ptr[T any](v T) *T { return &v }

func TestLayoutCuratorInstance(t *testing.T) {
	tests := []struct {
		name string
		data string
		want registry.Instance // Service "web" and ID "i1" are filled in
		err  string            // substring of the error; "" for none
	}{
		{
			name: "a real Spring Cloud registration gives address, port, metadata as meta and tags",
			data: springCloudUp,
			want: registry.Instance{Address: "192.168.101.9", Port: 8004, Healthy: true,
				Meta: map[string]string{"instance_status": "UP"}, Tags: []string{"instance_status=UP"}},
		},
		{
			name: "a registration without instance_status is healthy",
			data: springCloudNoStatus,
			want: registry.Instance{Address: "10.20.14.30", Port: 52930, Healthy: true},
		},
		{
			name: "instance_status OUT_OF_SERVICE makes the instance unhealthy",
			data: spring(`{"instance_status":"OUT_OF_SERVICE"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false,
				Meta: map[string]string{"instance_status": "OUT_OF_SERVICE"}, Tags: []string{"instance_status=OUT_OF_SERVICE"}},
		},
		{
			name: "instance_status is compared exactly",
			data: spring(`{"instance_status":"up"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false,
				Meta: map[string]string{"instance_status": "up"}, Tags: []string{"instance_status=up"}},
		},
		{
			name: "Curator's enabled false makes the instance unhealthy",
			data: curator(`"address":"10.0.0.1","port":8080,"enabled":false`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false},
		},
		{
			name: "enabled true is healthy",
			data: curator(`"address":"10.0.0.1","port":8080,"enabled":true`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "metadata gray becomes the canary tag, sorted with the others",
			data: spring(`{"zone":"b","gray":"canary","weight":"3"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Meta: map[string]string{"zone": "b", "gray": "canary", "weight": "3"},
				Tags: []string{"gray=canary", "weight=3", "zone=b"}},
		},
		{
			name: "non-string metadata values are ignored",
			data: spring(`{"n":3,"b":true,"l":["x"],"o":{"k":"v"},"z":null,"ok":"yes"}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Meta: map[string]string{"ok": "yes"}, Tags: []string{"ok=yes"}},
		},
		{
			name: "a payload that is not an object is another application's own and ignored",
			data: curator(`"address":"10.0.0.1","port":8080,"payload":"opaque"`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "a null payload and null metadata are fine",
			data: curator(`"address":"10.0.0.1","port":8080,"payload":{"metadata":null}`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "port wins over sslPort when both are set",
			data: curator(`"address":"10.0.0.1","port":8080,"sslPort":8443`),
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "the JSON's name and id do not matter: the path does, as in Curator",
			data: `{"name":"other","id":"x","address":"10.0.0.1","port":8080}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "whitespace around the JSON is fine",
			data: " \n\t" + springCloudNoStatus + "\n",
			want: registry.Instance{Address: "10.20.14.30", Port: 52930, Healthy: true},
		},
		// Values the layout passes on for registry.Build to refuse (see
		// TestLayoutSnapshotDropsHostileZnodes): the layout reads, Build
		// validates.
		{
			name: "a hostname is passed on for Build to refuse",
			data: curator(`"address":"DESKTOP-7CK6BAS","port":8004`),
			want: registry.Instance{Address: "DESKTOP-7CK6BAS", Port: 8004, Healthy: true},
		},

		{name: "only an sslPort is refused: plain traffic to a TLS port fails", data: curator(`"address":"10.0.0.1","port":null,"sslPort":8443`), err: "TLS-only"},
		{name: "no port at all is refused", data: curator(`"address":"10.0.0.1","port":null`), err: "no port"},
		{name: "no address is refused", data: curator(`"port":8080`), err: "no address"},
		{name: "a null address is refused", data: curator(`"address":null,"port":8080`), err: "no address"},
		{name: "keys are matched exactly, not case-folded", data: `{"Address":"10.0.0.1","PORT":8080}`, err: "no address"},
		{name: "a port given as a string is refused", data: curator(`"address":"10.0.0.1","port":"8080"`), err: "port is a string"},
		{name: "a fractional port is refused", data: curator(`"address":"10.0.0.1","port":8080.0`), err: "not a 32-bit integer"},
		{name: "an exponent port is refused", data: curator(`"address":"10.0.0.1","port":8e3`), err: "not a 32-bit integer"},
		{name: "a huge port is refused", data: curator(`"address":"10.0.0.1","port":99999999999999999999999`), err: "not a 32-bit integer"},
		{name: "a port beyond 32 bits is refused before it can wrap", data: curator(`"address":"10.0.0.1","port":4294975376`), err: "not a 32-bit integer"},
		{name: "an address given as a number is refused", data: curator(`"address":167772161,"port":8080`), err: "address is a number"},
		{name: "an address given as a list is refused", data: curator(`"address":["10.0.0.1"],"port":8080`), err: "address is an array"},
		{name: "enabled given as a string is refused", data: curator(`"address":"10.0.0.1","port":8080,"enabled":"false"`), err: "enabled is a string"},
		{name: "metadata that is not an object is refused", data: spring(`"instance_status=UP"`), err: "payload.metadata is a string"},
		{name: "a repeated key is refused: readers could disagree", data: `{"address":"10.0.0.1","address":"6.6.6.6","port":8080}`, err: "appears twice"},
		{name: "a repeated metadata key is refused", data: spring(`{"gray":"a","gray":"b"}`), err: "appears twice"},
		{name: "empty data is refused", data: "", err: "not JSON"},
		{name: "truncated JSON is refused", data: springCloudUp[:100], err: "bad JSON"},
		{name: "a JSON list is refused", data: `[` + springCloudUp + `]`, err: "not a JSON object"},
		{name: "a JSON string is refused", data: `"10.0.0.1:8080"`, err: "not a JSON object"},
		{name: "data after the object is refused", data: springCloudUp + `{"address":"6.6.6.6"}`, err: "data after"},
		{name: "garbage is refused", data: "\x00;server 6.6.6.6:80;", err: "not JSON"},
		{name: "invalid UTF-8 is refused", data: "\x00\xff;server 6.6.6.6:80;", err: "not valid UTF-8"},
		{name: "a JavaScript comment is refused", data: `{"address":"10.0.0.1",/*x*/"port":8080}`, err: "bad JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Curator.Instance("web", "i1", []byte(tt.data))
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func TestLayoutPlainInstance(t *testing.T) {
	tests := []struct {
		name, node, data string
		want             registry.Instance // Service "web" and ID node are filled in
		err              string
	}{
		{
			name: "the znode name is the address and empty data takes the defaults",
			node: "10.0.0.1:8080",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "IPv6 comes in brackets",
			node: "[2001:db8::1]:80",
			want: registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name: "whitespace-only data is empty data",
			node: "10.0.0.1:8080", data: " \n",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "nginx-upsync parameters are read, 0/1 flags included",
			node: "10.0.0.1:8080", data: `{"weight":3,"max_fails":2,"fail_timeout":10,"max_conns":100,"backup":1,"down":0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(2), FailTimeout: ptr(10 * time.Second), MaxConns: ptr(100), Backup: ptr(true), Down: ptr(false)}},
		},
		{
			name: "JSON booleans work for the flags and unknown keys are ignored",
			node: "10.0.0.1:8080", data: `{"down":true,"comment":"drain"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{Down: ptr(true)}},
		},
		{
			name: "a hostname is passed on for Build to refuse",
			node: "web.internal:8080",
			want: registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name: "port 70000 is passed on for Build to refuse",
			node: "10.0.0.1:70000",
			want: registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},

		{name: "a name without a port is refused", node: "10.0.0.1", err: "not <ip>:<port>"},
		{name: "an empty port is refused", node: "10.0.0.1:", err: "ASCII digits"},
		{name: "a signed port is refused", node: "10.0.0.1:+80", err: "ASCII digits"},
		{name: "unicode digits in the port are refused", node: "10.0.0.1:８０", err: "ASCII digits"},
		{name: "six digits are refused", node: "10.0.0.1:000080", err: "ASCII digits"},
		{name: "a port with trailing text is refused", node: "10.0.0.1:80;", err: "ASCII digits"},
		{name: "an injected second server is refused", node: "10.0.0.1:80;server 6.6.6.6:80", err: "znode name"},
		{name: "bare IPv6 is refused", node: "2001:db8::1:80", err: "needs brackets"},
		{name: "brackets around IPv4 are refused", node: "[10.0.0.1]:80", err: "only an IPv6"},
		{name: "an unclosed bracket is refused", node: "[2001:db8::1:80", err: "only an IPv6"},
		{name: "data that is not JSON is refused", node: "10.0.0.1:80", data: "weight=3", err: "not JSON"},
		{name: "a weight given as a string is refused", node: "10.0.0.1:80", data: `{"weight":"3"}`, err: "weight is a string"},
		{name: "weight 0 is refused", node: "10.0.0.1:80", data: `{"weight":0}`, err: "weight 0 out of range"},
		{name: "a huge weight is refused", node: "10.0.0.1:80", data: `{"weight":1e9}`, err: "not a 32-bit integer"},
		{name: "a negative max_fails is refused", node: "10.0.0.1:80", data: `{"max_fails":-1}`, err: "max_fails -1 out of range"},
		{name: "a fail_timeout that would wrap around is refused", node: "10.0.0.1:80", data: `{"fail_timeout":2147483647}`, err: "fail_timeout 2147483647 out of range"},
		{name: "a fail_timeout given as text is refused", node: "10.0.0.1:80", data: `{"fail_timeout":"10s"}`, err: "fail_timeout is a string"},
		{name: "down 2 is refused", node: "10.0.0.1:80", data: `{"down":2}`, err: "want 0, 1, true or false"},
		{name: "a repeated parameter is refused", node: "10.0.0.1:80", data: `{"weight":1,"weight":100}`, err: "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Plain.Instance("web", tt.node, []byte(tt.data))
			tt.want.ID = tt.node
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func checkInstance(t *testing.T, got registry.Instance, err error, want registry.Instance, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	want.Service = "web"
	if want.ID == "" {
		want.ID = "i1"
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

// node is a Curator znode of service web on addr:port.
func node(name, addr string, port int) Znode {
	return Znode{Name: name, Data: []byte(curator(`"address":"` + addr + `","port":` + strconv.Itoa(port)))}
}

func servers(u upstream.Upstream) []string {
	var out []string
	for _, s := range u.Servers {
		out = append(out, s.Addr.String())
	}
	return out
}

func TestLayoutSnapshotDropsHostileZnodes(t *testing.T) {
	tree := map[string][]Znode{
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
			{Name: "weight", Data: []byte(spring(`{"weight":"1 backup"}`))},
			{Name: "gray", Data: []byte(spring(`{"gray":"x;}"}`))},
			{Name: "badjson", Data: []byte(`{"address":"10.0.0.11","port":80`)},
			{Name: "unreadable", Err: errors.New("zk: not authenticated")},
		},
		"we#b": {node("bad-name", "10.0.0.12", 8080)},
	}
	snap, invalid := Curator.Snapshot("/services", tree, rules)
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
		layout   Layout
		tree     map[string][]Znode
		r        func(*registry.Rules)
		want     map[string][]string // upstream → servers; a nil list is an upstream with no servers
		services int
	}{
		{
			name:   "instances of a service become one upstream, sorted",
			layout: Curator,
			tree:   map[string][]Znode{"web": {node("b", "10.0.0.2", 80), node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "an empty service directory is an upstream with no servers, so the engine holds its last ones",
			layout: Curator,
			tree:   map[string][]Znode{"web": nil, "api": {node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": nil, "api": {"10.0.0.1:80"}}, services: 2,
		},
		{
			name:   "a service with only invalid znodes is held the same way",
			layout: Curator,
			tree:   map[string][]Znode{"web": {{Name: "x", Data: []byte("{")}, node("y", "evil.example.com", 80)}},
			want:   map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "unhealthy instances leave the upstream known with no servers",
			layout: Curator,
			tree:   map[string][]Znode{"web": {{Name: "a", Data: []byte(spring(`{"instance_status":"OUT_OF_SERVICE"}`))}}},
			want:   map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "metadata gray=canary goes to its own upstream and weight meta applies",
			layout: Curator,
			tree: map[string][]Znode{"web": {
				node("a", "10.0.0.1", 80),
				{Name: "b", Data: []byte(spring(`{"gray":"canary"}`))},
			}},
			want: map[string][]string{"web": {"10.0.0.1:80"}, "web_canary": {"10.0.0.1:8080"}}, services: 1,
		},
		{
			name:   "excluded services are neither built nor counted",
			layout: Curator,
			tree:   map[string][]Znode{"zookeeper": {node("a", "10.0.0.1", 80)}, "web": {node("a", "10.0.0.2", 80)}},
			want:   map[string][]string{"web": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "a service whose valid instances lack the required tags yields nothing",
			layout: Curator,
			tree:   map[string][]Znode{"web": {node("a", "10.0.0.1", 80)}, "api": {{Name: "a", Data: []byte(spring(`{"env":"prod"}`))}}},
			r:      func(r *registry.Rules) { r.RequireTags = []string{"env=prod"} },
			want:   map[string][]string{"api": {"10.0.0.1:8080"}}, services: 2,
		},
		{
			name:   "a service directory with an invalid name is counted but never built",
			layout: Curator,
			tree:   map[string][]Znode{"we b": nil, "web": {node("a", "10.0.0.1", 80)}},
			want:   map[string][]string{"web": {"10.0.0.1:80"}}, services: 2,
		},
		{
			name:   "plain znodes carry their own parameters",
			layout: Plain,
			tree: map[string][]Znode{"web": {
				{Name: "10.0.0.1:80", Data: []byte(`{"weight":5}`)},
				{Name: "[2001:db8::1]:80"},
			}},
			want: map[string][]string{"web": {"10.0.0.1:80", "[2001:db8::1]:80"}}, services: 1,
		},
		{
			name:   "no services at all is an empty snapshot the engine holds",
			layout: Plain,
			tree:   map[string][]Znode{},
			want:   map[string][]string{}, services: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules
			if tt.r != nil {
				tt.r(&r)
			}
			snap, _ := tt.layout.Snapshot("/services", tt.tree, r)
			got := map[string][]string{}
			for name, u := range snap.Upstreams {
				got[name] = servers(u)
				if u.Keepalive != 16 {
					t.Errorf("%s: keepalive %d, want the rules' 16", name, u.Keepalive)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("upstreams %v, want %v", got, tt.want)
			}
			if snap.Services != tt.services {
				t.Errorf("services = %d, want %d", snap.Services, tt.services)
			}
		})
	}
}

func TestLayoutPlainParamsReachTheServer(t *testing.T) {
	tree := map[string][]Znode{"web": {{Name: "10.0.0.1:80", Data: []byte(`{"weight":5,"max_fails":0,"fail_timeout":30,"down":1}`)}}}
	snap, invalid := Plain.Snapshot("/", tree, rules)
	if len(invalid) != 0 {
		t.Fatal(invalid)
	}
	body := snap.Upstreams["web"].Body()
	if want := "server 10.0.0.1:80 weight=5 max_fails=0 fail_timeout=30s down;"; !strings.Contains(body, want) {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestLayoutParseAndOptions(t *testing.T) {
	for _, s := range []string{"curator", "plain"} {
		if _, err := ParseLayout(s); err != nil {
			t.Errorf("ParseLayout(%q): %v", s, err)
		}
	}
	if _, err := ParseLayout("Curator"); err == nil {
		t.Error("ParseLayout accepted a miscased name")
	}
	o := Options{}.withDefaults()
	if o.Root != "/services" || o.Layout != Curator || o.SessionTimeout != 10*time.Second || o.Resync != 0 {
		t.Errorf("defaults %+v", o)
	}
	if got := (Options{Root: "/a/b/"}).withDefaults().Root; got != "/a/b" {
		t.Errorf("trailing slash kept: %q", got)
	}
	for _, root := range []string{"/", "/services", "/a/b-c/d.e"} {
		if err := (Options{Root: root}).Validate(); err != nil {
			t.Errorf("root %q: %v", root, err)
		}
	}
	for _, root := range []string{"services", "/a//b", "/a/../b", "/a/./b", "/a\nb"} {
		if err := (Options{Root: root}).Validate(); err == nil {
			t.Errorf("root %q accepted", root)
		}
	}
	if err := (Options{Layout: "etcd"}).Validate(); err == nil {
		t.Error("unknown layout accepted")
	}
	if got := Join("/", "web", "a"); got != "/web/a" {
		t.Errorf("Join under / = %q", got)
	}
	if got := Join("/services", "web"); got != "/services/web" {
		t.Errorf("Join = %q", got)
	}
}
