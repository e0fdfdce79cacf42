package etcd

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = testenv.Rules("skipped")

// upsyncDefault is the value nginx-upsync-module's README tells users to
// store for a server in etcd (and what the module itself writes back).
const upsyncDefault = `{"weight":1,"max_fails":2,"fail_timeout":10,"down":0}`

var servers = testenv.Addrs

func kv(key, value string) KV { return KV{Key: key, Value: []byte(value)} }

// svc is a service layout value.
func svc(addr string, port int, extra string) string {
	return `{"address":"` + addr + `","port":` + strconv.Itoa(port) + extra + `}`
}

func TestLayoutSnapshot(t *testing.T) {
	tests := []struct {
		name     string
		layout   layout.Layout
		dir      string
		kvs      []KV
		r        func(*registry.Rules)
		want     map[string][]string // upstream → servers; a nil list is an upstream with no servers
		services int
		invalid  []string // keys reported invalid
	}{
		{
			name:   "an nginx-upsync tree is picked up unchanged, one upstream per directory",
			layout: layout.Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/test/192.168.1.100:8080", upsyncDefault),
				kv("/upstreams/test/192.168.1.101:8080", ""),
				kv("/upstreams/bar/[2001:db8::1]:80", `{"weight":5}`),
			},
			want:     map[string][]string{"test": {"192.168.1.100:8080", "192.168.1.101:8080"}, "bar": {"[2001:db8::1]:80"}},
			services: 2,
		},
		{
			name:   "no keys at all is an empty snapshot, which the engine holds",
			layout: layout.Upsync, dir: "/upstreams/",
			want: map[string][]string{}, services: 0,
		},
		{
			name:   "a service whose keys are all invalid keeps its upstream with no servers, so a bad write cannot empty nginx",
			layout: layout.Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/web/10.0.0.1:80", `{"weight":0}`),
				kv("/upstreams/web/evil.example.com:80", ""),
				kv("/upstreams/api/10.0.0.2:80", ""),
			},
			want:     map[string][]string{"web": nil, "api": {"10.0.0.2:80"}},
			services: 2,
			invalid:  []string{"/upstreams/web/10.0.0.1:80", "/upstreams/web/evil.example.com:80"},
		},
		{
			name:   "instances of a service become one sorted upstream, in the service layout",
			layout: layout.Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/b", svc("10.0.0.2", 80, "")),
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
			},
			want: map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "unhealthy instances leave the upstream known with no servers",
			layout: layout.Service, dir: "/services/",
			kvs:  []KV{kv("/services/web/a", svc("10.0.0.1", 80, `,"healthy":false`))},
			want: map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "tag gray=canary goes to its own upstream and weight meta applies",
			layout: layout.Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
				kv("/services/web/b", svc("10.0.0.2", 80, `,"tags":["gray=canary"],"meta":{"weight":"7"}`)),
			},
			want: map[string][]string{"web": {"10.0.0.1:80"}, "web_canary": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "excluded services are neither built nor counted",
			layout: layout.Service, dir: "/services/",
			kvs: []KV{
				kv("/services/skipped/a", svc("10.0.0.1", 80, "")),
				kv("/services/web/a", svc("10.0.0.2", 80, "")),
			},
			want: map[string][]string{"web": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "a service whose readable instances lack the required tags yields nothing",
			layout: layout.Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
				kv("/services/api/a", svc("10.0.0.2", 80, `,"tags":["env=prod"]`)),
			},
			r:    func(r *registry.Rules) { r.RequireTags = []string{"env=prod"} },
			want: map[string][]string{"api": {"10.0.0.2:80"}}, services: 2,
		},
		{
			name:   "a service with an invalid name is counted but never built",
			layout: layout.Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/we b/10.0.0.1:80", ""),
				kv("/upstreams/web/10.0.0.2:80", ""),
			},
			want: map[string][]string{"web": {"10.0.0.2:80"}}, services: 2,
			invalid: []string{"/upstreams/we b/10.0.0.1:80"},
		},
		{
			name:   "keys that do not have the shape <prefix>/<service>/<name> are invalid and do not make a service",
			layout: layout.Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/web", ""),
				kv("/upstreams//10.0.0.1:80", ""),
				kv("/upstreams/web/", ""),
				kv("/upstreams/web/10.0.0.1:80/x", ""),
				kv("/upstreams/api/10.0.0.2:80", ""),
			},
			want:     map[string][]string{"api": {"10.0.0.2:80"}},
			services: 1,
			invalid:  []string{"/upstreams//10.0.0.1:80", "/upstreams/web", "/upstreams/web/", "/upstreams/web/10.0.0.1:80/x"},
		},
		{
			name:   "two keys naming one address: the first by name wins, the other is reported by its key",
			layout: layout.Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/web/10.0.0.1:80", ""),
				kv("/upstreams/web/10.0.0.1:080", `{"weight":9}`),
			},
			want: map[string][]string{"web": {"10.0.0.1:80"}}, services: 1,
			invalid: []string{"/upstreams/web/10.0.0.1:80"},
		},
		{
			name:   "the root prefix works: every top-level directory is a service",
			layout: layout.Upsync, dir: "/",
			kvs:  []KV{kv("/web/10.0.0.1:80", "")},
			want: map[string][]string{"web": {"10.0.0.1:80"}}, services: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules
			if tt.r != nil {
				tt.r(&r)
			}
			snap, invalid := Snapshot(tt.layout, tt.dir, tt.kvs, r)
			testenv.CheckUpstreams(t, snap, tt.want, tt.services)
			var keys []string
			for _, iv := range invalid {
				keys = append(keys, iv.Path)
				if iv.Reason == "" {
					t.Errorf("%q: no reason", iv.Path)
				}
			}
			if !slices.Equal(keys, tt.invalid) {
				t.Errorf("invalid keys %q, want %q", keys, tt.invalid)
			}
		})
	}
}

// Hostile keys and values of both layouts are dropped with a reason that
// names the key, and nothing of them reaches the rendered file.
func TestLayoutSnapshotDropsHostileKeys(t *testing.T) {
	tests := []struct {
		layout layout.Layout
		dir    string
		good   KV
		bad    []KV
	}{
		{
			layout: layout.Upsync, dir: "/upstreams/",
			good: kv("/upstreams/web/10.0.0.1:8080", upsyncDefault),
			bad: []KV{
				kv("/upstreams/web/10.0.0.2:80;server 6.6.6.6:80", ""),
				kv("/upstreams/web/10.0.0.3\nserver 6.6.6.6:80", ""),
				kv("/upstreams/web/10.0.0.4}:80", ""),
				kv("/upstreams/web/10.0.0.5#:80", ""),
				kv(`/upstreams/web/10.0.0.6":80`, ""),
				kv("/upstreams/web/evil.example.com:80", ""),
				kv("/upstreams/web/１０.0.0.7:80", ""),
				kv("/upstreams/web/10.0.0.8:0", ""),
				kv("/upstreams/web/10.0.0.9:70000", ""),
				kv("/upstreams/web/[fe80::1%eth0]:80", ""),
				kv("/upstreams/web/0.0.0.0:80", ""),
				kv("/upstreams/web/10.0.0.10:80", `{"weight":"1 backup"}`),
				kv("/upstreams/web/10.0.0.11:80", `{"weight":99999999999999999999}`),
				kv("/upstreams/web/10.0.0.12:80", `{"down":"1;"}`),
				kv("/upstreams/web/10.0.0.13:80", `["weight",3]`),
				kv("/upstreams/web/10.0.0.14:80", `{"weight":3`),
				kv("/upstreams/web/10.0.0.15:80", "\xff\xfe"),
				kv("/upstreams/we#b/10.0.0.16:80", ""),
				kv("/upstreams/we\nb/10.0.0.17:80", ""),
			},
		},
		{
			layout: layout.Service, dir: "/services/",
			good: kv("/services/web/good", svc("10.0.0.1", 8080, "")),
			bad: []KV{
				kv("/services/web/semicolon", svc("10.0.0.2;server 6.6.6.6:80", 8080, "")),
				kv("/services/web/newline", `{"address":"10.0.0.3\nserver 6.6.6.6:80","port":8080}`),
				kv("/services/web/brace", svc("10.0.0.4}", 8080, "")),
				kv("/services/web/hash", svc("10.0.0.5#", 8080, "")),
				kv("/services/web/quote", svc(`10.0.0.6\"`, 8080, "")),
				kv("/services/web/hostname", svc("evil.example.com", 8080, "")),
				kv("/services/web/unicode", svc("１０.0.0.7", 8080, "")),
				kv("/services/web/port0", svc("10.0.0.8", 0, "")),
				kv("/services/web/port70000", svc("10.0.0.9", 70000, "")),
				kv("/services/web/hugeport", `{"address":"10.0.0.10","port":123456789012345678901234567890}`),
				kv("/services/web/weightmeta", svc("10.0.0.11", 8080, `,"meta":{"weight":"1 backup"}`)),
				kv("/services/web/gray", svc("10.0.0.12", 8080, `,"tags":["gray=x;}"]`)),
				kv("/services/web/notobject", `"10.0.0.13:8080"`),
				kv("/services/web/list", `[1,2,3]`),
				kv("/services/web/number", `42`),
				kv("/services/web/duplicate", `{"address":"10.0.0.14","port":8080,"address":"6.6.6.6"}`),
				kv("/services/we#b/x", svc("10.0.0.15", 8080, "")),
			},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.layout), func(t *testing.T) {
			kvs := append([]KV{tt.good}, tt.bad...)
			snap, invalid := Snapshot(tt.layout, tt.dir, kvs, rules)
			if got := servers(snap.Upstreams["web"]); !slices.Equal(got, []string{"10.0.0.1:8080"}) {
				t.Fatalf("web servers %v, want only the good one", got)
			}
			if len(snap.Upstreams) != 1 {
				t.Errorf("upstreams %v, want only web", snap.Upstreams.Names())
			}
			file := strings.TrimPrefix(string(upstream.RenderFile(snap.Upstreams)), upstream.FileHeader)
			for _, bad := range []string{"6.6.6.6", "evil", "backup", ":0;", "70000", "x;", "we#b", "#", `"`, "fe80", "10.0.0.1:80;"} {
				if strings.Contains(file, bad) {
					t.Errorf("rendered file contains %q:\n%s", bad, file)
				}
			}
			got := map[string]bool{}
			for _, iv := range invalid {
				got[iv.Path] = true
				if iv.Reason == "" || strings.ContainsAny(iv.Reason, "\n\r") {
					t.Errorf("%q: reason %q is empty or carries a raw line break", iv.Path, iv.Reason)
				}
			}
			for _, b := range tt.bad {
				if !got[b.Key] {
					t.Errorf("no invalid entry names %q", b.Key)
				}
			}
			if len(invalid) != len(tt.bad) {
				t.Errorf("%d invalid keys, want %d: %v", len(invalid), len(tt.bad), invalid)
			}
			if !slices.IsSortedFunc(invalid, func(a, b Invalid) int { return strings.Compare(a.Path, b.Path) }) {
				t.Error("invalid keys are not sorted")
			}
		})
	}
}

// nginx-upsync's value renders as the module would configure the server.
func TestLayoutUpsyncParamsReachTheServer(t *testing.T) {
	for _, tt := range []struct{ value, want string }{
		{upsyncDefault, "server 10.0.0.1:80 weight=1 max_fails=2 fail_timeout=10s;"},
		{`{"weight":5,"max_fails":0,"fail_timeout":"1m","max_conns":10,"backup":1}`, "server 10.0.0.1:80 weight=5 max_fails=0 fail_timeout=60s max_conns=10 backup;"},
		{`{"down":1}`, "server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s down;"},
		{"", "server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;"},
	} {
		snap, invalid := Snapshot(layout.Upsync, "/upstreams/", []KV{kv("/upstreams/web/10.0.0.1:80", tt.value)}, rules)
		if len(invalid) != 0 {
			t.Fatalf("%s: %v", tt.value, invalid)
		}
		if body := snap.Upstreams["web"].Body(); !strings.Contains(body, tt.want) {
			t.Errorf("value %s: body %q, want %q", tt.value, body, tt.want)
		}
	}
}

// The source reads the two etcd layouts and no other: any other name is
// refused at start and reads no instance.
func TestLayouts(t *testing.T) {
	for _, l := range []layout.Layout{layout.Upsync, layout.Service} {
		o := upsyncOptions
		o.Layout = l
		if err := o.Validate(); err != nil {
			t.Errorf("layout %q: %v", l, err)
		}
	}
	for _, l := range []layout.Layout{"", "Upsync", "plain", "curator"} {
		o := upsyncOptions
		o.Layout = l
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), `(want "upsync" or "service")`) {
			t.Errorf("layout %q: %v, want it refused", l, err)
		}
	}
	if snap, invalid := Snapshot("x", "/upstreams/", []KV{kv("/upstreams/web/10.0.0.1:80", "")}, rules); len(invalid) != 1 || len(servers(snap.Upstreams["web"])) != 0 {
		t.Errorf("an unknown layout read an instance: %v, dropped %v", snap.Upstreams, invalid)
	}
}
