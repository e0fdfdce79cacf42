package bench

import (
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// -quick shrinks the sizes the command line does not give, and leaves the
// ones it gives alone.
func TestParseFlagsQuickKeepsWhatIsGiven(t *testing.T) {
	o, ok := parseFlags([]string{"-quick", "-rate", "500", "-repo", "/r"}, io.Discard)
	if !ok {
		t.Fatal("parseFlags refused valid flags")
	}
	p := o.p
	if p.Runs != 1 || p.Changes != 20 || p.Cycles != 5 || p.Services != 100 || p.ScaleChanges != 20 || p.NginxUpdates != 5000 || p.ChurnSeconds != 15 || p.BaselineSeconds != 3 {
		t.Errorf("quick sizes not applied: %+v", p)
	}
	if p.Rate != 500 {
		t.Errorf("rate = %d, want the 500 given", p.Rate)
	}
	if !slices.Equal(p.Modes, AllModes) || !slices.Equal(p.Scenarios, AllScenarios) {
		t.Errorf("modes %v, scenarios %v: want all", p.Modes, p.Scenarios)
	}
	if o.jsonPath != filepath.Join("/r", "docs", "bench", "results.json") || o.mdPath != filepath.Join("/r", "docs", "BENCHMARKS.md") {
		t.Errorf("default paths %q, %q", o.jsonPath, o.mdPath)
	}
	if o.command != "swallowkeeper-bench -quick -rate 500 -repo /r" {
		t.Errorf("command = %q", o.command)
	}

	full, ok := parseFlags([]string{"-modes", " ours-lua, ours-reload ", "-churn", "1m"}, io.Discard)
	if !ok || full.p.Runs != 3 || full.p.Changes != 34 || full.p.ChurnSeconds != 60 || !slices.Equal(full.p.Modes, []string{ModeLua, ModeReload}) {
		t.Errorf("full run: ok %v, %+v", ok, full.p)
	}
}

func TestParseFlagsRefusesUnknownNames(t *testing.T) {
	for _, args := range [][]string{{"-modes", "ours-lua,nope"}, {"-scenarios", "propagation,nope"}, {"-no-such-flag"},
		{"-keep", "nope", "-md", "/tmp/x.md"}, // a value given to a boolean flag: -md would be ignored
		{"-store", "nope"}} {
		var stderr strings.Builder
		if _, ok := parseFlags(args, &stderr); ok {
			t.Errorf("%v: accepted", args)
		}
		if !strings.Contains(stderr.String(), "nope") && !strings.Contains(stderr.String(), "no-such-flag") {
			t.Errorf("%v: stderr %q does not name the culprit", args, stderr.String())
		}
	}
}
