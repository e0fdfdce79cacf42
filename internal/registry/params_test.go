package registry

import "testing"

// TestUpstreamDefaultsDoNotSetBackupOrDown: an upstream's defaults replace
// the rules' counts only; backup and down come from the registry alone.
func TestUpstreamDefaultsDoNotSetBackupOrDown(t *testing.T) {
	yes := true
	r := Rules{Weight: 1, MaxFails: 1, DefaultsFor: map[string]Params{"web": {Backup: &yes, Down: &yes}}}
	st, dropped := Build(map[string][]Instance{"web": {
		{Service: "web", ID: "plain", Address: "10.0.0.1", Port: 80, Healthy: true},
		{Service: "web", ID: "down", Address: "10.0.0.2", Port: 80, Healthy: true, Params: Params{Down: &yes}},
	}}, r)
	if len(dropped) != 0 {
		t.Fatal(dropped)
	}
	for _, s := range st["web"].Servers {
		if wantDown := s.Addr.Addr().String() == "10.0.0.2"; s.Backup || s.Down != wantDown {
			t.Errorf("%s: backup %v down %v, want backup false down %v", s.Addr, s.Backup, s.Down, wantDown)
		}
	}
	if n := len(st["web"].Servers); n != 2 {
		t.Fatalf("%d servers, want 2", n)
	}
}
