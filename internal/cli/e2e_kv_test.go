package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestConsulKVEndToEnd (issue 17, part 2): the daemon in consul.mode kv
// between a real Consul and a real nginx with the Lua module. Keys
// upstreams/web/<ip>:<port> hold upsync's JSON; what reaches the backends
// is counted from their answers (each request over a new connection, so
// that every worker serves some).
func TestConsulKVEndToEnd(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.conf")
	cfg := filepath.Join(dir, "swallowkeeper.yml")
	text := fmt.Sprintf(`consul:
  address: %s
  mode: kv
  wait_time: 30s
file: %s
targets:
  - url: %s
    timeout: 2s
upstreams:
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
metrics:
  listen: ""
`, c.HTTPAddr(), file, ng.APIURL())
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b, bk := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "backup")
	kv := c.Client.KV()
	put := func(be *backend, value string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: "upstreams/web/" + be.Addr(), Value: []byte(value)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	del := func(be *backend) {
		t.Helper()
		if _, err := kv.Delete("upstreams/web/"+be.Addr(), nil); err != nil {
			t.Fatal(err)
		}
	}
	// hits sends n requests and returns the answers per backend; any
	// failure fails the test.
	hits := func(what string, n int) map[string]int {
		t.Helper()
		seen, failed := route(t, ng, "web", n)
		if failed > 0 {
			t.Fatalf("%s: %d of %d requests failed (answers %v)", what, failed, n, seen)
		}
		return seen
	}

	put(a, `{"weight":3,"max_fails":2,"fail_timeout":10}`)
	put(b, `{"weight":1}`)
	put(bk, `{"weight":1,"backup":1}`)
	d := startDaemon(t, "-config", cfg)
	waitRoutes(t, ng, d, "web", "a", "b")
	if got := fileServers(t, file, "web"); !slices.Equal(got, sorted(a.Addr(), b.Addr(), bk.Addr())) {
		t.Fatalf("persisted file has %v, want the three keys' servers", got)
	}
	detail := apiGet(t, ng, "/detail")
	for _, want := range []string{
		"server " + a.Addr() + " weight=3 max_conns=0 max_fails=2 fail_timeout=10 backup=0 down=0",
		"server " + b.Addr() + " weight=1 ",
		"server " + bk.Addr() + " weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=1 down=0",
	} {
		if !strings.Contains(detail, want) {
			t.Errorf("/detail lacks %q:\n%s", want, detail)
		}
	}
	// Weights 3:1 between a and b; the backup serves nothing while they
	// are up.
	const n = 400
	seen := hits("weights 3:1", n)
	if seen["backup"] != 0 || seen["a"]+seen["b"] != n {
		t.Fatalf("weights 3:1 with a backup: answers %v, want a and b only", seen)
	}
	if share := float64(seen["a"]) / n; share < 0.70 || share > 0.80 {
		t.Errorf("a (weight 3) answered %d of %d (%.1f%%), want 75%% ± 5 points; answers %v", seen["a"], n, share*100, seen)
	}
	t.Logf("FIGURE kv weights 3:1 over %d requests: a %d, b %d, backup %d", n, seen["a"], seen["b"], seen["backup"])

	// A deleted key: its server gets nothing more.
	del(b)
	waitRoutes(t, ng, d, "web", "a")
	if seen := hits("b's key deleted", 100); seen["a"] != 100 {
		t.Errorf("after b's key was deleted: answers %v, want all 100 from a", seen)
	}
	if got := fileServers(t, file, "web"); !slices.Equal(got, sorted(a.Addr(), bk.Addr())) {
		t.Errorf("persisted file has %v after b's key was deleted", got)
	}

	// down:1 takes a server out without deleting its key.
	put(b, `{"weight":1}`)
	put(a, `{"weight":3,"down":1}`)
	waitRoutes(t, ng, d, "web", "b")
	if seen := hits("a down", 100); seen["b"] != 100 {
		t.Errorf("with a down: answers %v, want all 100 from b", seen)
	}
	if !strings.Contains(apiGet(t, ng, "/detail"), "server "+a.Addr()+" weight=3 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=1") {
		t.Errorf("/detail does not show a down:\n%s", apiGet(t, ng, "/detail"))
	}

	// Every primary down: the backup serves.
	put(b, `{"weight":1,"down":1}`)
	waitRoutes(t, ng, d, "web", "backup")
	if seen := hits("a and b down", 100); seen["backup"] != 100 {
		t.Errorf("with a and b down: answers %v, want all 100 from the backup", seen)
	}

	// The prefix emptied: the guard keeps the last servers in nginx and
	// in the file.
	if _, err := kv.DeleteTree("upstreams/", nil); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d, "the registry reports no services; keeping the last known state")
	if seen := hits("prefix emptied", 100); seen["backup"] != 100 {
		t.Errorf("after the prefix was emptied: answers %v, want all 100 from the backup (the last servers kept)", seen)
	}
	if d := apiGet(t, ng, "/detail"); strings.Count(d, "server ") != 3 || !strings.Contains(d, "server "+b.Addr()+" weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=1") {
		t.Errorf("/detail after the prefix was emptied, want the last three servers as they were:\n%s", d)
	}
	if got := fileServers(t, file, "web"); !slices.Equal(got, sorted(a.Addr(), b.Addr(), bk.Addr())) {
		t.Errorf("persisted file has %v after the prefix was emptied, want the last servers", got)
	}
}

// `check` prints the consul settings the chosen mode does not read, and
// nothing about those that apply.
func TestCheckNotesConsulSettingsOfTheOtherMode(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "sk.yml")
	for _, c := range []struct{ body, want string }{
		{"consul: {mode: kv, kv_prefix: nginx/ups}\n", ""},
		{"consul: {mode: kv, weights: native, address_from: wan}\n", `note: consul.weights: "native" does not apply in kv mode`},
		{"consul: {mode: kv, address_from: wan}\n", `note: consul.address_from: "wan" does not apply in kv mode`},
		{"consul: {weights: native, kv_prefix: nginx/ups}\n", `note: consul.kv_prefix: "nginx/ups" does not apply in services mode`},
	} {
		os.WriteFile(conf, []byte(c.body), 0o644)
		code, out, errs := runCLI(t, nil, "check", "-config", conf, "-file", filepath.Join(dir, "u.conf"))
		if code != 0 || !strings.Contains(out, "configuration ok") {
			t.Fatalf("check %q: exit %d, stdout %q, stderr %q", c.body, code, out, errs)
		}
		if has := strings.Contains(out, "does not apply"); has != (c.want != "") || !strings.Contains(out, c.want) {
			t.Errorf("check %q printed %q, want a note containing %q", c.body, out, c.want)
		}
	}
}
