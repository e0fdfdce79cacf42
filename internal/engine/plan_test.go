package engine

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

func server(addr string) upstream.Server {
	return upstream.Server{Addr: netip.MustParseAddrPort(addr), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}
}

func up(name string, addrs ...string) upstream.Upstream {
	u := upstream.Upstream{Name: name}
	for _, a := range addrs {
		u.Servers = append(u.Servers, server(a))
	}
	u.Sort()
	return u
}

func state(us ...upstream.Upstream) upstream.State {
	s := upstream.State{}
	for _, u := range us {
		s[u.Name] = u
	}
	return s
}

func snap(services int, us ...upstream.Upstream) Snapshot {
	return Snapshot{Upstreams: state(us...), Services: services}
}

func TestPlan(t *testing.T) {
	web1 := up("web", "10.0.0.1:80")
	web12 := up("web", "10.0.0.1:80", "10.0.0.2:80")
	api := up("api", "10.0.1.1:80")
	tests := []struct {
		name  string
		prev  upstream.State
		snaps []Snapshot
		g     Guards
		want  upstream.State
		holds []string // substrings, one per expected hold, in order
	}{
		{
			name:  "a healthy answer is applied as is",
			prev:  state(web1),
			snaps: []Snapshot{snap(1, web12)},
			want:  state(web12),
		},
		{
			name:  "a service that vanished from the registry is removed",
			prev:  state(web1, api),
			snaps: []Snapshot{snap(1, web1)},
			want:  state(web1),
		},
		{
			name:  "an answer with zero services changes nothing",
			prev:  state(web1, api),
			snaps: []Snapshot{snap(0)},
			want:  state(web1, api),
			holds: []string{"all upstreams: the registry reports no services"},
		},
		{
			name:  "fewer services than min_services changes nothing",
			prev:  state(web1, api),
			snaps: []Snapshot{snap(1, web12)},
			g:     Guards{MinServices: 2},
			want:  state(web1, api),
			holds: []string{"fewer than min_services 2"},
		},
		{
			name:  "exactly min_services is applied",
			prev:  state(web1),
			snaps: []Snapshot{snap(2, web12, api)},
			g:     Guards{MinServices: 2},
			want:  state(web12, api),
		},
		{
			name:  "an upstream whose instances all failed keeps its last servers",
			prev:  state(web12, api),
			snaps: []Snapshot{snap(2, up("web"), api)},
			want:  state(web12, api),
			holds: []string{"web: no healthy instances; keeping 2 last known servers"},
		},
		{
			name:  "a new upstream with no healthy instance is not created",
			prev:  state(api),
			snaps: []Snapshot{snap(2, up("web"), api)},
			want:  state(api),
			holds: []string{"web: no healthy instances yet"},
		},
		{
			name:  "a newcomer colliding in case with an existing upstream is dropped",
			prev:  state(web1),
			snaps: []Snapshot{snap(2, web12, up("WEB", "10.9.9.9:80"))},
			want:  state(web12),
			holds: []string{"WEB: name collides case-insensitively with [web]"},
		},
		{
			name:  "two new upstreams colliding in case are both dropped",
			prev:  state(api),
			snaps: []Snapshot{snap(3, api, up("Web", "10.0.0.1:80"), up("web", "10.0.0.2:80"))},
			want:  state(api),
			holds: []string{"Web: name collides", "web: name collides"},
		},
		{
			name:  "sources merge, and the first source keeps a contested name",
			prev:  state(),
			snaps: []Snapshot{snap(1, web1), snap(2, up("web", "10.7.7.7:80"), api)},
			want:  state(web1, api),
			holds: []string{"web: also reported by source 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, holds := Plan(tt.prev, tt.snaps, tt.g)
			if !got.Equal(tt.want) {
				t.Errorf("state:\n%s\nwant:\n%s", upstream.RenderFile(got), upstream.RenderFile(tt.want))
			}
			if len(holds) != len(tt.holds) {
				t.Fatalf("holds %v, want %d matching %q", holds, len(tt.holds), tt.holds)
			}
			for i, h := range holds {
				if !strings.Contains(h.String(), tt.holds[i]) {
					t.Errorf("hold %d = %q, want it to contain %q", i, h, tt.holds[i])
				}
			}
		})
	}
}
