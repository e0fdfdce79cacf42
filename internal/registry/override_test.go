package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestServerDefaultPrecedence: registry values beat the upstream's
// override, which beats the rules' defaults.
func TestServerDefaultPrecedence(t *testing.T) {
	three, zero, fifty, nine := 3, 0, 50, 9
	ft := 30 * time.Second
	r := Rules{Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, WeightMeta: "weight",
		DefaultsFor: map[string]Params{"web": {Weight: &three, MaxFails: &zero, FailTimeout: &ft, MaxConns: &fifty}}}
	in := func(id, addr string, meta map[string]string, p Params) Instance {
		return Instance{Service: "web", ID: id, Address: addr, Port: 80, Healthy: true, Meta: meta, Params: p}
	}
	st, dropped := Build(map[string][]Instance{
		"web": {
			in("plain", "10.0.0.1", nil, Params{}),
			in("meta", "10.0.0.2", map[string]string{"weight": "7"}, Params{}),
			in("params", "10.0.0.3", map[string]string{"weight": "7"}, Params{Weight: &nine, MaxConns: &zero}),
		},
		"api": {in("other", "10.0.0.4", nil, Params{})},
	}, r)
	if len(dropped) != 0 {
		t.Fatal(dropped)
	}
	got := map[string]upstream.Server{}
	for _, u := range st {
		for _, s := range u.Servers {
			got[s.Addr.Addr().String()] = s
		}
	}
	for _, tt := range []struct {
		addr                    string
		weight, maxFails, conns int
		failTimeout             time.Duration
	}{
		{"10.0.0.1", 3, 0, 50, 30 * time.Second}, // the override
		{"10.0.0.2", 7, 0, 50, 30 * time.Second}, // weight meta wins
		{"10.0.0.3", 9, 0, 0, 30 * time.Second},  // Params win
		{"10.0.0.4", 1, 1, 0, 10 * time.Second},  // other upstream: the rules
	} {
		s := got[tt.addr]
		if s.Weight != tt.weight || s.MaxFails != tt.maxFails || s.MaxConns != tt.conns || s.FailTimeout != tt.failTimeout {
			t.Errorf("%s: %+v, want weight %d max_fails %d max_conns %d fail_timeout %v", tt.addr, s, tt.weight, tt.maxFails, tt.conns, tt.failTimeout)
		}
	}
}

// TestBackupDroppedUnderHashMethods: nginx refuses backup servers with
// ip_hash and hash, so such an instance is dropped and reported, never
// rendered; least_conn keeps it.
func TestBackupDroppedUnderHashMethods(t *testing.T) {
	yes := true
	list := []Instance{
		{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Healthy: true},
		{Service: "web", ID: "w2", Address: "10.0.0.2", Port: 80, Healthy: true, Params: Params{Backup: &yes}},
	}
	for _, tt := range []struct {
		b    upstream.Balance
		keep bool
	}{
		{upstream.Balance{}, true},
		{upstream.Balance{Method: upstream.LeastConn}, true},
		{upstream.Balance{Method: upstream.IPHash}, false},
		{upstream.Balance{Method: upstream.Hash, Key: "$remote_addr", Consistent: true}, false},
	} {
		r := Rules{Weight: 1, MaxFails: 1, BalanceFor: map[string]upstream.Balance{"web": tt.b}}
		st, dropped := Build(map[string][]Instance{"web": list}, r)
		u := st["web"]
		if u.Balance != tt.b {
			t.Errorf("%v: upstream balance %v", tt.b, u.Balance)
		}
		if err := u.Validate(); err != nil {
			t.Errorf("%v: built an invalid upstream: %v", tt.b, err)
		}
		if tt.keep != (len(u.Servers) == 2) || tt.keep != (len(dropped) == 0) {
			t.Errorf("%v: servers %d dropped %v, want backup kept=%v", tt.b, len(u.Servers), dropped, tt.keep)
		}
		if !tt.keep && (len(dropped) != 1 || !strings.Contains(dropped[0].Reason, "backup server refused")) {
			t.Errorf("%v: dropped %v", tt.b, dropped)
		}
	}
}

// TestOverridesMatchNamesCaseInsensitively: upstream names fold case
// everywhere else (dyups, the drift check, collisions), so an override
// for web applies to a service registered as Web, and one for WEB to web.
func TestOverridesMatchNamesCaseInsensitively(t *testing.T) {
	three := 3
	b := upstream.Balance{Method: upstream.LeastConn}
	r := Rules{Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Keepalive: 8,
		BalanceFor:   map[string]upstream.Balance{"web": b, "API": b},
		DefaultsFor:  map[string]Params{"web": {Weight: &three}, "API": {Weight: &three}},
		KeepaliveFor: map[string]int{"web": 32, "API": 32}}
	st, dropped := Build(map[string][]Instance{
		"Web":  {{Service: "Web", ID: "w", Address: "10.0.0.1", Port: 80, Healthy: true}},
		"api":  {{Service: "api", ID: "a", Address: "10.0.0.2", Port: 80, Healthy: true}},
		"othr": {{Service: "othr", ID: "o", Address: "10.0.0.3", Port: 80, Healthy: true}},
	}, r)
	if len(dropped) != 0 {
		t.Fatal(dropped)
	}
	for _, name := range []string{"Web", "api"} {
		u := st[name]
		if u.Balance != b || u.Keepalive != 32 || len(u.Servers) != 1 || u.Servers[0].Weight != 3 {
			t.Errorf("%s: balance %v keepalive %d servers %+v, want the override's least_conn, 32, weight 3", name, u.Balance, u.Keepalive, u.Servers)
		}
	}
	if u := st["othr"]; u.Balance != (upstream.Balance{}) || u.Keepalive != 8 || u.Servers[0].Weight != 1 {
		t.Errorf("othr took an override: %+v", u)
	}
}

// TestConsistentHashWeightsAreBounded: registry weights up to 10000 under
// hash … consistent count as upstream.RingMaxWeight each, so that neither
// nginx nor the Lua module builds a ring of millions of points.
func TestConsistentHashWeightsAreBounded(t *testing.T) {
	r := Rules{Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, WeightMeta: "weight",
		BalanceFor: map[string]upstream.Balance{"web": {Method: upstream.Hash, Key: "$remote_addr", Consistent: true}}}
	in := func(id, addr, weight string) Instance {
		return Instance{Service: "web", ID: id, Address: addr, Port: 80, Healthy: true, Meta: map[string]string{"weight": weight}}
	}
	st, dropped := Build(map[string][]Instance{"web": {in("a", "10.0.0.1", "10000"), in("b", "10.0.0.2", "5000")}}, r)
	if len(dropped) != 0 {
		t.Fatal(dropped)
	}
	var got []int
	for _, s := range st["web"].Servers {
		got = append(got, s.Weight)
	}
	if len(got) != 2 || got[0] != upstream.RingMaxWeight || got[1] != upstream.RingMaxWeight {
		t.Fatalf("weights %v, want both at the bound %d", got, upstream.RingMaxWeight)
	}
}
