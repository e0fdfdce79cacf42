package bench

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleResults is a small but complete result set.
func sampleResults() *Results {
	r := &Results{
		Date:      time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC),
		DurationS: 312,
		Command:   "scripts/bench.sh -quick",
		Params: Params{Quick: true, Runs: 1, Modes: AllModes, Scenarios: AllScenarios, Changes: 4, Cycles: 5,
			Rate: 300, PostEvery: 5, Services: 100, Instances: 10, ScaleChanges: 20, ChurnSeconds: 15,
			ChurnPerSecond: 2, BaselineSeconds: 3, CheckInterval: 1, Probers: 3},
		Machine:  Machine{Cores: 2, CPUModel: "AMD EPYC", Kernel: "6.1", MemoryMB: 24000, LoadAvgStart: "3.0 2.0 1.0", LoadAvgEnd: "2.5 2.0 1.0", Shared: true},
		Versions: Versions{Go: "go1.26.8", Nginx: "nginx/1.22.1", Consul: "Consul v1.20.1", ConsulTemplate: "consul-template v0.41.1", SwallowKeeper: "dev"},
		Propagation: map[string]*PropagationMode{
			ModeLua: {Samples: []PropSample{{1, "register", 8, false}, {1, "fail", 12, false}, {1, "recover", 9, false}, {1, "deregister", 30, false}}, Probes: 1000},
			ModeConsulTemplate: {Samples: []PropSample{{1, "register", 200, false}, {1, "fail", 300, false}, {1, "recover", 250, false},
				{1, "deregister", 15000, true}}, Probes: 900, ProbeErrors: 2},
		},
		Rolling: map[string]*LoadMode{
			ModeLua: {Runs: []LoadRun{{Run: 1, Changes: 30}}, Baseline: LoadStats{Requests: 900, Latency: Summary{P50: 1, P99: 3}},
				During: LoadStats{Requests: 5000, Latency: Summary{P50: 1.2, P99: 6}}},
			ModeReload: {Runs: []LoadRun{{Run: 1, Changes: 30}}, Baseline: LoadStats{Requests: 900, Latency: Summary{P99: 3}},
				During: LoadStats{Requests: 5000, Failed: 3, FailedPOST: 3, Errors: []string{"POST: EOF (×3)"}, Latency: Summary{P99: 12}}},
		},
		Crash: map[string]*CrashMode{
			ModeLua: {Runs: []CrashRun{{Run: 1, Requests: 1200, GETs: 960, POSTs: 240, FailedPOST: 1, Removed: true, RemovedMs: 900, CriticalMs: 850}}},
		},
		Scale: &ScaleResult{Runs: []ScaleRun{{Run: 1, Services: 100, Instances: 10, Synced: true, ColdSyncMs: 400,
			MaxConsulConns: 3, RSSMB: 30, PeakRSSMB: 33, Changes: 20, CPUPerChangeMs: 35, CPUPerChangeRawMs: 36, Pushes: 20, PushesPerChange: 1}}},
		Churn: map[string]*LoadMode{
			ModeLua: {Runs: []LoadRun{{Run: 1, Changes: 30, Series: []Bucket{{T: 0, N: 300, P50: 1, P99: 3, Max: 4}, {T: 1, N: 300, P50: 1, P99: 5, Max: 9, Errors: 1}},
				PhaseStartS: 0.5, PhaseEndS: 1.5}},
				Baseline: LoadStats{Requests: 900, Latency: Summary{P50: 1, P99: 3}}, During: LoadStats{Requests: 4500, OKPerSec: 300, Latency: Summary{P50: 1, P99: 5}}},
		},
	}
	for _, p := range r.Propagation {
		p.Summarize()
	}
	r.Targets = EvaluateTargets(r)
	return r
}

func TestPropagationSummaryLeavesTimeoutsOut(t *testing.T) {
	p := sampleResults().Propagation[ModeConsulTemplate]
	if p.Timeouts != 1 || p.All.N != 3 || p.All.Max != 300 {
		t.Errorf("summary %+v, %d timeouts; want 3 samples up to 300 ms and 1 timeout", p.All, p.Timeouts)
	}
	if p.ByKind["fail"].P50 != 300 {
		t.Errorf("by kind: %+v", p.ByKind)
	}
	if _, ok := p.ByKind["deregister"]; ok {
		t.Error("a kind whose only sample timed out has no summary")
	}
}

func TestEvaluateTargets(t *testing.T) {
	got := map[string]bool{}
	for _, tg := range sampleResults().Targets {
		got[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"propagation p50":                           true,  // 9 ms
		"propagation p99":                           true,  // 30 ms
		"rolling restart: failed requests":          true,  // ours-lua had none; ours-reload's do not count
		"crash: failed GETs":                        true,  // one POST failed, no GET
		"crash: out of nginx":                       true,  // 900 ms ≤ 1.3 s
		"cold sync of 100 × 10":                     true,  // 0.4 s
		"connections to Consul":                     true,  // 3
		"daemon RSS":                                true,  // 30 MB
		"CPU per single-instance change":            false, // 35 ms
		"upstreams pushed per change":               true,  // 1.00
		"idle CPU":                                  true,  // below 10 ms/s
		"rolling restart: requests during restarts": false, // far below 500,000
		"rolling restart: p99 vs quiet baseline":    false,
		"churn: p99 vs quiet baseline":              false, // 3.0 → 5.0 ms
		"churn: failed requests":                    true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("targets met:\n got %v\nwant %v", got, want)
	}
}

func TestEvaluateTargetsFailsOnWhatWasNotMet(t *testing.T) {
	r := sampleResults()
	r.Propagation[ModeLua].Samples = append(r.Propagation[ModeLua].Samples, PropSample{1, "fail", 15000, true})
	r.Propagation[ModeLua].Summarize()
	r.Crash[ModeLua].Runs[0].FailedGET = 2
	r.Crash[ModeLua].Runs = append(r.Crash[ModeLua].Runs, CrashRun{Run: 2, Removed: false, RemovedMs: 3900})
	r.Scale.Runs = append(r.Scale.Runs, ScaleRun{Run: 2, Synced: true, ColdSyncMs: 6000, MaxConsulConns: 4, RSSMB: 61, PushesPerChange: 2})
	met := map[string]bool{}
	for _, tg := range EvaluateTargets(r) {
		met[tg.Name] = tg.Met
	}
	for _, name := range []string{"propagation p50", "propagation p99", "crash: failed GETs", "crash: out of nginx",
		"daemon RSS", "upstreams pushed per change"} {
		if met[name] {
			t.Errorf("%s: met, want not met", name)
		}
	}
	if met[`cold sync of 100 × 10`] {
		t.Error("the slowest cold sync (6 s) counts")
	}
}

// A scale run is judged by issue 18's targets for its catalog size: those
// of the smallest size the issue names at or above it.
func TestScaleTargetsFollowTheCatalogSize(t *testing.T) {
	// The same figures meet the targets at 10,000 services, and miss every
	// size-bound one at 1,000.
	run := ScaleRun{Run: 1, Instances: 10, Synced: true, ColdSyncMs: 17000, MaxConsulConns: 12, RSSMB: 150,
		CPUPerChangeMs: 4, IdleCPUMsPerS: 5, PushesPerChange: 1, ChangeLatency: Summary{P50: 15, P99: 40}}
	for _, tc := range []struct {
		services int
		goals    map[string]string // target name → goal
		met      bool              // every size-bound target
	}{
		{100, map[string]string{"cold sync of 100 × 10": "≤ 2s (the target at 1000 × 10)", "CPU per single-instance change": "≤ 2 ms (the target at 1000 × 10)"}, false},
		{1000, map[string]string{"cold sync of 1000 × 10": "≤ 2s", "daemon RSS": "≤ 60 MB", "single-instance change → nginx, p50 / p99": "≤ 10 / 30 ms"}, false},
		{5000, map[string]string{"cold sync of 5000 × 10": "≤ 20s (the target at 10000 × 10)", "daemon RSS": "≤ 200 MB (the target at 10000 × 10)"}, true},
		{10000, map[string]string{"cold sync of 10000 × 10": "≤ 20s", "CPU per single-instance change": "≤ 5 ms", "single-instance change → nginx, p50 / p99": "≤ 20 / 50 ms"}, true},
		{20000, map[string]string{"daemon RSS": "≤ 200 MB (the target at 10000 × 10)"}, true},
	} {
		r := &Results{Scale: &ScaleResult{Runs: []ScaleRun{run}}}
		r.Scale.Runs[0].Services = tc.services
		got := map[string]Target{}
		for _, tg := range EvaluateTargets(r) {
			got[tg.Name] = tg
		}
		for name, goal := range tc.goals {
			if got[name].Goal != goal {
				t.Errorf("%d services, %s: goal %q, want %q", tc.services, name, got[name].Goal, goal)
			}
		}
		for _, name := range []string{fmt.Sprintf("cold sync of %d × 10", tc.services), "daemon RSS", "CPU per single-instance change", "single-instance change → nginx, p50 / p99"} {
			if tg, ok := got[name]; !ok || tg.Met != tc.met {
				t.Errorf("%d services, %s: %+v, want met %v", tc.services, name, tg, tc.met)
			}
		}
		if !got["connections to Consul"].Met || !got["idle CPU"].Met {
			t.Errorf("%d services: the size-free targets are met by these figures: %+v %+v", tc.services, got["connections to Consul"], got["idle CPU"])
		}
	}
}

func TestEvaluateTargetsNeedsOursLua(t *testing.T) {
	r := sampleResults()
	delete(r.Propagation, ModeLua)
	delete(r.Rolling, ModeLua)
	delete(r.Crash, ModeLua)
	delete(r.Churn, ModeLua)
	r.Scale = nil
	if tg := EvaluateTargets(r); len(tg) != 0 {
		t.Errorf("targets without ours-lua figures: %+v", tg)
	}
}

func TestResultsJSONRoundTrip(t *testing.T) {
	r := sampleResults()
	path := filepath.Join(t.TempDir(), "results.json")
	if err := WriteJSON(path, r); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, back) {
		t.Errorf("round trip changed the results:\n%+v\n%+v", r, back)
	}
	if RenderMarkdown(r, "bench") != RenderMarkdown(back, "bench") {
		t.Error("the report must come from results.json alone")
	}
}

func TestReadJSONNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	if err := WriteJSON(path, sampleResults()); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(path + ".missing"); err == nil {
		t.Error("a missing file must be an error")
	}
	if err := writeFile(path, "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v should name %s", err, path)
	}
}

func TestScaleWorst(t *testing.T) {
	s := ScaleResult{Runs: []ScaleRun{
		{Synced: true, ColdSyncMs: 100, MaxConsulConns: 3, RSSMB: 20, PushesPerChange: 1},
		{Synced: true, ColdSyncMs: 300, MaxConsulConns: 2, RSSMB: 25, PushesPerChange: 0.9},
		{Synced: true, ColdSyncMs: 200, MaxConsulConns: 4, RSSMB: 22, PushesPerChange: 1.05},
	}}
	w := s.Worst()
	if w.ColdSyncMs != 300 || w.MaxConsulConns != 4 || w.RSSMB != 25 || w.PushesPerChange != 0.9 || !w.Synced {
		t.Errorf("worst = %+v", w)
	}
}

func TestFixedLoadSecondsAndRunTimeTarget(t *testing.T) {
	p := Params{Runs: 3, Modes: AllModes, Scenarios: AllScenarios, ChurnSeconds: 60, BaselineSeconds: 5}
	if got := p.FixedLoadSeconds(); got != 3*3*(60+5+5+5) {
		t.Fatalf("FixedLoadSeconds = %v, want 675", got)
	}
	p.WarmupSeconds = 1 // before rolling and churn, not crash
	if got := p.FixedLoadSeconds(); got != 3*3*(60+5+5+5+2) {
		t.Fatalf("FixedLoadSeconds with warm-up = %v, want 693", got)
	}
	p.Scenarios = []string{ScenarioScale, ScenarioPropagation}
	if got := p.FixedLoadSeconds(); got != 0 {
		t.Fatalf("scale and propagation fix no load time, got %v", got)
	}
	for _, tc := range []struct {
		quick bool
		secs  float64
		want  string // "" for no target
	}{{false, 1602, "❌"}, {false, 840, "✅"}, {true, 200, ""}} {
		r := &Results{Params: Params{Quick: tc.quick}, DurationS: tc.secs}
		var got *Target
		for _, tg := range EvaluateTargets(r) {
			if tg.Name == "bench run time" {
				got = &tg
			}
		}
		switch {
		case tc.want == "" && got != nil:
			t.Errorf("quick run got a run-time target: %+v", got)
		case tc.want != "" && (got == nil || strings.HasPrefix(mark(got.Met), tc.want) == false):
			t.Errorf("%v s: target %+v, want %s", tc.secs, got, tc.want)
		}
	}
}

// A request that failed in the warm-up before the baseline is left out of
// the baseline's latencies, not out of the failed requests.
func TestRollingFailuresCountTheWarmup(t *testing.T) {
	r := sampleResults()
	lua := r.Rolling[ModeLua]
	lua.Warmup = LoadStats{Requests: 300, Failed: 1, FailedGET: 1}
	var got *Target
	for _, tg := range EvaluateTargets(r) {
		if tg.Name == "rolling restart: failed requests" {
			got = &tg
		}
	}
	if got == nil || got.Met || got.Value != "1 of 6200" {
		t.Fatalf("rolling failed requests with one warm-up failure: %+v, want 1 of 6200, not met", got)
	}
}
