package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"
)

// The modes compared.
const (
	ModeLua            = "ours-lua"        // daemon + nginx with the Lua dyups module
	ModeReload         = "ours-reload"     // daemon in reload mode (nginx -t, nginx -s reload)
	ModeConsulTemplate = "consul-template" // consul-template renders the file, runs nginx -s reload
)

// AllModes in report order.
var AllModes = []string{ModeLua, ModeReload, ModeConsulTemplate}

// The scenarios.
const (
	ScenarioPropagation = "propagation"
	ScenarioRolling     = "rolling"
	ScenarioCrash       = "crash"
	ScenarioScale       = "scale"
	ScenarioChurn       = "churn"
)

// AllScenarios in run order.
var AllScenarios = []string{ScenarioPropagation, ScenarioRolling, ScenarioCrash, ScenarioScale, ScenarioChurn}

// Results is everything one run of the command measured; it is written to
// docs/bench/results.json and BENCHMARKS.md is rendered from it alone.
type Results struct {
	Date      time.Time `json:"date"`
	DurationS float64   `json:"duration_s"`
	Command   string    `json:"command"`
	Params    Params    `json:"params"`
	Machine   Machine   `json:"machine"`
	Versions  Versions  `json:"versions"`

	Propagation map[string]*PropagationMode `json:"propagation,omitempty"`
	Rolling     map[string]*LoadMode        `json:"rolling,omitempty"`
	Crash       map[string]*CrashMode       `json:"crash,omitempty"`
	Scale       *ScaleResult                `json:"scale,omitempty"`
	Churn       map[string]*LoadMode        `json:"churn,omitempty"`
	// The opt-in scenarios of issue 18 (extra_results.go).
	Fanout *FanoutResult `json:"fanout,omitempty"`
	Fleet  *FleetResult  `json:"fleet,omitempty"`
	Soak   *SoakResult   `json:"soak,omitempty"`

	Targets []Target `json:"targets"`
	Errors  []string `json:"errors,omitempty"` // scenario runs that failed
}

// Params are the knobs of the run.
type Params struct {
	Quick           bool     `json:"quick"`
	Runs            int      `json:"runs"`
	Modes           []string `json:"modes"`
	Scenarios       []string `json:"scenarios"`
	Changes         int      `json:"changes"`          // propagation changes per run and mode
	Cycles          int      `json:"cycles"`           // rolling restart cycles (each restarts the 3 backends)
	Rate            int      `json:"rate"`             // offered requests/s for rolling, crash, churn
	PostEvery       int      `json:"post_every"`       // every n-th request is a POST with a body
	Services        int      `json:"services"`         // scale: services
	Instances       int      `json:"instances"`        // scale: instances per service
	ScaleChanges    int      `json:"scale_changes"`    // scale: single-instance changes measured
	NginxUpdates    int      `json:"nginx_updates"`    // scale: updates POSTed to nginx to watch its memory
	ChurnSeconds    float64  `json:"churn_s"`          // churn duration
	ChurnPerSecond  float64  `json:"churn_per_s"`      // changes per second during churn
	BaselineSeconds float64  `json:"baseline_s"`       // quiet load before rolling, crash and churn
	WarmupSeconds   float64  `json:"warmup_s"`         // load before the baseline of rolling and churn, not counted
	CheckInterval   float64  `json:"check_interval_s"` // Consul HTTP check interval (crash, rolling)
	Probers         int      `json:"probers"`          // propagation: concurrent fresh-connection probers
	// The opt-in scenarios (fanout, fleet, soak).
	FanoutTargets int     `json:"fanout_targets,omitempty"`  // nginx processes, 1 worker each
	FanoutChanges int     `json:"fanout_changes,omitempty"`  // joins timed per phase
	FanoutProbeMs float64 `json:"fanout_probe_ms,omitempty"` // pause between two probes of one target
	FleetDaemons  []int   `json:"fleet_daemons,omitempty"`   // fleet sizes
	FleetServices int     `json:"fleet_services,omitempty"`  // services (× Instances) in Consul
	FleetChanges  int     `json:"fleet_changes,omitempty"`   // single-instance changes per fleet size
	SoakSeconds   float64 `json:"soak_s,omitempty"`          // rolling restarts for this long
	// ConsulWatch is the daemons' consul.watch in the scale and fleet
	// scenarios: catalog, or per_service (then over https, HTTP/2).
	ConsulWatch string `json:"consul_watch,omitempty"`
	// Store is how the daemon persists in the scale scenario: file, or
	// directory (one file per upstream).
	Store    string `json:"store,omitempty"`
	SoakRate int    `json:"soak_rate,omitempty"` // offered requests/s during the soak
}

// Machine describes where the figures were taken.
type Machine struct {
	Cores        int    `json:"cores"`
	CPUModel     string `json:"cpu_model"`
	Kernel       string `json:"kernel"`
	MemoryMB     int    `json:"memory_mb"`
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	Shared       bool   `json:"shared"` // other work was running on the machine
}

// Versions of everything measured.
type Versions struct {
	Go             string `json:"go"`
	Nginx          string `json:"nginx"`
	Consul         string `json:"consul"`
	ConsulTemplate string `json:"consul_template"`
	SwallowKeeper  string `json:"swallowkeeper"`
}

// PropagationMode holds every propagation sample of one mode.
type PropagationMode struct {
	Samples     []PropSample       `json:"samples"`
	All         Summary            `json:"all"`
	ByKind      map[string]Summary `json:"by_kind"`
	Timeouts    int                `json:"timeouts"`
	ProbeErrors int                `json:"probe_errors"` // probes that failed (should be 0)
	Probes      int                `json:"probes"`
}

// PropSample is one registry change.
type PropSample struct {
	Run      int     `json:"run"`
	Kind     string  `json:"kind"` // register, deregister, fail, recover
	Ms       float64 `json:"ms"`
	TimedOut bool    `json:"timed_out,omitempty"`
}

// Summarize fills All and ByKind from the samples; timed-out samples are
// counted in Timeouts and left out of the percentiles.
func (p *PropagationMode) Summarize() {
	var all []float64
	by := map[string][]float64{}
	p.Timeouts = 0
	for _, s := range p.Samples {
		if s.TimedOut {
			p.Timeouts++
			continue
		}
		all = append(all, s.Ms)
		by[s.Kind] = append(by[s.Kind], s.Ms)
	}
	p.All = Summarize(all)
	p.ByKind = map[string]Summary{}
	for k, v := range by {
		p.ByKind[k] = Summarize(v)
	}
}

// Values returns the latencies of the samples that did not time out.
func (p *PropagationMode) Values() []float64 {
	var v []float64
	for _, s := range p.Samples {
		if !s.TimedOut {
			v = append(v, s.Ms)
		}
	}
	return v
}

// LoadStats describes the requests of one phase of a load run.
type LoadStats struct {
	Requests   int      `json:"requests"`
	Failed     int      `json:"failed"`
	FailedGET  int      `json:"failed_get"`
	FailedPOST int      `json:"failed_post"`
	Seconds    float64  `json:"seconds"`
	OKPerSec   float64  `json:"ok_per_s"` // successful responses per second
	Latency    Summary  `json:"latency"`  // from scheduled send time to the end of the response
	Errors     []string `json:"errors,omitempty"`
}

// LoadRun is one run of a scenario under load (rolling restart, churn):
// the quiet baseline and the phase with changes.
type LoadRun struct {
	Run     int `json:"run"`
	Changes int `json:"changes"` // registry changes (restarts, check flips) made
	// Warmup is the load before the baseline, left out of its latencies;
	// its failures still count.
	Warmup   LoadStats `json:"warmup"`
	Baseline LoadStats `json:"baseline"`
	During   LoadStats `json:"during"`
	// Rolling restarts only.
	SlowestDrainMs  float64 `json:"slowest_drain_ms,omitempty"`
	SlowestRejoinMs float64 `json:"slowest_rejoin_ms,omitempty"`
	// The restart or churn phase's requests, split by whether they were
	// due within EventWindowMs after a registry event (rolling: a
	// restarted backend's first answer; churn: a check flip).
	NearEvent     *Summary `json:"near_event,omitempty"`
	AwayFromEvent *Summary `json:"away_from_event,omitempty"`
	EventWindowMs float64  `json:"event_window_ms,omitempty"`
	// Churn only: the whole run, second by second.
	Series      []Bucket `json:"series,omitempty"`
	PhaseStartS float64  `json:"phase_start_s,omitempty"`
	PhaseEndS   float64  `json:"phase_end_s,omitempty"`
}

// LoadMode gathers the runs of one mode, and the requests of all runs
// pooled.
type LoadMode struct {
	Runs     []LoadRun `json:"runs"`
	Warmup   LoadStats `json:"warmup"` // counts only: no latencies pooled
	Baseline LoadStats `json:"baseline"`
	During   LoadStats `json:"during"`
}

// parts lists the runs' warm-ups, baselines and phases, to merge.
func (m *LoadMode) parts() (warm, base, during []LoadStats) {
	for _, run := range m.Runs {
		warm = append(warm, run.Warmup)
		base = append(base, run.Baseline)
		during = append(during, run.During)
	}
	return warm, base, during
}

// Failed is every failed request of the mode's runs, warm-up included,
// and every request sent.
func (m *LoadMode) Failed() (failed, get, post, requests int) {
	for _, s := range []LoadStats{m.Warmup, m.Baseline, m.During} {
		failed, get, post, requests = failed+s.Failed, get+s.FailedGET, post+s.FailedPOST, requests+s.Requests
	}
	return failed, get, post, requests
}

// RecountErrors recomputes the pooled error lists from the runs' (the
// pooled latencies are not kept in results.json, the errors can be).
func (m *LoadMode) RecountErrors() {
	warm, base, during := m.parts()
	m.Warmup.Errors = Merge(warm, nil).Errors
	m.Baseline.Errors = Merge(base, nil).Errors
	m.During.Errors = Merge(during, nil).Errors
}

// CrashRun is one abrupt backend death.
type CrashRun struct {
	Run        int      `json:"run"`
	Requests   int      `json:"requests"` // from the crash to the end of the window
	GETs       int      `json:"gets"`
	POSTs      int      `json:"posts"`
	FailedGET  int      `json:"failed_get"`
	FailedPOST int      `json:"failed_post"`
	Removed    bool     `json:"removed"`    // nginx stopped trying the dead server within the window
	RemovedMs  float64  `json:"removed_ms"` // crash → last request that nginx sent to it
	CriticalMs float64  `json:"consul_critical_ms"`
	Latency    Summary  `json:"latency"`
	Errors     []string `json:"errors,omitempty"`
}

// CrashMode gathers the crash runs of one mode.
type CrashMode struct {
	Runs []CrashRun `json:"runs"`
}

// Totals adds up the runs: failed GETs and POSTs, requests, and the
// slowest removal (removed is false if any run never removed the server).
func (c *CrashMode) Totals() (requests, failedGET, failedPOST int, worstMs float64, removed bool) {
	removed = len(c.Runs) > 0
	for _, r := range c.Runs {
		requests += r.Requests
		failedGET += r.FailedGET
		failedPOST += r.FailedPOST
		worstMs = max(worstMs, r.RemovedMs)
		removed = removed && r.Removed
	}
	return
}

// ScaleRun is one cold start of the daemon in front of many services.
type ScaleRun struct {
	Run            int     `json:"run"`
	Services       int     `json:"services"`
	Instances      int     `json:"instances"`
	RegisterS      float64 `json:"register_s"`                 // time to fill Consul (not the daemon's)
	ChecksAnswerKB float64 `json:"checks_answer_kb,omitempty"` // what /v1/health/state/any answers then
	ColdSyncMs     float64 `json:"cold_sync_ms"`               // daemon start → nginx holds every upstream
	Synced         bool    `json:"synced"`
	MaxConsulConns int     `json:"max_consul_conns"`
	RSSMB          float64 `json:"rss_mb"`      // VmRSS after the changes
	PeakRSSMB      float64 `json:"peak_rss_mb"` // VmHWM
	// What the RSS is made of, at the same moment: anonymous memory (the
	// Go heap, stacks and runtime) and file-backed pages (the binary's
	// code and data), and the Go heap in use and held from the OS.
	RSSAnonMB         float64 `json:"rss_anon_mb,omitempty"`
	RSSFileMB         float64 `json:"rss_file_mb,omitempty"`
	HeapInuseMB       float64 `json:"heap_inuse_mb,omitempty"`  // go_memstats_heap_inuse_bytes
	HeapLiveMB        float64 `json:"heap_live_mb,omitempty"`   // go_memstats_heap_alloc_bytes: live and not yet collected
	GoSysMB           float64 `json:"go_sys_mb,omitempty"`      // go_memstats_sys_bytes: all the runtime took from the OS
	StackInuseMB      float64 `json:"stack_inuse_mb,omitempty"` // go_memstats_stack_inuse_bytes: goroutine stacks
	Goroutines        int     `json:"goroutines,omitempty"`     // go_goroutines
	Changes           int     `json:"changes"`
	ChangesSeconds    float64 `json:"changes_s"`
	CPUChangesMs      float64 `json:"cpu_changes_ms"`    // utime+stime over the changes
	IdleCPUMsPerS     float64 `json:"idle_cpu_ms_per_s"` // utime+stime per second while idle
	CPUPerChangeMs    float64 `json:"cpu_per_change_ms"` // (CPUChangesMs − idle share) / Changes
	CPUPerChangeRawMs float64 `json:"cpu_per_change_raw_ms"`
	Pushes            int     `json:"pushes"` // POST+DELETE to the dyups API during the changes
	PushesPerChange   float64 `json:"pushes_per_change"`
	ChangeLatency     Summary `json:"change_latency"` // Consul write → nginx API shows it
	// From the daemon's metrics, over the changes: services read from
	// Consul, and full re-reads of every service.
	ServiceReadsPerChange float64 `json:"service_reads_per_change"`
	Sweeps                int     `json:"sweeps"`
	// FileReplaceCPUMs is the bench's own CPU for one atomic replace of a
	// small file in the daemon's directory (fileReplaceCPU): the floor of
	// a change's CPU on this disk.
	FileReplaceCPUMs float64 `json:"file_replace_cpu_ms,omitempty"`
	// nginx's memory (PSS of the master and workers: the shared dict
	// counted once) before and after NginxUpdates POSTs and the DELETEs
	// that end them.
	NginxUpdates    int     `json:"nginx_updates,omitempty"`
	NginxUpdatesS   float64 `json:"nginx_updates_s,omitempty"`
	NginxPSSStartMB float64 `json:"nginx_pss_start_mb,omitempty"`
	NginxPSSEndMB   float64 `json:"nginx_pss_end_mb,omitempty"`
	// The workers' Lua heaps, summed, each right after a full collection
	// (which also comes before each PSS sample).
	NginxLuaStartKB float64   `json:"nginx_lua_start_kb,omitempty"`
	NginxLuaEndKB   float64   `json:"nginx_lua_end_kb,omitempty"`
	NginxWarmupMB   []float64 `json:"nginx_warmup_mb,omitempty"` // PSS at rest after each warm-up round
}

// NginxGrowth is the change of nginx's memory over the updates, as a
// fraction of where it started.
func (s ScaleRun) NginxGrowth() float64 {
	if s.NginxPSSStartMB == 0 {
		return 0
	}
	return (s.NginxPSSEndMB - s.NginxPSSStartMB) / s.NginxPSSStartMB
}

// ScaleResult gathers the scale runs.
type ScaleResult struct {
	Runs []ScaleRun `json:"runs"`
}

// Worst returns, over the runs, the figures a target is checked against:
// the slowest sync, most connections, largest RSS, highest CPU per change
// and the pushes per change farthest from 1.
func (s *ScaleResult) Worst() (w ScaleRun) {
	w.Synced = len(s.Runs) > 0
	w.PushesPerChange = 1
	for i, r := range s.Runs {
		w.Synced = w.Synced && r.Synced
		w.ColdSyncMs = max(w.ColdSyncMs, r.ColdSyncMs)
		w.MaxConsulConns = max(w.MaxConsulConns, r.MaxConsulConns)
		w.RSSMB = max(w.RSSMB, r.RSSMB)
		w.PeakRSSMB = max(w.PeakRSSMB, r.PeakRSSMB)
		w.CPUPerChangeMs = max(w.CPUPerChangeMs, r.CPUPerChangeMs)
		w.CPUPerChangeRawMs = max(w.CPUPerChangeRawMs, r.CPUPerChangeRawMs)
		w.IdleCPUMsPerS = max(w.IdleCPUMsPerS, r.IdleCPUMsPerS)
		w.ChangeLatency.P50 = max(w.ChangeLatency.P50, r.ChangeLatency.P50)
		w.ChangeLatency.P99 = max(w.ChangeLatency.P99, r.ChangeLatency.P99)
		if i == 0 || abs(r.PushesPerChange-1) > abs(w.PushesPerChange-1) {
			w.PushesPerChange = r.PushesPerChange
		}
		if r.NginxUpdates > 0 && (w.NginxUpdates == 0 || r.NginxGrowth() > w.NginxGrowth()) {
			w.NginxUpdates, w.NginxUpdatesS, w.NginxPSSStartMB, w.NginxPSSEndMB = r.NginxUpdates, r.NginxUpdatesS, r.NginxPSSStartMB, r.NginxPSSEndMB
			w.NginxLuaStartKB, w.NginxLuaEndKB = r.NginxLuaStartKB, r.NginxLuaEndKB
		}
		w.Services, w.Instances = r.Services, r.Instances
	}
	return w
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// Target is one goal of the issue, checked against a figure.
type Target struct {
	Scenario string `json:"scenario"`
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Value    string `json:"value"`
	Met      bool   `json:"met"`
}

// The targets of issue 8, for ours-lua.
const (
	targetPropP50Ms    = 20
	targetPropP99Ms    = 50
	targetRemovalSlack = 300 * time.Millisecond
	targetConsulConns  = 20
	targetRunTime      = 15 * time.Minute
	targetNginxGrowth  = 0.05
	targetIdleCPU      = 10.0 // ms of CPU per second
	// rolling restarts and churn
	targetP99Ratio        = 1.2
	targetRollingRequests = 500000
	targetChurnThroughput = 0.03
)

// scaleGoal is issue 18's targets for one catalog size (× 10 instances).
type scaleGoal struct {
	Services       int // the size the issue sets them for
	ColdSync       time.Duration
	CPUPerChangeMs float64
	ChangeP50Ms    float64 // single-instance change, Consul write → nginx
	ChangeP99Ms    float64
	RSSMB          float64
}

// scaleGoals are the sizes issue 18 sets targets for, smallest first.
var scaleGoals = []scaleGoal{
	{Services: 1000, ColdSync: 2 * time.Second, CPUPerChangeMs: 2, ChangeP50Ms: 10, ChangeP99Ms: 30, RSSMB: 60},
	{Services: 10000, ColdSync: 20 * time.Second, CPUPerChangeMs: 5, ChangeP50Ms: 20, ChangeP99Ms: 50, RSSMB: 200},
}

// scaleGoalFor returns the targets a run of this many services is judged
// by: those of the smallest size the issue names that is at least as
// large (a smaller catalog must do at least as well), or the largest's.
// of says which size they are set for when it is not the run's own.
func scaleGoalFor(services int) (g scaleGoal, of string) {
	g = scaleGoals[len(scaleGoals)-1]
	for _, c := range scaleGoals {
		if services <= c.Services {
			g = c
			break
		}
	}
	if services != g.Services {
		of = fmt.Sprintf(" (the target at %d × 10)", g.Services)
	}
	return g, of
}

// EvaluateTargets checks the targets against ours-lua's figures.
// A scenario that was not run (or not for ours-lua) gives no target.
func EvaluateTargets(r *Results) []Target {
	var out []Target
	add := func(scen, name, goal, value string, met bool) {
		out = append(out, Target{Scenario: scen, Name: name, Goal: goal, Value: value, Met: met})
	}
	if p := r.Propagation[ModeLua]; p != nil && p.All.N > 0 {
		add(ScenarioPropagation, "propagation p50", fmt.Sprintf("≤ %d ms", targetPropP50Ms),
			fmt.Sprintf("%.1f ms", p.All.P50), p.All.P50 <= targetPropP50Ms && p.Timeouts == 0)
		add(ScenarioPropagation, "propagation p99", fmt.Sprintf("≤ %d ms", targetPropP99Ms),
			fmt.Sprintf("%.1f ms", p.All.P99), p.All.P99 <= targetPropP99Ms && p.Timeouts == 0)
	}
	p99Ratio := func(m *LoadMode) (string, bool) {
		if m.Baseline.Latency.P99 == 0 {
			return "—", false
		}
		q := m.During.Latency.P99 / m.Baseline.Latency.P99
		return fmt.Sprintf("%.2f× (%.1f → %.1f ms)", q, m.Baseline.Latency.P99, m.During.Latency.P99), q <= targetP99Ratio
	}
	if m := r.Rolling[ModeLua]; m != nil && len(m.Runs) > 0 {
		failed, _, _, sent := m.Failed()
		add(ScenarioRolling, "rolling restart: failed requests", "0",
			fmt.Sprintf("%d of %d", failed, sent), failed == 0)
		add(ScenarioRolling, "rolling restart: requests during restarts", fmt.Sprintf("≥ %d", targetRollingRequests),
			fmt.Sprintf("%d", m.During.Requests), m.During.Requests >= targetRollingRequests)
		v, ok := p99Ratio(m)
		add(ScenarioRolling, "rolling restart: p99 vs quiet baseline", fmt.Sprintf("≤ %.1f×", targetP99Ratio), v, ok)
	}
	if c := r.Crash[ModeLua]; c != nil && len(c.Runs) > 0 {
		reqs, fg, _, worst, removed := c.Totals()
		add(ScenarioCrash, "crash: failed GETs", "0", fmt.Sprintf("%d of %d requests", fg, reqs), fg == 0)
		limit := time.Duration(r.Params.CheckInterval*float64(time.Second)) + targetRemovalSlack
		v := fmt.Sprintf("%.0f ms (slowest of %d)", worst, len(c.Runs))
		if !removed {
			v = "not removed within the window"
		}
		add(ScenarioCrash, "crash: out of nginx", fmt.Sprintf("≤ check interval + 300 ms = %v", limit),
			v, removed && worst <= ms(limit))
	}
	if r.Scale != nil && len(r.Scale.Runs) > 0 {
		w := r.Scale.Worst()
		v := fmt.Sprintf("%.2f s", w.ColdSyncMs/1000)
		if !w.Synced {
			v = "did not complete"
		}
		g, of := scaleGoalFor(w.Services)
		add(ScenarioScale, fmt.Sprintf("cold sync of %d × %d", w.Services, w.Instances),
			fmt.Sprintf("≤ %v%s", g.ColdSync, of), v, w.Synced && w.ColdSyncMs <= ms(g.ColdSync))
		add(ScenarioScale, "connections to Consul", fmt.Sprintf("≤ %d", targetConsulConns),
			fmt.Sprintf("%d", w.MaxConsulConns), w.MaxConsulConns <= targetConsulConns)
		add(ScenarioScale, "daemon RSS", fmt.Sprintf("≤ %.0f MB%s", g.RSSMB, of),
			fmt.Sprintf("%.1f MB (peak %.1f MB)", w.RSSMB, w.PeakRSSMB), w.RSSMB <= g.RSSMB)
		add(ScenarioScale, "idle CPU", fmt.Sprintf("≈ 0 (≤ %.0f ms/s, 1%% of a core)", targetIdleCPU),
			fmt.Sprintf("%.1f ms/s", w.IdleCPUMsPerS), w.IdleCPUMsPerS <= targetIdleCPU)
		add(ScenarioScale, "CPU per single-instance change", fmt.Sprintf("≤ %.0f ms%s", g.CPUPerChangeMs, of),
			fmt.Sprintf("%.2f ms (raw %.2f ms)", w.CPUPerChangeMs, w.CPUPerChangeRawMs), w.CPUPerChangeMs <= g.CPUPerChangeMs)
		if w.ChangeLatency.P99 > 0 {
			add(ScenarioScale, "single-instance change → nginx, p50 / p99", fmt.Sprintf("≤ %.0f / %.0f ms%s", g.ChangeP50Ms, g.ChangeP99Ms, of),
				fmt.Sprintf("%.1f / %.1f ms", w.ChangeLatency.P50, w.ChangeLatency.P99), w.ChangeLatency.P50 <= g.ChangeP50Ms && w.ChangeLatency.P99 <= g.ChangeP99Ms)
		}
		add(ScenarioScale, "upstreams pushed per change", "exactly 1",
			fmt.Sprintf("%.2f", w.PushesPerChange), w.PushesPerChange == 1)
		if w.NginxUpdates > 0 {
			add(ScenarioScale, fmt.Sprintf("nginx memory after %d updates", w.NginxUpdates), fmt.Sprintf("within %.0f%% of its start", targetNginxGrowth*100),
				fmt.Sprintf("%+.1f%% (%.1f → %.1f MB)", w.NginxGrowth()*100, w.NginxPSSStartMB, w.NginxPSSEndMB), w.NginxGrowth() <= targetNginxGrowth)
		}
	}
	if m := r.Churn[ModeLua]; m != nil && len(m.Runs) > 0 {
		v, ok := p99Ratio(m)
		add(ScenarioChurn, "churn: p99 vs quiet baseline", fmt.Sprintf("≤ %.1f×", targetP99Ratio), v, ok)
		if m.Baseline.OKPerSec > 0 {
			loss := 1 - m.During.OKPerSec/m.Baseline.OKPerSec
			add(ScenarioChurn, "churn: throughput vs quiet baseline", fmt.Sprintf("within %.0f%%", targetChurnThroughput*100),
				fmt.Sprintf("%.0f → %.0f ok/s (%+.1f%%)", m.Baseline.OKPerSec, m.During.OKPerSec, -loss*100), loss <= targetChurnThroughput)
		}
		add(ScenarioChurn, "churn: failed requests", "0", fmt.Sprintf("%d of %d", m.During.Failed, m.During.Requests), m.During.Failed == 0)
	}
	extraTargets(r, add)
	// The run-time budget is the default set's; the opt-in scenarios are
	// long by design (the soak alone runs 8.5 minutes).
	if !r.Params.Quick && r.DurationS > 0 && !slices.ContainsFunc(r.Params.Scenarios, func(s string) bool { return slices.Contains(ExtraScenarios, s) }) {
		add("whole run", "bench run time", fmt.Sprintf("≤ %v", targetRunTime),
			(time.Duration(r.DurationS) * time.Second).String(), r.DurationS <= targetRunTime.Seconds())
	}
	return out
}

// FixedLoadSeconds is the part of a run's wall-clock time that its
// parameters fix whatever the code does: the churn scenario, the quiet
// baselines before rolling, crash and churn, and the warm-up before the
// baselines of rolling and churn, for every run and mode.
func (p Params) FixedLoadSeconds() float64 {
	per := 0.0
	for _, s := range p.Scenarios {
		switch s {
		case ScenarioChurn:
			per += p.ChurnSeconds + p.WarmupSeconds + p.BaselineSeconds
		case ScenarioRolling:
			per += p.WarmupSeconds + p.BaselineSeconds
		case ScenarioCrash:
			per += p.BaselineSeconds
		}
	}
	return per * float64(p.Runs*len(p.Modes))
}

// WriteJSON writes r, indented, to path.
func WriteJSON(path string, r *Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads results written by WriteJSON.
func ReadJSON(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// PerChange turns totals over a window of seconds into per-change figures
// net of an idle rate (never below 0).
func PerChange(total, idlePerS, seconds float64, changes int) float64 {
	if changes <= 0 {
		return 0
	}
	return max(total-idlePerS*seconds, 0) / float64(changes)
}
