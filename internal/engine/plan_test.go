package engine

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
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

func backups(name string, addrs ...string) upstream.Upstream {
	u := up(name, addrs...)
	for i := range u.Servers {
		u.Servers[i].Backup = true
	}
	return u
}

func withBackup(u upstream.Upstream, addr string) upstream.Upstream {
	b := server(addr)
	b.Backup = true
	u.Servers = append(slices.Clone(u.Servers), b)
	u.Sort()
	return u
}

func upService(name, service string, addrs ...string) upstream.Upstream {
	u := up(name, addrs...)
	u.Service = service
	return u
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
			name:  "a case-only rename replaces the upstream nginx holds, and the plan never holds both names",
			prev:  state(up("rn", "10.0.0.1:80"), api),
			snaps: []Snapshot{snap(2, up("Rn", "10.0.0.2:80"), api)},
			want:  state(up("Rn", "10.0.0.2:80"), api),
		},
		{
			name:  "the held name keeps its place while a newcomer in another case waits (reproduction A, step 1)",
			prev:  state(up("api", "10.0.0.1:80")),
			snaps: []Snapshot{snap(2, up("api", "10.0.0.1:80"), up("Api", "10.0.0.2:80"))},
			want:  state(up("api", "10.0.0.1:80")),
			holds: []string{"Api: name collides case-insensitively with [api]"},
		},
		{
			name:  "when the held name really goes, the newcomer takes its place at once (reproduction A, step 2)",
			prev:  state(up("api", "10.0.0.1:80")),
			snaps: []Snapshot{snap(1, up("Api", "10.0.0.2:80"))},
			want:  state(up("Api", "10.0.0.2:80")),
		},
		{
			name:  "a renamed upstream with no healthy instance keeps the old name and its servers",
			prev:  state(up("rn", "10.0.0.1:80"), api),
			snaps: []Snapshot{snap(2, up("Rn"), api)},
			want:  state(up("rn", "10.0.0.1:80"), api),
			holds: []string{"rn: no healthy instances; keeping 1 last known servers"},
		},
		{
			name:  "an upstream of backup servers only keeps its last servers",
			prev:  state(web12, api),
			snaps: []Snapshot{snap(2, backups("web", "10.0.0.8:80"), api)},
			want:  state(web12, api),
			holds: []string{"web: only backup servers (1), which nginx refuses without a primary; keeping 2 last known servers"},
		},
		{
			name:  "a new upstream of backup servers only is not created",
			prev:  state(api),
			snaps: []Snapshot{snap(2, backups("web", "10.0.0.8:80"), api)},
			want:  state(api),
			holds: []string{"web: only backup servers (1), which nginx refuses without a primary yet; not created"},
		},
		{
			name:  "a backup next to a primary is fine",
			prev:  state(api),
			snaps: []Snapshot{snap(2, withBackup(web1, "10.0.0.8:80"), api)},
			want:  state(withBackup(web1, "10.0.0.8:80"), api),
		},
		{
			name:  "a service whose instances all turned invalid keeps its last servers and says why",
			prev:  state(web12, api),
			snaps: []Snapshot{{Upstreams: state(upService("web", "web"), api), Services: 2, Dropped: []registry.Dropped{{Service: "web", Instance: "w1", Reason: "address \"web-1\" is not an IP literal"}, {Service: "web", Instance: "w2", Reason: "weight meta 0"}}}},
			want:  state(web12, api),
			holds: []string{"web: no healthy valid instances (2 of service web dropped as invalid); keeping 2 last known servers"},
		},
		{
			name:  "an upstream of backups only that nginx was left with (an older file) is dropped, not kept",
			prev:  state(backups("web", "10.0.0.8:80"), api),
			snaps: []Snapshot{snap(2, backups("web", "10.0.0.8:80"), api)},
			want:  state(api),
			holds: []string{"web: only backup servers (1), which nginx refuses without a primary yet; not created"},
		},
		{
			name:  "when the held name leaves while two newcomers collide, nginx keeps it with its last servers",
			prev:  state(up("API", "10.0.0.1:80")),
			snaps: []Snapshot{snap(2, up("api", "10.0.0.2:80"), up("Api", "10.0.0.3:80"))},
			want:  state(up("API", "10.0.0.1:80")),
			holds: []string{"Api: name collides case-insensitively with [api] (dyups treats names case-insensitively); not applied; nginx keeps API with its last servers", "api: name collides"},
		},
		{
			name:  "a name reserved since it was persisted is removed, not kept by a guard",
			prev:  state(up("backend", "10.0.0.1:80"), api),
			snaps: []Snapshot{snap(2, up("backend"), api)},
			g:     Guards{Reserved: []string{"Backend"}, ConfirmAfter: time.Second, MaxDrop: 0.5, MaxTotalDrop: 1},
			want:  state(api),
			holds: []string{"backend: the name is reserved (upstreams.reserved); removed", "backend: no healthy instances yet; not created"},
		},
		{
			name:  "a server the address policy refuses now is never kept by a guard",
			prev:  state(up("web", "127.0.0.1:8081", "10.0.0.1:80"), api),
			snaps: []Snapshot{snap(2, up("web"), api)},
			want:  state(up("web", "10.0.0.1:80"), api),
			holds: []string{"web: address 127.0.0.1 is loopback", "web: no healthy instances; keeping 1 last known servers"},
		},
		{
			name:  "an upstream left with only refused servers goes",
			prev:  state(up("web", "169.254.169.254:80"), api),
			snaps: []Snapshot{snap(2, up("web"), api)},
			want:  state(api),
			holds: []string{"web: address 169.254.169.254 is link-local", "web: no healthy instances yet; not created"},
		},
		{
			name:  "a source that doubts its answer changes nothing",
			prev:  state(web1),
			snaps: []Snapshot{{Upstreams: state(web12), Services: 1, Doubt: "consul: no known leader"}},
			want:  state(web1),
			holds: []string{"all upstreams: consul: no known leader; keeping the last known state"},
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
			got, holds, _ := Plan(tt.prev, tt.snaps, tt.g, Drops{}, time.Now())
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

// TestPlanDropGuards plays answers in time order and checks what each plan
// applies: a big drop waits for ConfirmAfter, a recovery cancels it.
func TestPlanDropGuards(t *testing.T) {
	four := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
	three := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	two := up("web", "10.0.0.1:80", "10.0.0.2:80")
	one := up("web", "10.0.0.1:80")
	api := up("api", "10.0.1.1:80")
	apis := func(n int) upstream.Upstream {
		u := upstream.Upstream{Name: "api"}
		for i := range n {
			u.Servers = append(u.Servers, server(fmt.Sprintf("10.0.1.%d:80", i+1)))
		}
		u.Sort()
		return u
	}
	renamed := func(u upstream.Upstream, name string) upstream.Upstream {
		u.Name = name
		return u
	}
	g := Guards{ConfirmAfter: 10 * time.Second, MaxDrop: 0.5, MaxTotalDrop: 0.5}
	type step struct {
		at      time.Duration // since the start
		snap    Snapshot
		want    upstream.State
		hold    string        // substring of the holds, "" for none
		recheck time.Duration // when to plan again, 0 for never
	}
	tests := []struct {
		name  string
		g     Guards
		prev  upstream.State
		steps []step
	}{
		{
			name: "half of the servers going is applied at once",
			g:    g,
			prev: state(four, api),
			steps: []step{
				{0, snap(2, two, api), state(two, api), "", 0},
			},
		},
		{
			name: "more than half going waits, then applies when confirmed",
			g:    g,
			prev: state(four, api),
			steps: []step{
				{0, snap(2, one, api), state(four, api), "web: would fall from 4 to 1 servers (75% > max_drop 50%)", 10 * time.Second},
				{4 * time.Second, snap(2, one, api), state(four, api), "web: would fall from 4 to 1", 10 * time.Second},
				{10 * time.Second, snap(2, one, api), state(one, api), "", 0},
			},
		},
		{
			name: "a drop the registry takes back is never applied, and the clock starts again",
			g:    g,
			prev: state(four, api),
			steps: []step{
				{0, snap(2, one, api), state(four, api), "web: would fall", 10 * time.Second},
				{3 * time.Second, snap(2, three, api), state(three, api), "", 0},
				{4 * time.Second, snap(2, one, api), state(three, api), "web: would fall from 3 to 1", 14 * time.Second},
				{12 * time.Second, snap(2, one, api), state(three, api), "web: would fall", 14 * time.Second},
				{14 * time.Second, snap(2, one, api), state(one, api), "", 0},
			},
		},
		{
			name: "a removed upstream waits for confirmation",
			g:    g,
			prev: state(two, api),
			steps: []step{
				{0, snap(1, api), state(two, api), "web: would be removed with its 2 servers", 10 * time.Second},
				{10 * time.Second, snap(1, api), state(api), "", 0},
			},
		},
		{
			name: "a total fall holds every change, even the small ones",
			g:    Guards{ConfirmAfter: 10 * time.Second, MaxDrop: 1, MaxTotalDrop: 0.5},
			prev: state(four, apis(4)),
			steps: []step{
				{0, snap(2, two, apis(1)), state(four, apis(4)), "all upstreams: servers would fall from 8 to 3 (62% > max_total_drop 50%)", 0},
				{10 * time.Second, snap(2, two, apis(1)), state(two, apis(1)), "", 0},
			},
		},
		{
			name: "max_drop 1 lets any drop through",
			g:    Guards{ConfirmAfter: 10 * time.Second, MaxDrop: 1, MaxTotalDrop: 1},
			prev: state(four, api),
			steps: []step{
				{0, snap(1, api), state(api), "", 0},
			},
		},
		{
			name: "confirm_after 0 turns the drop guards off",
			g:    Guards{},
			prev: state(four, api),
			steps: []step{
				{0, snap(2, one, api), state(one, api), "", 0},
			},
		},
		{
			name: "a case-only rename with a big drop waits under the old name, then renames",
			g:    g,
			prev: state(four, api),
			steps: []step{
				{0, snap(2, up("Web", "10.0.0.1:80"), api), state(four, api), "web: would fall from 4 to 1 servers", 10 * time.Second},
				{10 * time.Second, snap(2, up("Web", "10.0.0.1:80"), api), state(up("Web", "10.0.0.1:80"), api), "", 0},
			},
		},
		{
			name: "a case-only rename of the same servers is no drop",
			g:    g,
			prev: state(four, api),
			steps: []step{
				{0, snap(2, renamed(four, "WEB"), api), state(renamed(four, "WEB"), api), "", 0},
			},
		},
		{
			name: "a server replaced by another is no drop",
			g:    g,
			prev: state(one, api),
			steps: []step{
				{0, snap(2, up("web", "10.0.0.9:80"), api), state(up("web", "10.0.0.9:80"), api), "", 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			prev, drops := tt.prev, Drops{}
			for i, st := range tt.steps {
				got, holds, recheck := Plan(prev, []Snapshot{st.snap}, tt.g, drops, start.Add(st.at))
				if !got.Equal(st.want) {
					t.Fatalf("step %d: state:\n%s\nwant:\n%s", i, upstream.RenderFile(got), upstream.RenderFile(st.want))
				}
				var texts []string
				for _, h := range holds {
					texts = append(texts, h.String())
				}
				all := strings.Join(texts, "\n")
				if st.hold == "" && len(holds) > 0 || !strings.Contains(all, st.hold) {
					t.Fatalf("step %d: holds %q, want %q", i, all, st.hold)
				}
				wantRecheck := time.Time{}
				if st.recheck > 0 {
					wantRecheck = start.Add(st.recheck)
				}
				if st.hold != "" && strings.HasPrefix(st.hold, "all upstreams") {
					wantRecheck = start.Add(tt.g.ConfirmAfter) // the total's clock
				}
				if !recheck.Equal(wantRecheck) {
					t.Fatalf("step %d: recheck at %v, want %v", i, recheck.Sub(start), wantRecheck.Sub(start))
				}
				prev = got
			}
		})
	}
}

// A server whose parameters change is one "~ server" line saying what
// changed, not a "- server" and "+ server" pair (issue 16).
func TestLogChangesSaysWhatChangedOnAServer(t *testing.T) {
	var buf strings.Builder
	e := &Engine{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))}
	before := up("web", "10.0.0.1:80", "10.0.0.2:80")
	after := up("web", "10.0.0.1:80", "10.0.0.3:80")
	after.Servers[0].Weight = 5
	e.logChanges(state(before), state(after), upstream.Diff(state(before), state(after)))
	want := []string{
		`msg="~ server" upstream=web server=10.0.0.1:80 instance="" change="weight 1→5"`,
		`msg="- server" upstream=web server=10.0.0.2:80`,
		`msg="+ server" upstream=web server=10.0.0.3:80`,
	}
	got := buf.String()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("log lacks %s:\n%s", w, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 3 {
		t.Errorf("%d lines, want 3:\n%s", n, got)
	}
}

// TestPlanRefusesAMethodNginxWouldRefuse: the last line of defence sees a
// hash key nginx does not know and a backup server under hash, however
// they got into a snapshot, and keeps the state nginx has.
func TestPlanRefusesAMethodNginxWouldRefuse(t *testing.T) {
	prev := state(up("web", "10.0.0.1:80"))
	unknown := up("web", "10.0.0.1:80", "10.0.0.2:80")
	unknown.Balance = upstream.Balance{Method: upstream.Hash, Key: "$nosuchvar"}
	backup := withBackup(up("web", "10.0.0.1:80"), "10.0.0.3:80")
	backup.Balance = upstream.Balance{Method: upstream.Hash, Key: "$remote_addr"}
	for what, u := range map[string]upstream.Upstream{"nosuchvar": unknown, "backup": backup} {
		for _, g := range []Guards{{}, {ConfirmAfter: time.Minute}} {
			got, holds, _ := Plan(prev, []Snapshot{snap(1, u)}, g, Drops{}, time.Now())
			if !got.Equal(prev) {
				t.Errorf("%s (confirm_after %v): applied %v, want the state nginx has", what, g.ConfirmAfter, got)
			}
			if len(holds) != 1 || holds[0].Guard != GuardInvalid || !strings.Contains(holds[0].Reason, what) {
				t.Errorf("%s (confirm_after %v): holds %v, want one %s hold naming it", what, g.ConfirmAfter, holds, GuardInvalid)
			}
		}
	}
}
