package bench

import (
	"cmp"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// The opt-in scenarios of issue 18: never in the default set (CI's -quick
// run keeps its size), run once each when -scenarios names them (or -soak).
const (
	ScenarioFanout = "fanout" // one daemon, many nginx targets, one of them hung
	ScenarioFleet  = "fleet"  // many daemons against one Consul server
	ScenarioSoak   = "soak"   // rolling restarts under ≥ 500,000 requests, ours-lua
)

// ExtraScenarios are accepted by -scenarios but not run by default.
var ExtraScenarios = []string{ScenarioFanout, ScenarioFleet, ScenarioSoak}

// The targets of issue 18 for the opt-in scenarios.
const (
	targetFanoutP99Ms  = 50
	targetSoakRequests = 500000
)

// FanoutResult is the fan-out scenario: one daemon, Targets nginx
// processes (1 worker each), Changes joins timed per phase.
type FanoutResult struct {
	Targets int         `json:"targets"`
	Changes int         `json:"changes"` // per phase
	Normal  FanoutPhase `json:"normal"`
	// Hung is the same changes with target HungIndex stopped (SIGSTOP of
	// its master and worker): its API accepts connections (the kernel
	// does) and never answers.
	Hung      *FanoutPhase `json:"hung,omitempty"`
	HungIndex int          `json:"hung_index"`
	// The daemon's log lines naming the hung target during the run, and
	// the first of them: evidence that it met the hang.
	HungLogLines int    `json:"hung_log_lines,omitempty"`
	HungLogFirst string `json:"hung_log_first,omitempty"`
	// HungAt is when the target was stopped.
	HungAt time.Time `json:"hung_at"`
}

// Slowest returns the n slowest changes of the phase (write → last
// target), slowest first, as "+S s: M ms" with S the seconds since from.
func (p *FanoutPhase) Slowest(n int, from time.Time) []string {
	type c struct {
		at   time.Time
		last float64
	}
	var cs []c
	for _, s := range p.Samples {
		if hi, _, _, ok := lastFirst(s.PerTargetMs, -1); ok && !s.TimedOut {
			cs = append(cs, c{s.At, hi})
		}
	}
	slices.SortStableFunc(cs, func(a, b c) int { return cmp.Compare(b.last, a.last) })
	var out []string
	for _, x := range cs[:min(n, len(cs))] {
		out = append(out, fmt.Sprintf("+%.1f s: %.1f ms", x.at.Sub(from).Seconds(), x.last))
	}
	return out
}

// FanoutPhase holds one phase's changes and their summaries.
type FanoutPhase struct {
	Samples []FanoutSample `json:"samples"`
	// Last: write → the last probed target routing the new instance.
	Last Summary `json:"last"`
	// LastOthers is Last over every target but the one hung in the other
	// phase: the figure the hung phase is compared with.
	LastOthers Summary `json:"last_others"`
	// Spread: last − first target, per change.
	Spread Summary `json:"spread"`
	// Applied and AppliedSpread are the same from nginx's side: when the
	// API's POST of the new set ended (its access log), probes aside.
	Applied       Summary `json:"applied"`
	AppliedSpread Summary `json:"applied_spread"`
	Timeouts      int     `json:"timeouts"` // changes some probed target never showed
	Seconds       float64 `json:"seconds"`  // the phase's wall-clock time
}

// FanoutSample is one change: per target, write → first probe the new
// instance answered, in ms; -1 where the target was not probed (the hung
// one) or never answered within the timeout.
type FanoutSample struct {
	PerTargetMs []float64 `json:"per_target_ms"`
	// AppliedMs: write → the end of the target's POST of the new set, from
	// its API access log; -1 where none was logged.
	AppliedMs []float64 `json:"applied_ms,omitempty"`
	TimedOut  bool      `json:"timed_out,omitempty"`
	// At is when the change was written (to set slow changes beside the
	// daemon's log).
	At time.Time `json:"at"`
}

// Summarize fills Last, LastOthers and Spread from the samples; a change
// that timed out counts in Timeouts and not in the percentiles. exclude is
// the target left out of LastOthers (-1: none).
func (p *FanoutPhase) Summarize(exclude int) {
	var last, others, spread, applied, appliedSpread []float64
	p.Timeouts = 0
	for _, s := range p.Samples {
		if s.TimedOut {
			p.Timeouts++
			continue
		}
		if hi, hiOthers, lo, ok := lastFirst(s.PerTargetMs, exclude); ok {
			last, others, spread = append(last, hi), append(others, hiOthers), append(spread, hi-lo)
		}
		if hi, _, lo, ok := lastFirst(s.AppliedMs, exclude); ok {
			applied, appliedSpread = append(applied, hi), append(appliedSpread, hi-lo)
		}
	}
	p.Last, p.LastOthers, p.Spread = Summarize(last), Summarize(others), Summarize(spread)
	p.Applied, p.AppliedSpread = Summarize(applied), Summarize(appliedSpread)
}

// lastFirst returns the largest of the per-target values (and the largest
// but for target exclude) and the smallest, leaving out the negative ones
// (not measured); ok is false when none is left.
func lastFirst(v []float64, exclude int) (hi, hiOthers, lo float64, ok bool) {
	n := 0
	for i, x := range v {
		if x < 0 {
			continue
		}
		if n == 0 || x < lo {
			lo = x
		}
		hi = max(hi, x)
		if i != exclude {
			hiOthers = max(hiOthers, x)
		}
		n++
	}
	return hi, hiOthers, lo, n > 0
}

// HungDelaysNone says whether the hung phase kept the other targets'
// propagation: no change timed out, and its p99 stayed within the issue's
// 50 ms or, when the phase without the hung target was already slower, within
// targetP99Ratio of that phase's p99 over the same targets.
func (f *FanoutResult) HungDelaysNone() bool {
	if f.Hung == nil || f.Hung.Last.N == 0 {
		return false
	}
	limit := max(float64(targetFanoutP99Ms), targetP99Ratio*f.Normal.LastOthers.P99)
	return f.Hung.Timeouts == 0 && f.Hung.Last.P99 <= limit
}

// FleetResult is the fleet scenario: fleets of daemons against one Consul
// server holding Services × Instances instances.
type FleetResult struct {
	Services  int `json:"services"`
	Instances int `json:"instances"`
	// ChecksAnswerBytes is the size of /v1/health/state/any at this
	// catalog: what every daemon read on each change before issue 18.
	ChecksAnswerBytes int64          `json:"checks_answer_bytes"`
	Runs              []FleetRun     `json:"runs"`
	Baseline          *FleetBaseline `json:"baseline,omitempty"` // with -fleet-baseline
}

// FleetBaseline is the same fleet sizes run with another daemon binary, in
// the same order, for the ratio of each figure to it.
type FleetBaseline struct {
	Daemon string     `json:"daemon"` // its version and path
	Runs   []FleetRun `json:"runs"`
}

// baselineRuns is the baseline's runs, none without one.
func (f *FleetResult) baselineRuns() []FleetRun {
	if f.Baseline == nil {
		return nil
	}
	return f.Baseline.Runs
}

// BaselineOf returns the baseline run with the fleet size of run.
func (f *FleetResult) BaselineOf(run FleetRun) (FleetRun, bool) {
	if f.Baseline == nil {
		return FleetRun{}, false
	}
	for _, b := range f.Baseline.Runs {
		if b.Daemons == run.Daemons {
			return b, true
		}
	}
	return FleetRun{}, false
}

// FleetRun is one fleet size.
type FleetRun struct {
	Daemons    int     `json:"daemons"`
	ColdSyncMs float64 `json:"cold_sync_ms"` // start → every daemon has applied the catalog
	MaxConns   int     `json:"max_conns"`    // connections open through the counting proxy, at most
	Changes    int     `json:"changes"`
	// ChangeLatency: Consul write → the last daemon applied it (its
	// reload command ran).
	ChangeLatency Summary `json:"change_latency"`
	// Over the changes (write of the first → the last applied + settle).
	ChangesSeconds  float64  `json:"changes_s"`
	BytesServed     int64    `json:"bytes_served"`      // Consul → daemons
	BytesRequested  int64    `json:"bytes_requested"`   // daemons → Consul
	ConsulCPUMs     float64  `json:"consul_cpu_ms"`     // Consul's utime+stime
	IdleBytesPerS   float64  `json:"idle_bytes_per_s"`  // Consul → daemons with no change
	IdleCPUMsPerS   float64  `json:"idle_cpu_ms_per_s"` // Consul's CPU with no change
	BytesPerChange  float64  `json:"bytes_per_change"`  // net of the idle rate
	CPUPerChangeMs  float64  `json:"cpu_per_change_ms"` // net of the idle rate
	CPURawPerChange float64  `json:"cpu_per_change_raw_ms"`
	ConsulRequests  int64    `json:"consul_requests"`            // HTTP requests through the proxy over the changes
	RequestsByPath  []string `json:"requests_by_path,omitempty"` // the most frequent, "path (×n)"
}

// BytesRatio is what a change made Consul serve, per daemon, against the
// whole checks answer each daemon read before issue 18; 0 when unknown.
func (f *FleetResult) BytesRatio(run FleetRun) float64 {
	if f.ChecksAnswerBytes == 0 || run.Daemons == 0 {
		return 0
	}
	return run.BytesPerChange / float64(run.Daemons) / float64(f.ChecksAnswerBytes)
}

// SoakResult is the rolling-restart soak of ours-lua.
type SoakResult struct {
	Rate     int     `json:"rate"`
	Seconds  float64 `json:"seconds"` // of restarts asked for
	Restarts int     `json:"restarts"`
	Run      LoadRun `json:"run"`
}

// Failed is every failed request of the soak, warm-up and baseline
// included, and every request sent.
func (s *SoakResult) Failed() (failed, sent int) {
	for _, st := range []LoadStats{s.Run.Warmup, s.Run.Baseline, s.Run.During} {
		failed, sent = failed+st.Failed, sent+st.Requests
	}
	return failed, sent
}

// extraTargets checks the issue-18 targets of the opt-in scenarios that
// ran.
func extraTargets(r *Results, add func(scen, name, goal, value string, met bool)) {
	if f := r.Fanout; f != nil && f.Normal.Last.N > 0 {
		add(ScenarioFanout, fmt.Sprintf("fan-out p99, write → last of %d targets", f.Targets), fmt.Sprintf("≤ %d ms", targetFanoutP99Ms),
			fmt.Sprintf("%.1f ms (p50 %.1f, %d timeouts)", f.Normal.Last.P99, f.Normal.Last.P50, f.Normal.Timeouts),
			f.Normal.Last.P99 <= targetFanoutP99Ms && f.Normal.Timeouts == 0)
		if f.Hung != nil {
			add(ScenarioFanout, "fan-out: a hung target delays none of the others",
				fmt.Sprintf("p99 ≤ max(%d ms, %.1f× without it), no timeout", targetFanoutP99Ms, targetP99Ratio),
				fmt.Sprintf("%.1f ms with, %.1f ms without (%d timeouts)", f.Hung.Last.P99, f.Normal.LastOthers.P99, f.Hung.Timeouts),
				f.HungDelaysNone())
		}
	}
	if s := r.Soak; s != nil {
		failed, sent := s.Failed()
		add(ScenarioSoak, "soak: failed requests", "0", fmt.Sprintf("%d of %d", failed, sent), failed == 0 && sent > 0)
		add(ScenarioSoak, "soak: requests during restarts", fmt.Sprintf("≥ %d", targetSoakRequests),
			strconv.Itoa(s.Run.During.Requests), s.Run.During.Requests >= targetSoakRequests)
	}
}

// ParseInts parses a comma-separated list of positive integers ("1,10,50").
func ParseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// countPaths lists the most frequent request paths, "path (×n)".
func countPaths(paths map[string]int, n int) []string {
	return topErrors(paths, n)
}

// extraFlagValues are the opt-in scenarios' flags that need more than a
// plain assignment into Params.
type extraFlagValues struct {
	soak         bool
	soakDuration time.Duration
	fleetDaemons string
	fleetBase    string
	fanoutProbe  time.Duration
}

// extraFlags defines the opt-in scenarios' flags into fs and p.
func extraFlags(fs *flag.FlagSet, p *Params) *extraFlagValues {
	x := &extraFlagValues{}
	fs.BoolVar(&x.soak, "soak", false, "run the rolling-restart soak (ours-lua): alone, or after the scenarios -scenarios names; same as adding soak to -scenarios")
	fs.DurationVar(&x.soakDuration, "soak-duration", 510*time.Second, "soak: rolling restarts for this long (510s at 1000 req/s: 510,000 requests)")
	fs.IntVar(&p.SoakRate, "soak-rate", 1000, "soak: offered requests/s")
	fs.IntVar(&p.FanoutTargets, "fanout-targets", 20, "fanout (opt-in): nginx processes (1 worker each) the one daemon pushes to")
	fs.IntVar(&p.FanoutChanges, "fanout-changes", 100, "fanout: joins timed per phase (without, then with a hung target)")
	fs.DurationVar(&x.fanoutProbe, "fanout-probe-every", 5*time.Millisecond, "fanout: pause between two probes of one target (20 targets probed every 1ms saturate 2 cores)")
	fs.StringVar(&x.fleetDaemons, "fleet-daemons", "1,10,50", "fleet (opt-in): fleet sizes, daemons against one Consul server")
	fs.IntVar(&p.FleetServices, "fleet-services", 1000, "fleet: services in Consul, each with -instances instances")
	fs.IntVar(&p.FleetChanges, "fleet-changes", 20, "fleet: single-instance changes measured per fleet size")
	fs.StringVar(&x.fleetBase, "fleet-baseline", "", "fleet: another daemon binary (e.g. built from the last release) run at every fleet size too, for the ratio to it")
	return x
}

// apply puts the parsed values into p; -soak adds the soak scenario (alone
// when -scenarios was not given).
func (x *extraFlagValues) apply(fs *flag.FlagSet, o *options, scenarios *string) error {
	p := &o.p
	o.fleetBaseline = x.fleetBase
	p.SoakSeconds = x.soakDuration.Seconds()
	p.FanoutProbeMs = ms(x.fanoutProbe)
	d, err := ParseInts(x.fleetDaemons)
	if err != nil {
		return fmt.Errorf("-fleet-daemons: %w", err)
	}
	p.FleetDaemons = d
	if p.FanoutTargets < 1 || p.FanoutChanges < 1 || p.FleetServices < 1 || p.FleetChanges < 1 || p.SoakRate < 1 {
		return fmt.Errorf("-fanout-targets, -fanout-changes, -fleet-services, -fleet-changes and -soak-rate must be at least 1")
	}
	if x.soak {
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == "scenarios" })
		switch {
		case !given:
			*scenarios = ScenarioSoak
		case !slices.Contains(splitList(*scenarios), ScenarioSoak):
			*scenarios += "," + ScenarioSoak
		}
	}
	return nil
}
