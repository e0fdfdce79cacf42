package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// parseOverrides parses a config whose upstreams section is yml and
// validates it.
func parseOverrides(t *testing.T, yml string) (*Config, error) {
	t.Helper()
	c, err := Parse("test.yml", []byte("upstreams:\n"+yml))
	if err != nil {
		return nil, err
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	return c, c.Validate()
}

func TestOverrideBalanceAndServerDefaults(t *testing.T) {
	c, err := parseOverrides(t, `  overrides:
    web:
      balance: hash $cookie_sid consistent
      weight: 3
      max_fails: 0
      fail_timeout: 30s
      max_conns: 50
    api:
      balance: least_conn
    static:
      balance: round_robin
`)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Rules()
	want := map[string]upstream.Balance{
		"web": {Method: upstream.Hash, Key: "$cookie_sid", Consistent: true},
		"api": {Method: upstream.LeastConn},
	}
	if len(r.BalanceFor) != len(want) || r.BalanceFor["web"] != want["web"] || r.BalanceFor["api"] != want["api"] {
		t.Errorf("BalanceFor = %+v, want %+v (round_robin is the zero value, not an entry)", r.BalanceFor, want)
	}
	d, ok := r.DefaultsFor["web"]
	if !ok || *d.Weight != 3 || *d.MaxFails != 0 || *d.FailTimeout != 30*time.Second || *d.MaxConns != 50 || d.Backup != nil || d.Down != nil {
		t.Errorf("DefaultsFor[web] = %+v", d)
	}
	if _, ok := r.DefaultsFor["api"]; ok {
		t.Error("api sets no server default but has DefaultsFor")
	}
	// The rules build what the config says: web's servers take the
	// override, api's the section's defaults.
	st, dropped := registry.Build(map[string][]registry.Instance{
		"web": {{Service: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Healthy: true}},
		"api": {{Service: "api", ID: "a1", Address: "10.0.0.2", Port: 80, Healthy: true}},
	}, r)
	if len(dropped) != 0 {
		t.Fatalf("dropped %v", dropped)
	}
	ws, as := st["web"].Servers[0], st["api"].Servers[0]
	if ws.Weight != 3 || ws.MaxFails != 0 || ws.FailTimeout != 30*time.Second || ws.MaxConns != 50 {
		t.Errorf("web server %+v, want the override's defaults", ws)
	}
	if as.Weight != 1 || as.MaxFails != 1 || as.FailTimeout != 10*time.Second || as.MaxConns != 0 {
		t.Errorf("api server %+v, want the section's defaults", as)
	}
	if st["web"].Balance != want["web"] || st["api"].Balance != want["api"] {
		t.Errorf("balance web %v api %v", st["web"].Balance, st["api"].Balance)
	}
}

func TestBadOverrides(t *testing.T) {
	for _, tt := range []struct{ yml, want string }{
		{"balance: random", "upstreams.overrides.web.balance: balance \"random\": unknown method"},
		{"balance: hash", "upstreams.overrides.web.balance: balance \"hash\": want hash KEY [consistent]"},
		{"balance: hash $x sticky", "unknown hash parameter \"sticky\""},
		{"balance: hash nokey", "has no $variable"},
		{`balance: "hash $x;server"`, "character ';' at byte 2 is not allowed"},
		{`balance: "hash ${host}"`, "does not start a variable name"},
		{`balance: "hash $host\"x"`, "is not allowed"},
		{"balance: least_conn consistent", "least_conn takes no argument"},
		{"weight: 0", "upstreams.overrides.web.weight: 0 out of range 1-10000"},
		{"max_fails: -1", "upstreams.overrides.web.max_fails: -1 out of range"},
		{"max_conns: 2000000", "upstreams.overrides.web.max_conns: 2000000 out of range"},
		{"fail_timeout: 1500ms", "upstreams.overrides.web.fail_timeout: 1.5s: want whole seconds"},
		{"fail_timeout: 25h", "upstreams.overrides.web.fail_timeout: 25h0m0s: want whole seconds"},
	} {
		_, err := parseOverrides(t, "  overrides:\n    web:\n      "+tt.yml+"\n")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want it to contain %q", tt.yml, err, tt.want)
		}
	}
}

func TestLuaPlaneNotes(t *testing.T) {
	c, err := parseOverrides(t, "  overrides:\n    web:\n      balance: ip_hash\n")
	if err != nil {
		t.Fatal(err)
	}
	if n := c.LuaPlaneNotes(); len(n) != 0 {
		t.Errorf("ip_hash is enforced on the Lua plane, yet notes %q", n)
	}
	c, err = parseOverrides(t, "  max_conns: 10\n  overrides:\n    web:\n      balance: least_conn\n      max_conns: 5\n      keepalive: 8\n")
	if err != nil {
		t.Fatal(err)
	}
	notes := c.LuaPlaneNotes()
	for _, want := range []string{"upstreams.max_conns: not enforced", "upstreams.overrides.web.max_conns: not enforced", "upstreams.overrides.web.keepalive: not applied", "least_conn: the Lua module counts"} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("notes %q lack %q", notes, want)
		}
	}
}

// TestOverridesDifferingOnlyInCaseRefused: overrides match upstream names
// case-insensitively, so two keys that fold alike would both claim one
// upstream.
func TestOverridesDifferingOnlyInCaseRefused(t *testing.T) {
	_, err := parseOverrides(t, "  overrides:\n    web:\n      weight: 2\n    WEB:\n      weight: 3\n")
	if err == nil || !strings.Contains(err.Error(), "upstreams.overrides.web: differs from WEB only in case") {
		t.Errorf("error %v, want the two keys refused", err)
	}
}
