package dyups

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// A /detail answer recorded on a real dyups build, byte for byte (see
// docs/DYUPS-API.md).
const sampleDetail = "myups\n" +
	"server 127.0.0.1:28091 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n" +
	"server 127.0.0.1:28092 weight=2 max_conns=0 max_fails=3 fail_timeout=2 backup=0 down=0\n" +
	"\n"

func TestParseDetail(t *testing.T) {
	tests := []struct {
		name, body string
		want       Detail
		errHas     string
	}{
		{name: "204 has no body", body: "", want: Detail{}},
		{name: "the recorded sample", body: sampleDetail, want: Detail{"myups": {
			{Addr: "127.0.0.1:28091", Weight: 1, MaxFails: 1, FailTimeout: 10},
			{Addr: "127.0.0.1:28092", Weight: 2, MaxFails: 3, FailTimeout: 2},
		}}},
		{name: "several upstreams, IPv6, unix, flags", body: "a\nserver [::1]:80 weight=1 max_conns=5 max_fails=0 fail_timeout=0 backup=1 down=0\n\nB\nserver unix:/tmp/s weight=3 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=1\n\n",
			want: Detail{
				"a": {{Addr: "[::1]:80", Weight: 1, MaxConns: 5, Backup: true}},
				"B": {{Addr: "unix:/tmp/s", Weight: 3, MaxFails: 1, FailTimeout: 10, Down: true}},
			}},
		{name: "upstream with no servers", body: "empty\n\n", want: Detail{"empty": {}}},
		{name: "server before a name", body: "server 1.2.3.4:80 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n", errHas: "outside an upstream"},
		{name: "missing field", body: "a\nserver 1.2.3.4:80 weight=1 max_fails=1 fail_timeout=10 backup=0 down=0\n\n", errHas: "want 8 fields"},
		{name: "fields out of order", body: "a\nserver 1.2.3.4:80 max_conns=0 weight=1 max_fails=1 fail_timeout=10 backup=0 down=0\n\n", errHas: "want weight="},
		{name: "garbage value", body: "a\nserver 1.2.3.4:80 weight=x max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n\n", errHas: "not a count"},
		{name: "two names without a blank line", body: "a\nb\n", errHas: "neither a server line"},
		{name: "listed twice", body: "a\n\na\n\n", errHas: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDetail(tt.body)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err %v, want %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for name, servers := range tt.want {
				g := got[name]
				if len(g) != len(servers) {
					t.Fatalf("%s: got %v, want %v", name, g, servers)
				}
				for i := range servers {
					if g[i] != servers[i] {
						t.Errorf("%s[%d]: got %+v, want %+v", name, i, g[i], servers[i])
					}
				}
			}
		})
	}
}

func TestDetailMatches(t *testing.T) {
	d, err := ParseDetail(sampleDetail)
	if err != nil {
		t.Fatal(err)
	}
	u := upstream.Upstream{Name: "MyUps", Servers: []upstream.Server{
		{Addr: netip.MustParseAddrPort("127.0.0.1:28092"), Weight: 2, MaxFails: 3, FailTimeout: 2 * time.Second},
		{Addr: netip.MustParseAddrPort("127.0.0.1:28091"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second},
	}}
	if !d.Matches(u) {
		t.Error("same servers in another order and name case do not match")
	}
	u.Servers[0].Weight = 3
	if d.Matches(u) {
		t.Error("a weight change matches")
	}
	u.Servers = u.Servers[:1]
	if d.Matches(u) {
		t.Error("a missing server matches")
	}
	if d.Matches(upstream.Upstream{Name: "other"}) {
		t.Error("an absent upstream matches")
	}
}

// FuzzParseDetail: the parser never panics, and whatever it accepts it
// accepts consistently: every parsed server is in the input verbatim.
func FuzzParseDetail(f *testing.F) {
	f.Add(sampleDetail)
	f.Add("")
	f.Add("a\nserver [::1]:80 weight=1 max_conns=5 max_fails=0 fail_timeout=0 backup=1 down=0\n\n")
	f.Fuzz(func(t *testing.T, body string) {
		d, err := ParseDetail(body)
		if err != nil {
			return
		}
		for name, servers := range d {
			if !strings.Contains(body, name+"\n") && !strings.HasSuffix(body, name) {
				t.Fatalf("upstream %q not in the input", name)
			}
			for _, s := range servers {
				if !strings.Contains(body, s.Addr) {
					t.Fatalf("server %q not in the input", s.Addr)
				}
			}
		}
	})
}
