package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestRenderSaysWhyInstancesAreDropped: at the default log level, render
// says why the registry's entries were left out (here: loopback
// addresses), the first of each service, at most 10 lines, then how many
// more; -log-level debug lists every one.
func TestRenderSaysWhyInstancesAreDropped(t *testing.T) {
	c := testenv.StartConsul(t)
	c.Register(t, "web", "web-1", "127.0.0.1", 8080, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", 8081, nil, nil)
	for i := range 12 {
		c.Register(t, fmt.Sprintf("svc%02d", i), fmt.Sprintf("svc%02d-1", i), "127.0.0.1", 9000+i, nil, nil)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(conf, []byte("services: {exclude: [consul]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"render", "-config", conf, "-consul-addr", c.HTTPAddr(), "-file", filepath.Join(dir, "upstreams.conf")}

	code, _, errs := runCLI(t, nil, args...)
	if code != 0 {
		t.Fatalf("render: exit %d\n%s", code, errs)
	}
	drop := regexp.MustCompile(`(?m)^.*level=WARN msg="invalid instance dropped".* service=(\S+) .*reason="([^"]*)"$`)
	seen := map[string]bool{}
	lines := drop.FindAllStringSubmatch(errs, -1)
	for _, m := range lines {
		if seen[m[1]] {
			t.Errorf("render shows a second drop of service %s", m[1])
		}
		seen[m[1]] = true
		if !strings.Contains(m[2], "loopback") || !strings.Contains(m[2], "upstreams.allow_addresses") {
			t.Errorf("the reason does not say what is wrong and what allows it: %q", m[2])
		}
	}
	// 14 entries dropped (web's two, one of each svc): 10 shown, 4 counted.
	if len(lines) != 10 {
		t.Errorf("render shows %d drop lines, want 10:\n%s", len(lines), errs)
	}
	if !strings.Contains(errs, `msg="more invalid registry entries dropped" count=4 `) {
		t.Errorf("render does not count the drops it did not show:\n%s", errs)
	}

	_, _, errs = runCLI(t, nil, append(args, "-log-level", "debug")...)
	if n := len(drop.FindAllString(errs, -1)); n != 14 {
		t.Errorf("render -log-level debug shows %d drops, want 14:\n%s", n, errs)
	}
}

// TestOnceNamesATargetNothingAnswersAt: when nothing listens at a dyups
// target's URL (nginx not running, a wrong socket path), once's error
// names the target's configuration line and says what to check.
func TestOnceNamesATargetNothingAnswersAt(t *testing.T) {
	c := testenv.StartConsul(t)
	b := startBackend(t, "api-1")
	c.Register(t, "api", "api-1", "127.0.0.1", b.Port, nil, nil)
	dir := t.TempDir()
	sock := filepath.Join(dir, "dyups.sock") // nothing listens here
	conf := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`upstreams: {allow_addresses: [127.0.0.0/8]}
file: %s
targets:
  - url: unix:%s
`, filepath.Join(dir, "upstreams.conf"), sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, nil, "once", "-config", conf, "-consul-addr", c.HTTPAddr())
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	last := lines[len(lines)-1]
	if code != 1 || out != "" {
		t.Fatalf("once with nothing at %s: exit %d, stdout %q\n%s", sock, code, out, errs)
	}
	for _, want := range []string{
		"swallowkeeper once: dyups unix:" + sock + ": ",
		"dial unix " + sock + ": connect: no such file or directory",
		"(nothing answers at targets[0].url (" + conf + ":4): is nginx running with the dyups API, and is the url right?)",
	} {
		if !strings.Contains(last, want) {
			t.Errorf("once's error does not say %q:\n%s", want, last)
		}
	}
}

// TestOnceCountsTheConfiguredTargets: with one dyups target (a real nginx
// with the Lua module), once says "to 1 target": the splits sink, which
// pushes to that target, is not counted as a second one; whether the
// split rules reached the target is said apart.
func TestOnceCountsTheConfiguredTargets(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	main, canary := startBackend(t, "main"), startBackend(t, "canary")
	c.Register(t, "web", "web-main", "127.0.0.1", main.Port, nil, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.conf")
	conf := func(name, extra string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(fmt.Sprintf(`file: %s
targets: [{url: %q}]
upstreams:
  allow_addresses: [127.0.0.0/8]
%s`, file, ng.APIURL(), extra)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	plain := conf("plain.yml", "")
	code, out, errs := runCLI(t, nil, "once", "-config", plain, "-consul-addr", c.HTTPAddr())
	if want := "synced 1 upstream to 1 target; file " + file + "\n"; code != 0 || out != want {
		t.Errorf("once with one target: exit %d\n%q\nwant\n%q\n%s", code, out, want, errs)
	}

	c.Register(t, "web", "web-canary", "127.0.0.1", canary.Port, []string{"gray=canary"}, nil)
	split := conf("split.yml", "  splits: {web: {to: web_canary, percent: 10}}\n")
	code, out, errs = runCLI(t, nil, "once", "-config", split, "-consul-addr", c.HTTPAddr())
	// once acknowledges only when the target holds the rule (the splits
	// sink's one-shot mode), so it always says it pushed it.
	pushed := "synced 2 upstreams to 1 target, traffic splits to 1; file " + file + "\n"
	if code != 0 || out != pushed {
		t.Errorf("once with one target and a split: exit %d\n%q\nwant\n%q\n%s", code, out, pushed, errs)
	}
	t.Logf("once with a split rule printed %q", out)
}
