package etcd

import (
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = registry.Rules{
	Exclude:     []string{"skipped"},
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

// upsyncDefault is the value nginx-upsync-module's README tells users to
// store for a server in etcd (and what the module itself writes back).
const upsyncDefault = `{"weight":1,"max_fails":2,"fail_timeout":10,"down":0}`

func ptr[T any](v T) *T { return &v }

func TestLayoutUpsyncInstance(t *testing.T) {
	tests := []struct {
		name, key, value string
		want             registry.Instance // Service "web" and ID key are filled in
		err              string            // substring of the error; "" for none
	}{
		{
			name: "nginx-upsync's own value is read parameter by parameter",
			key:  "10.0.0.1:8080", value: upsyncDefault,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Params: registry.Params{
				Weight: ptr(1), MaxFails: ptr(2), FailTimeout: ptr(10 * time.Second), Down: ptr(false)}},
		},
		{
			name: "an empty value takes the rules' defaults, as the module takes its own",
			key:  "10.0.0.1:8080",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "a whitespace-only value is an empty value",
			key:  "10.0.0.1:8080", value: " \n\t",
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "an empty object takes the defaults as well",
			key:  "10.0.0.1:8080", value: `{}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name: "IPv6 comes in brackets",
			key:  "[2001:db8::1]:80",
			want: registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name: "every parameter, flags as 0 and 1, max_conns included",
			key:  "10.0.0.1:80", value: `{"weight":3,"max_fails":0,"fail_timeout":30,"max_conns":100,"backup":1,"down":0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(0), FailTimeout: ptr(30 * time.Second), MaxConns: ptr(100), Backup: ptr(true), Down: ptr(false)}},
		},
		{
			name: "decimal strings are numbers, as the module reads them",
			key:  "10.0.0.1:80", value: `{"weight":"3","max_fails":"0","fail_timeout":"30","down":"1"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(3), MaxFails: ptr(0), FailTimeout: ptr(30 * time.Second), Down: ptr(true)}},
		},
		{
			name: "keys are matched in any ASCII case, as cJSON matches them",
			key:  "10.0.0.1:80", value: `{"Weight":2,"MAX_FAILS":1,"Down":true}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{
				Weight: ptr(2), MaxFails: ptr(1), Down: ptr(true)}},
		},
		{
			name: "a Kelvin sign is not a k: a key only Unicode folding would match is unknown and ignored",
			key:  "10.0.0.1:80", value: `{"bac` + "\u212a" + `up":1}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true},
		},
		{
			name: "fail_timeout takes one nginx time unit",
			key:  "10.0.0.1:80", value: `{"fail_timeout":"2m"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{FailTimeout: ptr(2 * time.Minute)}},
		},
		{
			name: "fail_timeout in hours up to the limit",
			key:  "10.0.0.1:80", value: `{"fail_timeout":"24h"}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{FailTimeout: ptr(24 * time.Hour)}},
		},
		{
			name: "whole numbers written as 3.0 or 3e0 are 3",
			key:  "10.0.0.1:80", value: `{"weight":3.0,"max_fails":3e0}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{Weight: ptr(3), MaxFails: ptr(3)}},
		},
		{
			name: "null parameters are unset",
			key:  "10.0.0.1:80", value: `{"weight":null,"down":null,"fail_timeout":null}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true},
		},
		{
			name: "unknown keys are ignored, whatever they hold",
			key:  "10.0.0.1:80", value: `{"comment":";{}#\"\nserver 6.6.6.6:80;","owner":{"team":"x"},"weight":2}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 80, Healthy: true, Params: registry.Params{Weight: ptr(2)}},
		},
		// Passed on for registry.Build to refuse (see
		// TestLayoutSnapshotDropsHostileKeys): the layout reads, Build
		// validates.
		{
			name: "a hostname is passed on for Build to refuse",
			key:  "web.internal:8080",
			want: registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name: "port 0 is passed on for Build to refuse",
			key:  "10.0.0.1:0",
			want: registry.Instance{Address: "10.0.0.1", Port: 0, Healthy: true},
		},
		{
			name: "port 70000 is passed on for Build to refuse",
			key:  "10.0.0.1:70000",
			want: registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},
		{
			name: "a newline in the host is passed on for Build to refuse",
			key:  "10.0.0.1\nserver 6.6.6.6:80",
			want: registry.Instance{Address: "10.0.0.1\nserver 6.6.6.6", Port: 80, Healthy: true},
		},

		{name: "a name without a port is refused", key: "10.0.0.1", err: "not <ip>:<port>"},
		{name: "an empty port is refused", key: "10.0.0.1:", err: "ASCII digits"},
		{name: "a signed port is refused", key: "10.0.0.1:+80", err: "ASCII digits"},
		{name: "unicode digits in the port are refused", key: "10.0.0.1:８０", err: "ASCII digits"},
		{name: "six digits are refused", key: "10.0.0.1:000080", err: "ASCII digits"},
		{name: "a port with trailing text is refused", key: "10.0.0.1:80;", err: "ASCII digits"},
		{name: "an injected second server is refused", key: "10.0.0.1:80;server 6.6.6.6:80", err: "instance name"},
		{name: "bare IPv6 is refused", key: "2001:db8::1:80", err: "needs brackets"},
		{name: "brackets around IPv4 are refused", key: "[10.0.0.1]:80", err: "only an IPv6"},
		{name: "an unclosed bracket is refused", key: "[2001:db8::1:80", err: "only an IPv6"},
		{name: "a stray bracket is refused", key: "10.0.0.1]:80", err: "needs brackets"},

		{name: "a value that is not JSON is refused", key: "10.0.0.1:80", value: "weight=3", err: "not JSON"},
		{name: "a JSON list is refused", key: "10.0.0.1:80", value: `[` + upsyncDefault + `]`, err: "not a JSON object"},
		{name: "a JSON string is refused", key: "10.0.0.1:80", value: `"weight=3"`, err: "not a JSON object"},
		{name: "a bare number is refused", key: "10.0.0.1:80", value: `3`, err: "not a JSON object"},
		{name: "JSON null is refused", key: "10.0.0.1:80", value: `null`, err: "not a JSON object"},
		{name: "truncated JSON is refused", key: "10.0.0.1:80", value: `{"weight":1`, err: "bad JSON"},
		{name: "data after the object is refused", key: "10.0.0.1:80", value: upsyncDefault + `{"down":1}`, err: "data after"},
		{name: "invalid UTF-8 is refused", key: "10.0.0.1:80", value: "{\"x\":\"\xff\"}", err: "UTF-8"},
		{name: "a repeated parameter is refused", key: "10.0.0.1:80", value: `{"weight":1,"weight":100}`, err: "appears twice"},
		{name: "a parameter repeated in another case is refused", key: "10.0.0.1:80", value: `{"weight":1,"WEIGHT":100}`, err: "appears twice"},
		{name: "weight 0 is refused", key: "10.0.0.1:80", value: `{"weight":0}`, err: "weight 0 out of range"},
		{name: "weight above nginx's limit is refused", key: "10.0.0.1:80", value: `{"weight":10001}`, err: "weight 10001 out of range"},
		{name: "a negative weight is refused", key: "10.0.0.1:80", value: `{"weight":-1}`, err: "weight -1 out of range"},
		{name: "a fractional weight is refused, not truncated as cJSON would", key: "10.0.0.1:80", value: `{"weight":2.5}`, err: "whole number"},
		{name: "a huge weight is refused", key: "10.0.0.1:80", value: `{"weight":1e40}`, err: "whole number"},
		{name: "a weight beyond 64 bits is refused", key: "10.0.0.1:80", value: `{"weight":123456789012345678901234567890}`, err: "whole number"},
		{name: "a weight that wraps a 32-bit int is refused", key: "10.0.0.1:80", value: `{"weight":4294967297}`, err: "whole number"},
		{name: "a weight string with a trailing word is refused", key: "10.0.0.1:80", value: `{"weight":"1 backup"}`, err: "not a whole number"},
		{name: "a weight string with nginx syntax is refused", key: "10.0.0.1:80", value: `{"weight":"1;}"}`, err: "not a whole number"},
		{name: "a signed weight string is refused", key: "10.0.0.1:80", value: `{"weight":"+3"}`, err: "not a whole number"},
		{name: "a weight string with spaces is refused", key: "10.0.0.1:80", value: `{"weight":" 3"}`, err: "not a whole number"},
		{name: "a weight string of unicode digits is refused", key: "10.0.0.1:80", value: `{"weight":"３"}`, err: "not a whole number"},
		{name: "a weight given as a boolean is refused", key: "10.0.0.1:80", value: `{"weight":true}`, err: "weight is a boolean"},
		{name: "a weight given as a list is refused", key: "10.0.0.1:80", value: `{"weight":[1]}`, err: "weight is an array"},
		{name: "a weight given as an object is refused", key: "10.0.0.1:80", value: `{"weight":{}}`, err: "weight is an object"},
		{name: "a negative max_fails is refused", key: "10.0.0.1:80", value: `{"max_fails":-1}`, err: "max_fails -1 out of range"},
		{name: "max_fails above the limit is refused", key: "10.0.0.1:80", value: `{"max_fails":1001}`, err: "max_fails 1001 out of range"},
		{name: "max_conns above the limit is refused", key: "10.0.0.1:80", value: `{"max_conns":1000001}`, err: "max_conns 1000001 out of range"},
		{name: "a fail_timeout over a day is refused", key: "10.0.0.1:80", value: `{"fail_timeout":86401}`, err: "out of range"},
		{name: "a fail_timeout that would wrap around is refused", key: "10.0.0.1:80", value: `{"fail_timeout":2147483647}`, err: "out of range"},
		{name: "a fail_timeout in hours over a day is refused before multiplying", key: "10.0.0.1:80", value: `{"fail_timeout":"999999999h"}`, err: "out of range"},
		{name: "a negative fail_timeout is refused", key: "10.0.0.1:80", value: `{"fail_timeout":-1}`, err: "out of range"},
		{name: "a fail_timeout in milliseconds is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"500ms"}`, err: "want whole seconds"},
		{name: "a fail_timeout in days is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"1d"}`, err: "want whole seconds"},
		{name: "a fail_timeout unit alone is refused", key: "10.0.0.1:80", value: `{"fail_timeout":"s"}`, err: "want whole seconds"},
		{name: "a fractional fail_timeout is refused", key: "10.0.0.1:80", value: `{"fail_timeout":0.5}`, err: "whole number"},
		{name: "down 2 is refused", key: "10.0.0.1:80", value: `{"down":2}`, err: "want 0, 1, true or false"},
		{name: "down as a word is refused", key: "10.0.0.1:80", value: `{"down":"yes"}`, err: "want 0, 1, true or false"},
		{name: "down as the string true is refused", key: "10.0.0.1:80", value: `{"down":"true"}`, err: "want 0, 1, true or false"},
		{name: "down as an object is refused", key: "10.0.0.1:80", value: `{"down":{}}`, err: "down is an object"},
		{name: "backup as a list is refused", key: "10.0.0.1:80", value: `{"backup":[1]}`, err: "backup is an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Upsync.Instance("web", tt.key, []byte(tt.value))
			tt.want.ID = tt.key
			checkInstance(t, got, err, tt.want, tt.err)
		})
	}
}

func TestLayoutServiceInstance(t *testing.T) {
	tests := []struct {
		name, value string
		want        registry.Instance // Service "web" and ID "i1" are filled in
		err         string
	}{
		{
			name:  "address, port, tags, meta and health are read",
			value: `{"address":"10.0.0.1","port":8080,"tags":["gray=canary","v2"],"meta":{"weight":"3","zone":"b"},"healthy":true}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Tags: []string{"gray=canary", "v2"}, Meta: map[string]string{"weight": "3", "zone": "b"}},
		},
		{
			name:  "address and port alone make a healthy instance",
			value: `{"address":"10.0.0.1","port":8080}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "healthy false makes the instance unhealthy",
			value: `{"address":"10.0.0.1","port":8080,"healthy":false}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: false},
		},
		{
			name:  "null tags, meta and healthy are unset",
			value: `{"address":"10.0.0.1","port":8080,"tags":null,"meta":null,"healthy":null}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "empty tags and meta are fine",
			value: `{"address":"10.0.0.1","port":8080,"tags":[],"meta":{}}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true, Tags: []string{}, Meta: map[string]string{}},
		},
		{
			name:  "unknown keys are ignored: an application may store more",
			value: `{"id":"other","name":"other","version":"1.2","address":"10.0.0.1","port":8080,"extra":[1,{"a":null}]}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "an IPv6 address is written without brackets",
			value: `{"address":"2001:db8::1","port":80}`,
			want:  registry.Instance{Address: "2001:db8::1", Port: 80, Healthy: true},
		},
		{
			name:  "whitespace around the JSON is fine",
			value: "\n {\"address\":\"10.0.0.1\",\"port\":8080}\n",
			want:  registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true},
		},
		{
			name:  "unicode in tags and meta is read as is; Build decides",
			value: `{"address":"10.0.0.1","port":8080,"tags":["zöne=ü"],"meta":{"ключ":"значение"}}`,
			want: registry.Instance{Address: "10.0.0.1", Port: 8080, Healthy: true,
				Tags: []string{"zöne=ü"}, Meta: map[string]string{"ключ": "значение"}},
		},
		// Passed on for registry.Build to refuse.
		{
			name:  "a hostname is passed on for Build to refuse",
			value: `{"address":"web.internal","port":8080}`,
			want:  registry.Instance{Address: "web.internal", Port: 8080, Healthy: true},
		},
		{
			name:  "nginx syntax in the address is passed on for Build to refuse",
			value: `{"address":"10.0.0.1;server 6.6.6.6:80;#{}\"","port":8080}`,
			want:  registry.Instance{Address: "10.0.0.1;server 6.6.6.6:80;#{}\"", Port: 8080, Healthy: true},
		},
		{
			name:  "port 0 is passed on for Build to refuse",
			value: `{"address":"10.0.0.1","port":0}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 0, Healthy: true},
		},
		{
			name:  "port 70000 is passed on for Build to refuse",
			value: `{"address":"10.0.0.1","port":70000}`,
			want:  registry.Instance{Address: "10.0.0.1", Port: 70000, Healthy: true},
		},

		{name: "no address is refused", value: `{"port":8080}`, err: "no address"},
		{name: "an empty address is refused", value: `{"address":"","port":8080}`, err: "no address"},
		{name: "a null address is refused", value: `{"address":null,"port":8080}`, err: "no address"},
		{name: "keys are matched exactly, not case-folded", value: `{"Address":"10.0.0.1","PORT":8080}`, err: "no address"},
		{name: "no port is refused", value: `{"address":"10.0.0.1"}`, err: "no port"},
		{name: "a null port is refused", value: `{"address":"10.0.0.1","port":null}`, err: "no port"},
		{name: "an address given as a number is refused", value: `{"address":167772161,"port":8080}`, err: "address is a number"},
		{name: "an address given as a list is refused", value: `{"address":["10.0.0.1"],"port":8080}`, err: "address is an array"},
		{name: "a port given as a string is refused", value: `{"address":"10.0.0.1","port":"8080"}`, err: "port is a string"},
		{name: "a fractional port is refused", value: `{"address":"10.0.0.1","port":8080.0}`, err: "not a 32-bit integer"},
		{name: "an exponent port is refused", value: `{"address":"10.0.0.1","port":8e3}`, err: "not a 32-bit integer"},
		{name: "a huge port is refused", value: `{"address":"10.0.0.1","port":123456789012345678901234567890}`, err: "not a 32-bit integer"},
		{name: "a port beyond 32 bits is refused before it can wrap", value: `{"address":"10.0.0.1","port":4294975376}`, err: "not a 32-bit integer"},
		{name: "a port given as a boolean is refused", value: `{"address":"10.0.0.1","port":true}`, err: "port is a boolean"},
		{name: "tags given as a string are refused", value: `{"address":"10.0.0.1","port":8080,"tags":"a,b"}`, err: "tags is a string"},
		{name: "a tag that is not a string is refused", value: `{"address":"10.0.0.1","port":8080,"tags":["a",1]}`, err: "tags[1] is a number"},
		{name: "meta given as a list is refused", value: `{"address":"10.0.0.1","port":8080,"meta":["weight=3"]}`, err: "meta is an array"},
		{name: "a meta value that is not a string is refused", value: `{"address":"10.0.0.1","port":8080,"meta":{"weight":3}}`, err: `meta."weight" is a number`},
		{name: "a repeated meta key is refused", value: `{"address":"10.0.0.1","port":8080,"meta":{"gray":"a","gray":"b"}}`, err: "appears twice"},
		{name: "healthy given as a string is refused", value: `{"address":"10.0.0.1","port":8080,"healthy":"false"}`, err: "healthy is a string"},
		{name: "healthy given as a number is refused", value: `{"address":"10.0.0.1","port":8080,"healthy":0}`, err: "healthy is a number"},
		{name: "a repeated key is refused: readers could disagree", value: `{"address":"10.0.0.1","address":"6.6.6.6","port":8080}`, err: "appears twice"},
		{name: "an empty value is refused", value: "", err: "not JSON"},
		{name: "a value that is not JSON is refused", value: "10.0.0.1:8080", err: "not a JSON object"},
		{name: "a value of text is refused", value: "address=10.0.0.1", err: "not JSON"},
		{name: "a JSON list is refused", value: `[{"address":"10.0.0.1","port":8080}]`, err: "not a JSON object"},
		{name: "a JSON string is refused", value: `"10.0.0.1:8080"`, err: "not a JSON object"},
		{name: "data after the object is refused", value: `{"address":"10.0.0.1","port":8080}{"address":"6.6.6.6"}`, err: "data after"},
		{name: "truncated JSON is refused", value: `{"address":"10.0.0.1","port":80`, err: "bad JSON"},
		{name: "a JavaScript comment is refused", value: `{"address":"10.0.0.1",/*x*/"port":8080}`, err: "bad JSON"},
		{name: "invalid UTF-8 is refused, not replaced", value: "{\"address\":\"10.0.0.1\",\"port\":8080,\"tags\":[\"\xc3\x28\"]}", err: "UTF-8"},
		{name: "garbage is refused", value: "\x00\xff;server 6.6.6.6:80;", err: "UTF-8"},
		{name: "absurd nesting is refused", value: `{"address":"10.0.0.1","port":8080,"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, err: "bad JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Service.Instance("web", "i1", []byte(tt.value))
			tt.want.ID = "i1"
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
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("error carries a raw line break: %q", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	want.Service = "web"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func servers(u upstream.Upstream) []string {
	var out []string
	for _, s := range u.Servers {
		out = append(out, s.Addr.String())
	}
	return out
}

func kv(key, value string) KV { return KV{Key: key, Value: []byte(value)} }

// svc is a service layout value.
func svc(addr string, port int, extra string) string {
	return `{"address":"` + addr + `","port":` + strconv.Itoa(port) + extra + `}`
}

func TestLayoutSnapshot(t *testing.T) {
	tests := []struct {
		name     string
		layout   Layout
		dir      string
		kvs      []KV
		r        func(*registry.Rules)
		want     map[string][]string // upstream → servers; a nil list is an upstream with no servers
		services int
		invalid  []string // keys reported invalid
	}{
		{
			name:   "an nginx-upsync tree is picked up unchanged, one upstream per directory",
			layout: Upsync, dir: "/upstreams/",
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
			layout: Upsync, dir: "/upstreams/",
			want: map[string][]string{}, services: 0,
		},
		{
			name:   "a service whose keys are all invalid keeps its upstream with no servers, so a bad write cannot empty nginx",
			layout: Upsync, dir: "/upstreams/",
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
			layout: Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/b", svc("10.0.0.2", 80, "")),
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
			},
			want: map[string][]string{"web": {"10.0.0.1:80", "10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "unhealthy instances leave the upstream known with no servers",
			layout: Service, dir: "/services/",
			kvs:  []KV{kv("/services/web/a", svc("10.0.0.1", 80, `,"healthy":false`))},
			want: map[string][]string{"web": nil}, services: 1,
		},
		{
			name:   "tag gray=canary goes to its own upstream and weight meta applies",
			layout: Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
				kv("/services/web/b", svc("10.0.0.2", 80, `,"tags":["gray=canary"],"meta":{"weight":"7"}`)),
			},
			want: map[string][]string{"web": {"10.0.0.1:80"}, "web_canary": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "excluded services are neither built nor counted",
			layout: Service, dir: "/services/",
			kvs: []KV{
				kv("/services/skipped/a", svc("10.0.0.1", 80, "")),
				kv("/services/web/a", svc("10.0.0.2", 80, "")),
			},
			want: map[string][]string{"web": {"10.0.0.2:80"}}, services: 1,
		},
		{
			name:   "a service whose readable instances lack the required tags yields nothing",
			layout: Service, dir: "/services/",
			kvs: []KV{
				kv("/services/web/a", svc("10.0.0.1", 80, "")),
				kv("/services/api/a", svc("10.0.0.2", 80, `,"tags":["env=prod"]`)),
			},
			r:    func(r *registry.Rules) { r.RequireTags = []string{"env=prod"} },
			want: map[string][]string{"api": {"10.0.0.2:80"}}, services: 2,
		},
		{
			name:   "a service with an invalid name is counted but never built",
			layout: Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/we b/10.0.0.1:80", ""),
				kv("/upstreams/web/10.0.0.2:80", ""),
			},
			want: map[string][]string{"web": {"10.0.0.2:80"}}, services: 2,
			invalid: []string{"/upstreams/we b/10.0.0.1:80"},
		},
		{
			name:   "keys that do not have the shape <prefix>/<service>/<name> are invalid and do not make a service",
			layout: Upsync, dir: "/upstreams/",
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
			layout: Upsync, dir: "/upstreams/",
			kvs: []KV{
				kv("/upstreams/web/10.0.0.1:80", ""),
				kv("/upstreams/web/10.0.0.1:080", `{"weight":9}`),
			},
			want: map[string][]string{"web": {"10.0.0.1:80"}}, services: 1,
			invalid: []string{"/upstreams/web/10.0.0.1:80"},
		},
		{
			name:   "the root prefix works: every top-level directory is a service",
			layout: Upsync, dir: "/",
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
			snap, invalid := tt.layout.Snapshot(tt.dir, tt.kvs, r)
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
			var keys []string
			for _, iv := range invalid {
				keys = append(keys, iv.Key)
				if iv.Reason == "" {
					t.Errorf("%q: no reason", iv.Key)
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
		layout Layout
		dir    string
		good   KV
		bad    []KV
	}{
		{
			layout: Upsync, dir: "/upstreams/",
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
			layout: Service, dir: "/services/",
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
			snap, invalid := tt.layout.Snapshot(tt.dir, kvs, rules)
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
				got[iv.Key] = true
				if iv.Reason == "" || strings.ContainsAny(iv.Reason, "\n\r") {
					t.Errorf("%q: reason %q is empty or carries a raw line break", iv.Key, iv.Reason)
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
			if !slices.IsSortedFunc(invalid, func(a, b Invalid) int { return strings.Compare(a.Key, b.Key) }) {
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
		snap, invalid := Upsync.Snapshot("/upstreams/", []KV{kv("/upstreams/web/10.0.0.1:80", tt.value)}, rules)
		if len(invalid) != 0 {
			t.Fatalf("%s: %v", tt.value, invalid)
		}
		if body := snap.Upstreams["web"].Body(); !strings.Contains(body, tt.want) {
			t.Errorf("value %s: body %q, want %q", tt.value, body, tt.want)
		}
	}
}

func TestParseLayout(t *testing.T) {
	for s, want := range map[string]Layout{"upsync": Upsync, "service": Service} {
		if got, err := ParseLayout(s); err != nil || got != want {
			t.Errorf("ParseLayout(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "Upsync", "plain", "curator"} {
		if _, err := ParseLayout(s); err == nil {
			t.Errorf("ParseLayout(%q) accepted", s)
		}
	}
	if Upsync.DefaultPrefix() != "/upstreams" || Service.DefaultPrefix() != "/services" {
		t.Errorf("default prefixes %q, %q", Upsync.DefaultPrefix(), Service.DefaultPrefix())
	}
	if _, err := Layout("x").Instance("web", "10.0.0.1:80", nil); err == nil {
		t.Error("an unknown layout read an instance")
	}
}
