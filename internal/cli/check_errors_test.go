package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckReportsEveryProblemOfTheFile: `check` on a file with a type
// error, an unknown key, a target without scheme and an out-of-range value
// prints all four, each with file:line and key, in the file's order, and
// nothing of Go's own wording (issue 16.7).
func TestCheckReportsEveryProblemOfTheFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sk.yml")
	body := fmt.Sprintf("file: %s/u.conf\nconsul:\n  wait_time: 5\n  tokn: x\ntargets: [\"127.0.0.1:8081\"]\nupstreams:\n  weight: 0\n", dir)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, nil, "check", "-config", cfg)
	want := []string{
		cfg + `:3: consul.wait_time: "5" is not a duration`,
		cfg + ":4: consul.tokn: unknown key",
		cfg + `:5: targets[0].url: "127.0.0.1:8081" has no scheme: write http://127.0.0.1:8081`,
		cfg + ":7: upstreams.weight: 0 out of range",
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	last := -1
	for _, w := range want {
		i := strings.Index(errs, w)
		if i < 0 {
			t.Errorf("check output lacks %q:\n%s", w, errs)
			continue
		}
		if i < last {
			t.Errorf("%q is out of the file's order:\n%s", w, errs)
		}
		last = i
	}
	for _, goWords := range []string{"cannot unmarshal", "not found in type", "first path segment"} {
		if strings.Contains(errs, goWords) {
			t.Errorf("check output speaks Go (%q):\n%s", goWords, errs)
		}
	}
}
