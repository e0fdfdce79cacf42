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
