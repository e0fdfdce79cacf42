package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// renderConfig writes a config that lets the test's loopback backends in.
func renderConfig(t *testing.T) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "sk.yml")
	if err := os.WriteFile(conf, []byte("upstreams: {allow_addresses: [127.0.0.0/8]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// render writes nothing, so a persisted file under a directory that does
// not exist yet (a fresh /var/lib/swallowkeeper) is an empty previous
// state, not a configuration error (issue 16, item 2).
func TestRenderNeedsNoStateDirectory(t *testing.T) {
	c := testenv.StartConsul(t)
	b := startBackend(t, "api-1")
	c.Register(t, "api", "api-1", "127.0.0.1", b.Port, nil, nil)
	missing := filepath.Join(t.TempDir(), "var", "lib", "swallowkeeper")
	file := filepath.Join(missing, "upstreams.conf")
	conf := renderConfig(t)

	code, out, errs := runCLI(t, nil, "render", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file)
	if code != 0 || !strings.Contains(out, "upstream api {") || !strings.Contains(out, b.Addr()) {
		t.Fatalf("render with a missing state directory: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatalf("render created %s", missing)
	}
	// -diff against a file that does not exist: everything is new.
	code, out, errs = runCLI(t, nil, "render", "-diff", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file)
	if code != 2 || !strings.Contains(out, "+upstream api {") {
		t.Fatalf("render -diff with no persisted file: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	// The file's header is no part of an upstream's hunk.
	if strings.Contains(out, "# Managed by swallowkeeper") {
		t.Errorf("render -diff shows the file's header in a hunk:\n%s", out)
	}
	// The daemon still needs the directory: it writes there.
	if code, _, errs := runCLI(t, nil, "once", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file, "-target", "http://127.0.0.1:1"); code != 1 || !strings.Contains(errs, "directory of "+file) {
		t.Fatalf("once with a missing state directory: exit %d %q", code, errs)
	}
}

// render and check only read the persisted file, and may run while a
// daemon writes it: they must not remove a temp file next to it, which
// may be the daemon's write in progress (found by review: its rename then
// failed). The file store and the directory store alike.
func TestReadOnlyCommandsLeaveTempFiles(t *testing.T) {
	c := testenv.StartConsul(t)
	b := startBackend(t, "api-1")
	c.Register(t, "api", "api-1", "127.0.0.1", b.Port, nil, nil)
	conf := renderConfig(t)
	for _, tc := range []struct{ name, file, temp string }{
		{"file", "upstreams.conf", ".upstreams.conf.tmp-4242"},
		{"directory", "*.conf", ".api.conf.tmp-4242"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			temp := filepath.Join(dir, tc.temp)
			if err := os.WriteFile(temp, []byte("upstream api {\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, tc.file)
			if code, out, errs := runCLI(t, nil, "render", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file); code != 0 || !strings.Contains(out, "upstream api {") {
				t.Fatalf("render: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			if _, err := os.Lstat(temp); err != nil {
				t.Fatalf("render removed %s: %v", tc.temp, err)
			}
			if code, out, errs := runCLI(t, nil, "check", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file); code != 0 {
				t.Fatalf("check: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			if _, err := os.Lstat(temp); err != nil {
				t.Fatalf("check removed %s: %v", tc.temp, err)
			}
		})
	}
}

// With the registry down, render fails once, within -timeout, with one
// line that names the registry and the last error, and none of the
// source's retry warnings.
func TestRenderWithRegistryDownFailsOnceWithinTimeout(t *testing.T) {
	addr := testenv.Addr(testenv.FreePort(t)) // nothing listens here
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	start := time.Now()
	code, out, errs := runCLI(t, nil, "render", "-timeout", "2s", "-consul-addr", addr, "-file", file)
	took := time.Since(start)
	if code != 1 || out != "" {
		t.Fatalf("render with Consul down: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if took > 5*time.Second || took < 1900*time.Millisecond {
		t.Errorf("render with -timeout 2s took %s, want about 2s", took)
	}
	t.Logf("FIGURE render with Consul down and -timeout 2s failed after %v", took.Round(time.Millisecond))
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	if len(lines) != 1 {
		t.Errorf("render printed %d lines, want one error:\n%s", len(lines), errs)
	}
	// An error, not a log line: the registry, what is wrong with it, and
	// the cause, without the source's "watch failed; retrying" or the URL
	// it was asking.
	if want := "swallowkeeper render: consul " + addr + ": unreachable after 2s: dial tcp " + addr + ": connect: connection refused\n"; errs != want {
		t.Errorf("render with Consul down printed\n%q\nwant\n%q", errs, want)
	}
	// The default is short: 10s.
	if code, _, errs := runCLI(t, nil, "render", "-h"); code != 0 || !strings.Contains(errs, "-timeout") || !strings.Contains(errs, "default 10s") || !strings.Contains(errs, "-diff") {
		t.Errorf("render -h: %d\n%s", code, errs)
	}
	// -log-level debug shows what the source tried.
	_, _, errs = runCLI(t, nil, "render", "-timeout", "1s", "-log-level", "debug", "-consul-addr", addr, "-file", file)
	if !strings.Contains(errs, "level=WARN") {
		t.Errorf("render -log-level debug hides the source's warnings:\n%s", errs)
	}
}

// render -diff compares the registry with the persisted file: exit 0 and
// "no change" when they match, exit 2 and a unified-style hunk per
// changed upstream when they differ; the file is left as it was.
func TestRenderDiff(t *testing.T) {
	c := testenv.StartConsul(t)
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(t, "api", "api-1", "127.0.0.1", b1.Port, nil, nil)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	conf := renderConfig(t)
	args := []string{"-config", conf, "-consul-addr", c.HTTPAddr(), "-file", file}

	code, rendered, errs := runCLI(t, nil, append([]string{"render"}, args...)...)
	if code != 0 {
		t.Fatalf("render: %d %s", code, errs)
	}
	if err := os.WriteFile(file, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, nil, append([]string{"render", "-diff"}, args...)...)
	if want := "no change: " + file + " matches the registry (2 upstreams)\n"; code != 0 || out != want {
		t.Fatalf("render -diff with nothing changed: exit %d\n%q, want %q\n%s", code, out, want, errs)
	}

	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	code, out, errs = runCLI(t, nil, append([]string{"render", "-diff"}, args...)...)
	if code != 2 {
		t.Fatalf("render -diff with a new server: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"--- " + file + " (persisted)\n", "+++ consul " + c.HTTPAddr() + " (rendered)\n", "@@ upstream web @@\n", " upstream web {\n", "+    server " + b2.Addr() + " "} {
		if !strings.Contains(out, want) {
			t.Errorf("render -diff does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "upstream api") || strings.Contains(out, "-    server") || strings.Contains(out, "# Managed by") {
		t.Errorf("render -diff shows more than the change:\n%s", out)
	}
	if after, _ := os.ReadFile(file); string(after) != rendered {
		t.Errorf("render -diff changed the persisted file:\n%s", after)
	}
}
