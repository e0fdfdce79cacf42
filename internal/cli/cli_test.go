package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestHelpVersionAndUnknownCommand(t *testing.T) {
	if code, out, _ := runCLI(t, nil, "help"); code != 0 || !strings.Contains(out, "swallowkeeper run") || !strings.Contains(out, "CONSUL_HTTP_TOKEN") {
		t.Errorf("help: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "swallowkeeper ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, errs := runCLI(t, nil, "frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown: %d %q", code, errs)
	}
	if code, _, _ := runCLI(t, nil); code != 2 {
		t.Errorf("no command: %d", code)
	}
	if code, _, errs := runCLI(t, nil, "run", "-h"); code != 0 || !strings.Contains(errs, "-target") {
		t.Errorf("run -h: %d %q", code, errs)
	}
}

func TestCheckNamesFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sk.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("file: %s/u.conf\nupstreams:\n  weight: 0\n", dir)), 0o644)
	code, _, errs := runCLI(t, nil, "check", "-config", cfg)
	if code != 1 || !strings.Contains(errs, cfg+":3: upstreams.weight: 0 out of range") {
		t.Errorf("check: %d %q", code, errs)
	}
	os.WriteFile(cfg, []byte(fmt.Sprintf("file: %s/u.conf\n", dir)), 0o644)
	if code, out, errs := runCLI(t, nil, "check", "-config", cfg); code != 0 || !strings.Contains(out, "configuration ok") {
		t.Errorf("good config: %d %q %q", code, out, errs)
	}
	// A flag that overrides the file is named as the culprit.
	code, _, errs = runCLI(t, nil, "check", "-config", cfg, "-target", "http://x:1/path")
	if code != 1 || !strings.Contains(errs, "targets[0].url (from flag -target)") {
		t.Errorf("bad flag: %d %q", code, errs)
	}
	// A corrupt persisted file is an error naming it.
	os.WriteFile(filepath.Join(dir, "u.conf"), []byte("upstream web {\n server nope;\n}\n"), 0o644)
	code, _, errs = runCLI(t, nil, "check", "-config", cfg)
	if code != 1 || !strings.Contains(errs, filepath.Join(dir, "u.conf")+": line 2") {
		t.Errorf("corrupt file: %d %q", code, errs)
	}
}

func TestTokenNeverLogged(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := runCLI(t, map[string]string{"CONSUL_HTTP_TOKEN": "s3cr3t-token-value", "CONSUL_HTTP_ADDR": "bad addr"},
		"check", "-file", filepath.Join(dir, "u.conf"), "-log-level", "debug")
	if code != 1 {
		t.Fatalf("bad address accepted: %d", code)
	}
	if strings.Contains(errs, "s3cr3t") {
		t.Fatalf("token printed: %s", errs)
	}
}

func TestRunRefusesACorruptPersistedFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "u.conf")
	os.WriteFile(file, []byte("upstream web { server 10.0.0.1:80 weight=0; }\n"), 0o644)
	code, _, errs := runCLI(t, nil, "run", "-file", file, "-metrics-listen", "off", "-consul-addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, file) || !strings.Contains(errs, "weight 0") {
		t.Fatalf("run with a corrupt file: %d %q", code, errs)
	}
}

// render and once against real Consul and nginx.
func TestRenderAndOnce(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	b := startBackend(t, "api-1")
	c.Register(t, "api", "api-1", "127.0.0.1", b.Port, []string{"gray=canary"}, map[string]string{"weight": "7"})
	dir := t.TempDir()
	file := filepath.Join(dir, "u.conf")
	// The backend is on loopback, which the address policy refuses by
	// default: the test opts in as an operator would.
	conf := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(conf, []byte("upstreams: {allow_addresses: [127.0.0.0/8]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file, "-target", ng.APIURL()}

	code, out, errs := runCLI(t, nil, append([]string{"render"}, args...)...)
	want := "upstream api_canary {\n    server " + b.Addr() + " weight=7 max_fails=1 fail_timeout=10s;\n    keepalive 16;\n}\n"
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("render: %d\n%s\nwant:\n%s\nstderr: %s", code, out, want, errs)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("render wrote the persisted file")
	}
	if list := apiGet(t, ng, "/list"); list != "" {
		t.Fatalf("render touched nginx: %q", list)
	}

	code, out, errs = runCLI(t, nil, append([]string{"once"}, args...)...)
	if code != 0 || !strings.Contains(out, "synced 1 upstream to 1 target") {
		t.Fatalf("once: %d %q %q", code, out, errs)
	}
	if got := fileServers(t, file, "api_canary"); len(got) != 1 || got[0] != b.Addr() {
		t.Fatalf("file after once: %v", got)
	}
	if seen, failed := route(t, ng, "api_canary", 5); failed > 0 || seen["api-1"] != 5 {
		t.Fatalf("traffic after once: %v, %d failed", seen, failed)
	}

	// once fails, with a non-zero exit, when nginx cannot be reached.
	code, _, errs = runCLI(t, nil, "once", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file, "-target", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "127.0.0.1:1") {
		t.Fatalf("once against a dead nginx: %d %q", code, errs)
	}
}

// The help teaches what the daemon watches and shows no made-up default;
// version says which build runs (issue 16).
func TestHelpAndVersionSayWhatRuns(t *testing.T) {
	_, out, _ := runCLI(t, nil, "help")
	if !strings.Contains(out, "It watches Consul, etcd or ZooKeeper") {
		t.Errorf("help does not name every registry:\n%s", out)
	}
	_, _, errs := runCLI(t, nil, "run", "-h")
	if strings.Contains(errs, "default -1") || !strings.Contains(errs, "-min-services N") {
		t.Errorf("run -h shows a made-up default for -min-services:\n%s", errs)
	}
	if code, _, errs := runCLI(t, nil, "check", "-min-services", "-2"); code != 2 || !strings.Contains(errs, "want a whole number from 0") {
		t.Errorf("check -min-services -2: %d %q", code, errs)
	}
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "swallowkeeper ") {
		t.Errorf("version: %d %q", code, out)
	}
}
