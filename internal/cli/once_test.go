package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestOnceInReloadModeSaysWhatItDid: `once` in reload mode has no dyups
// target; it says it wrote the file, that the test passed it and that
// nginx was reloaded (the reload command ran), instead of "synced 1
// upstreams to 0 target(s)", as it did).
func TestOnceInReloadModeSaysWhatItDid(t *testing.T) {
	c := testenv.StartConsul(t)
	c.Register(t, "web", "web-1", "127.0.0.1", 8080, nil, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.conf")
	reloads := filepath.Join(dir, "reloads")
	conf := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`consul: {address: %q}
file: %s
reload:
  enabled: true
  test: [test, -s, %s]
  command: [sh, -c, "echo reloaded >> %s"]
upstreams: {allow_addresses: [127.0.0.0/8]}
`, c.HTTPAddr(), file, file, reloads)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, nil, "once", "-config", conf)
	if code != 0 {
		t.Fatalf("once: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	want := fmt.Sprintf("synced 1 upstream; file %s written, test -s %s ok, nginx reloaded (sh -c echo reloaded >> %s)\n", file, file, reloads)
	if out != want {
		t.Errorf("once printed\n%q\nwant\n%q", out, want)
	}
	if b, err := os.ReadFile(reloads); err != nil || string(b) != "reloaded\n" {
		t.Errorf("the reload command ran %q (%v), want once", b, err)
	}
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), "upstream web {") {
		t.Errorf("the file once wrote: %q (%v)", b, err)
	}
}
