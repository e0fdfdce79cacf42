package cli

import (
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
)

// TestSyncedCountsDyupsTargetsOnly: the splits sink pushes to the dyups
// targets and is not one of its own, so one configured target reads "to 1
// target"; split rules show apart: the targets that took them, or why none
// did.
func TestSyncedCountsDyupsTargetsOnly(t *testing.T) {
	cfg := config.Default()
	cfg.File = "/f"
	dy := engine.SinkStatus{Kind: "dyups", Name: "unix:/run/sk.sock"}
	noSplits := engine.SinkStatus{Kind: "splits", Section: "splits", Detail: splits.Status{Targets: []splits.TargetStatus{{URL: "unix:/run/sk.sock", Note: "no split API"}}}}
	noRules := engine.SinkStatus{Kind: "splits", Section: "splits", Detail: splits.Status{Targets: []splits.TargetStatus{{URL: "unix:/run/sk.sock", Pushed: true, InSync: true}}}}
	pushed := engine.SinkStatus{Kind: "splits", Section: "splits", Detail: splits.Status{
		Rules:   []splits.RuleStatus{{Upstream: "web", To: "web_canary", Percent: 10, From: "config"}},
		Targets: []splits.TargetStatus{{URL: "unix:/run/sk.sock", Pushed: true, InSync: true}, {URL: "http://10.0.0.1:8081", Note: "no split API"}},
	}}
	notPushed := engine.SinkStatus{Kind: "splits", Section: "splits", Detail: splits.Status{
		Rules:   []splits.RuleStatus{{Upstream: "web", To: "web_canary", Percent: 10, From: "config"}},
		Targets: []splits.TargetStatus{{URL: "unix:/run/sk.sock", Note: "no split API here"}},
	}}
	for _, c := range []struct {
		sinks []engine.SinkStatus
		want  string
	}{
		{[]engine.SinkStatus{dy, noSplits}, "synced 1 upstream to 1 target; file /f"},
		{[]engine.SinkStatus{dy, noRules}, "synced 1 upstream to 1 target; file /f"},
		{[]engine.SinkStatus{dy, notPushed}, "synced 1 upstream to 1 target, traffic splits not pushed (no split API here); file /f"},
		{[]engine.SinkStatus{dy, dy, pushed}, "synced 1 upstream to 2 targets, traffic splits to 1; file /f"},
	} {
		if got := synced(&cfg, 1, c.sinks); got != c.want {
			t.Errorf("synced with %d sinks: %q, want %q", len(c.sinks), got, c.want)
		}
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 upstreams", 1: "1 upstream", 2: "2 upstreams"} {
		if got := plural(n, "upstream"); got != want {
			t.Errorf("plural(%d): %q, want %q", n, got, want)
		}
	}
}
