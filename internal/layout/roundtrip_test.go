package layout

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

var registrations = []Registration{
	{Service: "web", ID: "web-1", Upstream: "web", Address: "10.0.0.1", Port: 8080},
	{Service: "web", ID: "web-host-8081", Upstream: "web_canary", Address: "2001:db8::1", Port: 8081,
		Tags: []string{"gray=canary", "zone=b"}, Meta: map[string]string{"weight": "3", "team": "shop"}},
	{Service: "api", ID: "api-1", Upstream: "api", Address: "::ffff:10.0.0.2", Port: 65535, Meta: map[string]string{"weight": "10000"}},
}

// Every layout decodes what it encodes: the directory and the name the
// path gives, the address, the port, and what the layout carries of the
// tags, the meta and the weight.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	at := time.UnixMilli(1700000000000)
	for _, l := range []Layout{Upsync, Service, Curator, Plain} {
		for _, r := range registrations {
			r.Registered = at
			path, value, err := l.Encode("/root/", r)
			if err != nil {
				t.Fatalf("%s: Encode(%+v): %v", l, r, err)
			}
			dir, name, ok := strings.Cut(strings.TrimPrefix(path, "/root/"), "/")
			if !ok || strings.Contains(name, "/") {
				t.Fatalf("%s: path %q is not /root/<dir>/<name>", l, path)
			}
			in, err := l.Decode(dir, name, value)
			if err != nil {
				t.Fatalf("%s: %s = %s does not decode: %v", l, path, value, err)
			}
			want := registry.Instance{Service: dir, ID: name, Address: r.Address, Port: r.Port, Healthy: true}
			switch l {
			case Upsync, Plain:
				if dir != r.Upstream || name != JoinHostPort(r.Address, r.Port) {
					t.Errorf("%s: path %q, want the upstream %s and the address", l, path, r.Upstream)
				}
				want.Address = strings.TrimPrefix(r.Address, "::ffff:")
				weight := 1
				if w, ok := r.Meta["weight"]; ok {
					weight = atoi(t, w)
				}
				want.Params = registry.Params{Weight: &weight, Down: new(bool)}
			case Service:
				want.Tags, want.Meta = r.Tags, r.Meta
			case Curator:
				want.Meta = map[string]string{"instance_status": "UP"}
				maps.Copy(want.Meta, r.Meta)
				for _, tag := range r.Tags {
					k, v, _ := strings.Cut(tag, "=")
					want.Meta[k] = v
				}
				for _, k := range slices.Sorted(maps.Keys(want.Meta)) {
					want.Tags = append(want.Tags, k+"="+want.Meta[k])
				}
			}
			if l == Service || l == Curator {
				if dir != r.Service || name != r.ID {
					t.Errorf("%s: path %q, want the service and the id", l, path)
				}
			}
			if !reflect.DeepEqual(in, want) {
				t.Errorf("%s: %s = %s decodes to\n%+v\nwant\n%+v", l, path, value, in, want)
			}
		}
	}
}

// What the daemon builds from an encoded entry is the upstream the
// registrar meant, with the weight it meant: the canary tag and the weight
// meta survive every layout.
func TestEncodedEntriesBuildTheirUpstream(t *testing.T) {
	rules := registry.Rules{CanaryTag: "gray", WeightMeta: "weight", Weight: 1, FailTimeout: 10 * time.Second}
	for _, l := range []Layout{Upsync, Service, Curator, Plain} {
		for _, r := range registrations {
			path, value, err := l.Encode("/", r)
			if err != nil {
				t.Fatal(err)
			}
			dir, name, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
			snap, invalid := l.Snapshot(Tree{Root: "/", Dirs: map[string][]Entry{dir: {{Name: name, Value: value}}}}, rules)
			if len(invalid) != 0 {
				t.Fatalf("%s: %s dropped: %v", l, path, invalid)
			}
			u, ok := snap.Upstreams[r.Upstream]
			if !ok || len(snap.Upstreams) != 1 || len(u.Servers) != 1 {
				t.Fatalf("%s: %s builds %v, want one server in upstream %s", l, path, snap.Upstreams.Names(), r.Upstream)
			}
			s := u.Servers[0]
			weight := 1
			if w, ok := r.Meta["weight"]; ok {
				weight = atoi(t, w)
			}
			if s.Addr.String() != JoinHostPort(r.Address, r.Port) || s.Weight != weight || s.Down {
				t.Errorf("%s: server %v weight %d down %v, want %s weight %d", l, s.Addr, s.Weight, s.Down, JoinHostPort(r.Address, r.Port), weight)
			}
		}
	}
}

func TestEncodeRefusesAWeightThatIsNoNumber(t *testing.T) {
	r := Registration{Service: "web", ID: "w", Upstream: "web", Address: "10.0.0.1", Port: 80, Meta: map[string]string{"weight": "heavy"}}
	for _, l := range []Layout{Upsync, Plain} {
		if _, _, err := l.Encode("/", r); err == nil || !strings.Contains(err.Error(), `meta weight "heavy"`) {
			t.Errorf("%s: %v, want the weight refused", l, err)
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
