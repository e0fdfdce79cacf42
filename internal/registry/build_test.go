package registry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

var rules = Rules{
	Exclude:     []string{"consul"},
	CanaryTag:   "gray",
	WeightMeta:  "weight",
	Weight:      1,
	MaxFails:    3,
	FailTimeout: 10 * time.Second,
}

func ptr[T any](v T) *T { return &v }

func render(st upstream.State) string {
	return strings.TrimPrefix(strings.TrimPrefix(string(upstream.RenderFile(st)), upstream.FileHeader), "\n")
}

func TestBuildParams(t *testing.T) {
	tests := []struct {
		name string
		in   Instance
		want string
	}{
		{
			name: "rules' defaults apply",
			in:   Instance{ID: "a", Address: "10.0.0.1", Port: 80, Healthy: true},
			want: "server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;",
		},
		{
			name: "explicit registry params win over defaults and meta",
			in: Instance{ID: "a", Address: "10.0.0.1", Port: 80, Healthy: true, Meta: map[string]string{"weight": "4"},
				Params: Params{Weight: ptr(9), MaxFails: ptr(0), FailTimeout: ptr(30 * time.Second), MaxConns: ptr(5), Backup: ptr(true)}},
			want: "server 10.0.0.1:80 weight=9 max_fails=0 fail_timeout=30s max_conns=5 backup;",
		},
		{
			name: "down from the registry renders down",
			in:   Instance{ID: "a", Address: "10.0.0.1", Port: 80, Healthy: true, Params: Params{Down: ptr(true)}},
			want: "server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s down;",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Service = "web"
			st, dropped := Build(map[string][]Instance{"web": {tt.in}}, rules)
			if len(dropped) > 0 {
				t.Fatalf("dropped %v", dropped)
			}
			if got := strings.TrimSpace(strings.Split(render(st), "\n")[1]); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBuildSelection(t *testing.T) {
	in := map[string][]Instance{
		"consul": {{ID: "c", Address: "10.0.0.1", Port: 8300, Healthy: true}},
		"web":    {{ID: "w", Address: "10.0.0.2", Port: 80, Healthy: false}},
	}
	st, _ := Build(in, rules)
	if _, ok := st["consul"]; ok {
		t.Error("excluded service built")
	}
	if u, ok := st["web"]; !ok || len(u.Servers) != 0 {
		t.Errorf("unhealthy-only service must be known with no servers: %+v", st)
	}
}

// Hostile values from any registry are dropped with a reason and never
// reach the rendered file.
func TestBuildDropsHostileValues(t *testing.T) {
	good := Instance{ID: "good", Address: "10.0.0.9", Port: 80, Healthy: true}
	hostile := []struct {
		name string
		svc  string
		in   Instance
	}{
		{"semicolon in address", "web", Instance{Address: "10.0.0.1;server 6.6.6.6:80", Port: 80}},
		{"newline in address", "web", Instance{Address: "10.0.0.1\nserver 6.6.6.6:80", Port: 80}},
		{"hostname", "web", Instance{Address: "evil.example.com", Port: 80}},
		{"address with port", "web", Instance{Address: "10.0.0.1:80", Port: 80}},
		{"port 0", "web", Instance{Address: "10.0.0.1", Port: 0}},
		{"port 65536", "web", Instance{Address: "10.0.0.1", Port: 65536}},
		{"explicit weight 0", "web", Instance{Address: "10.0.0.1", Port: 80, Params: Params{Weight: ptr(0)}}},
		{"explicit negative max_fails", "web", Instance{Address: "10.0.0.1", Port: 80, Params: Params{MaxFails: ptr(-1)}}},
		{"explicit sub-second fail_timeout", "web", Instance{Address: "10.0.0.1", Port: 80, Params: Params{FailTimeout: ptr(500 * time.Millisecond)}}},
		{"weight meta not a number", "web", Instance{Address: "10.0.0.1", Port: 80, Meta: map[string]string{"weight": "1;"}}},
		{"canary tag with brace", "web", Instance{Address: "10.0.0.1", Port: 80, Tags: []string{"gray=}"}}},
		{"service name with slash", "a/b", Instance{Address: "10.0.0.1", Port: 80}},
		{"service name with newline", "a\nb", Instance{Address: "10.0.0.1", Port: 80}},
	}
	for _, h := range hostile {
		t.Run(h.name, func(t *testing.T) {
			h.in.ID, h.in.Service, h.in.Healthy = "x\ny", h.svc, true
			st, dropped := Build(map[string][]Instance{h.svc: {h.in}, "good": {good}}, rules)
			if len(dropped) != 1 {
				t.Fatalf("dropped %v", dropped)
			}
			if strings.Contains(dropped[0].String(), "\n") {
				t.Errorf("drop report carries a raw newline: %q", dropped[0].String())
			}
			file := render(st)
			if strings.Count(file, "server ") != 1 || !strings.Contains(file, "10.0.0.9:80") {
				t.Fatalf("file holds more than the good instance:\n%s", file)
			}
		})
	}
}

func TestLabel(t *testing.T) {
	if got := (Instance{ID: "web-1", Node: "n1"}).Label(); got != "web-1@n1" {
		t.Errorf("plain label %q", got)
	}
	if got := (Instance{ID: "a\nb"}).Label(); got != `"a\nb"` {
		t.Errorf("hostile label %q", got)
	}
}

// Two services that make the same upstream name share one upstream: the
// first service's settings, both sets of servers, a shared address
// dropped once with a reason. Merging cached parts must not change them.
func TestMergeRefusesCanaryGroupsThatNameAnotherService(t *testing.T) {
	// Service a's canary group b would make upstream a_b, which is service
	// a_b's own: whoever can register an instance of a must not put it
	// into a_b's traffic (issue 14, canary across services). Service
	// "Web" with group "x" collides with service "web_X" case-insensitively,
	// and "c" group "d_e" with "c_d" group "e" makes c_d_e twice: the first
	// service keeps it.
	services := map[string][]Instance{
		"a":     {{ID: "a1", Address: "10.0.0.1", Port: 80, Healthy: true, Tags: []string{"gray=b"}}},
		"a_b":   {{ID: "x1", Address: "10.0.0.2", Port: 80, Healthy: true}},
		"Web":   {{ID: "W1", Address: "10.0.0.5", Port: 80, Healthy: true, Tags: []string{"gray=x"}}},
		"web_X": {{ID: "wx", Address: "10.0.0.6", Port: 80, Healthy: true}},
		"c":     {{ID: "c1", Address: "10.0.0.7", Port: 80, Healthy: true, Tags: []string{"gray=d_e"}}},
		"c_d":   {{ID: "cd1", Address: "10.0.0.8", Port: 80, Healthy: true, Tags: []string{"gray=e"}}},
		"web":   {{ID: "w1", Address: "10.0.0.3", Port: 80, Healthy: true}, {ID: "w2", Address: "10.0.0.3", Port: 80, Healthy: true}},
	}
	var list []Part
	for svc, in := range services {
		list = append(list, BuildService(svc, in, rules))
	}
	before := fmt.Sprint(list)
	st, dropped := Merge(list)
	if after := fmt.Sprint(list); after != before {
		t.Errorf("Merge changed a part:\n%s\nwas:\n%s", after, before)
	}
	got := render(st)
	want := `upstream a_b {
    server 10.0.0.2:80 weight=1 max_fails=3 fail_timeout=10s;
}

upstream c_d_e {
    server 10.0.0.7:80 weight=1 max_fails=3 fail_timeout=10s;
}

upstream web {
    server 10.0.0.3:80 weight=1 max_fails=3 fail_timeout=10s;
}

upstream web_X {
    server 10.0.0.6:80 weight=1 max_fails=3 fail_timeout=10s;
}
`
	if got != want {
		t.Fatalf("merged state:\n%s\nwant:\n%s", got, want)
	}
	var reasons []string
	for _, d := range dropped {
		reasons = append(reasons, d.String())
	}
	wantDropped := []string{
		`service "Web" instance W1: canary group upstream Web_x is also the name of service web_X; refused (one service's instances never serve another's upstream)`,
		`service "a" instance a1: canary group upstream a_b is also the name of service a_b; refused (one service's instances never serve another's upstream)`,
		`service "c_d" instance cd1: upstream c_d_e already belongs to service c; refused`,
		`service "web" instance w2: address 10.0.0.3:80 already used by instance w1 in upstream web`,
	}
	if strings.Join(reasons, "\n") != strings.Join(wantDropped, "\n") {
		t.Errorf("dropped:\n%s\nwant:\n%s", strings.Join(reasons, "\n"), strings.Join(wantDropped, "\n"))
	}
	// Build is the same as merging every service's part.
	if st2, d2 := Build(services, rules); render(st2) != got || len(d2) != len(dropped) {
		t.Errorf("Build differs from Merge: %s %v", render(st2), d2)
	}
}

// Rebuilding one service's part and merging it with the others' cached
// parts gives what building everything again gives.
func TestMergeOfCachedPartsEqualsFullBuild(t *testing.T) {
	services := map[string][]Instance{}
	parts := map[string]Part{}
	for s := range 20 {
		svc := "svc" + strings.Repeat("x", s%3) + string(rune('a'+s))
		for i := range 3 {
			services[svc] = append(services[svc], Instance{ID: svc + "-" + string(rune('0'+i)), Address: "10.0." + string(rune('0'+s%10)) + ".1", Port: 8000 + i, Healthy: i != 2})
		}
		parts[svc] = BuildService(svc, services[svc], rules)
	}
	for step := range 10 {
		svc := "svc" + strings.Repeat("x", step%3) + string(rune('a'+step))
		services[svc] = append(services[svc][1:], Instance{ID: "new", Address: "10.1.0.1", Port: 9000 + step, Healthy: true, Tags: []string{"gray=c"}})
		parts[svc] = BuildService(svc, services[svc], rules)
		var list []Part
		for _, p := range parts {
			list = append(list, p)
		}
		got, gd := Merge(list)
		want, wd := Build(services, rules)
		if render(got) != render(want) || len(gd) != len(wd) {
			t.Fatalf("step %d: merged cached parts:\n%s\nfull build:\n%s", step, render(got), render(want))
		}
	}
}
