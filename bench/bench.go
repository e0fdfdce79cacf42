// Package bench is the benchmark behind docs/BENCHMARKS.md: it starts real
// Consul, real nginx, Go backends and a load generator on loopback, and
// compares SwallowKeeper with the Lua dyups module (ours-lua), SwallowKeeper
// in reload mode (ours-reload) and consul-template driving nginx reloads,
// on five scenarios: propagation latency, rolling restarts, a crashed
// backend, scale (ours-lua only) and churn under load. Three more run only
// when asked for (-scenarios fanout,fleet or -soak; extra_results.go): one
// daemon fanning out to many nginx, fleets of daemons against one Consul
// server, and a long rolling-restart soak. It writes
// results.json, PNG plots and the Markdown report, which is rendered from
// results.json alone (-render re-renders without measuring).
//
// The pure parts — percentiles, convergence of probes, request stats,
// targets, the Markdown — are tested in this package; the scenarios
// themselves run only from the command (scripts/bench.sh).
package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// Main is the command line of swallowkeeper-bench.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, ok := parseFlags(args, stderr)
	if !ok {
		return 2
	}
	if o.render {
		return rerender(o, stdout, stderr)
	}
	if o.growth != "" {
		if err := Growth(splitList(o.growth), o.mdPath); err != nil {
			fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s and %s\n", o.mdPath, filepath.Join(filepath.Dir(o.mdPath), PlotGrowth))
		return 0
	}
	proc, err := newProcs(procfs.DefaultMountPoint)
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
		return 1
	}
	r := newRunner(o, proc, stdout)
	r.runAll(ctx)
	return r.finish(ctx, o, stdout, stderr)
}

// options is the command line, parsed.
type options struct {
	p                    Params
	bin                  Binaries
	jsonPath, mdPath     string
	profileDir           string
	command              string
	render, keep, shared bool
	fleetBaseline        string // -fleet-baseline
	growth               string // -growth: results files, comma-separated
}

// parseFlags parses args into options, with -quick's smaller defaults for
// the flags not given and the default output paths; false (after saying
// why on stderr) when args are wrong.
func parseFlags(args []string, stderr io.Writer) (options, bool) {
	var (
		o                options
		modes, scenarios string
		churn            time.Duration
	)
	fs := newFlagSet(stderr, &o, &modes, &scenarios, &churn)
	x := extraFlags(fs, &o.p)
	if err := fs.Parse(args); err != nil {
		return o, false
	}
	if fs.NArg() > 0 {
		// A stray word stops flag parsing: every flag after it would be
		// ignored, -json and -md among them, and the run would overwrite
		// docs/.
		fmt.Fprintf(stderr, "swallowkeeper-bench: unexpected argument %q (flags only; a boolean flag takes no value)\n", fs.Arg(0))
		return o, false
	}
	if err := x.apply(fs, &o, &scenarios); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
		return o, false
	}
	if o.p.Quick {
		quickDefaults(fs, &o.p, &churn)
	}
	o.p.ChurnSeconds = churn.Seconds()
	o.p.Modes = splitList(modes)
	o.p.Scenarios = splitList(scenarios)
	if o.p.Store != "file" && o.p.Store != "directory" {
		fmt.Fprintf(stderr, "swallowkeeper-bench: -store %q: want file or directory\n", o.p.Store)
		return o, false
	}
	if bad := unknown(o.p.Modes, AllModes); bad != "" {
		fmt.Fprintf(stderr, "swallowkeeper-bench: unknown mode %q (want %v)\n", bad, AllModes)
		return o, false
	}
	if bad := unknown(o.p.Scenarios, append(slices.Clone(AllScenarios), ExtraScenarios...)); bad != "" {
		fmt.Fprintf(stderr, "swallowkeeper-bench: unknown scenario %q (want %v, or opt-in %v)\n", bad, AllScenarios, ExtraScenarios)
		return o, false
	}
	if o.jsonPath == "" {
		o.jsonPath = filepath.Join(o.bin.RepoRoot, "docs", "bench", "results.json")
	}
	if o.mdPath == "" && o.growth != "" {
		o.mdPath = filepath.Join(o.bin.RepoRoot, "docs", "bench", "SCALE.md")
	}
	if o.mdPath == "" {
		o.mdPath = filepath.Join(o.bin.RepoRoot, "docs", "BENCHMARKS.md")
	}
	if o.command == "" {
		o.command = strings.Join(append([]string{"swallowkeeper-bench"}, args...), " ")
	}
	return o, true
}

// newFlagSet defines every flag into o, and the lists and churn duration
// that parseFlags turns into Params.
func newFlagSet(stderr io.Writer, o *options, modes, scenarios *string, churn *time.Duration) *flag.FlagSet {
	fs := flag.NewFlagSet("swallowkeeper-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swallowkeeper-bench [flags]\n\nCompares ours-lua, ours-reload and consul-template on loopback and writes\nresults.json, PNG plots and BENCHMARKS.md. scripts/bench.sh builds and runs it.\n\n")
		fs.PrintDefaults()
	}
	p, bin := &o.p, &o.bin
	fs.BoolVar(&p.Quick, "quick", false, "1 run and shorter scenarios (defaults marked quick: below)")
	fs.IntVar(&p.Runs, "runs", 3, "repetitions of every scenario (quick: 1)")
	// The issue sizes each scenario per mode (100 propagation changes, 20
	// restart cycles, 60 s of churn); the defaults spread those sizes over
	// the 3 runs, which is what lets a full run finish within 15 minutes.
	// -changes 100 -cycles 20 -churn 60s runs each size in every run (about
	// 25 minutes; see fullRunTime).
	fs.IntVar(&p.Changes, "changes", 34, "propagation: registry changes per run and mode; 3 runs give 102 per mode (quick: 20)")
	fs.IntVar(&p.Cycles, "cycles", 7, "rolling restart cycles of the 3 backends per run; 3 runs give 21 per mode (quick: 5)")
	fs.IntVar(&p.Rate, "rate", 1000, "offered requests/s for rolling, crash and churn (quick: 300)")
	fs.IntVar(&p.PostEvery, "post-every", 5, "every n-th request is a POST with a body (0: none)")
	fs.IntVar(&p.Services, "services", 1000, "scale: services, each with -instances instances (quick: 100)")
	fs.IntVar(&p.Instances, "instances", 10, "scale: instances per service")
	fs.StringVar(&p.ConsulWatch, "consul-watch", "catalog", "scale and fleet: the daemons' consul.watch, catalog or per_service (per_service talks https to Consul, so that HTTP/2 carries one long poll per service)")
	fs.StringVar(&p.Store, "store", "file", "scale: how the daemon persists: file (one upstream file) or directory (file: DIR/*.conf, one file per upstream)")
	fs.IntVar(&p.ScaleChanges, "scale-changes", 100, "scale: single-instance changes measured (quick: 20)")
	fs.IntVar(&p.NginxUpdates, "nginx-updates", 100000, "scale: upstream updates POSTed to nginx's dyups API to watch its memory (quick: 5000)")
	fs.DurationVar(churn, "churn", 20*time.Second, "churn: duration per run; 3 runs give 60s per mode (quick: 15s)")
	fs.Float64Var(&p.ChurnPerSecond, "churn-rate", 2, "churn: registry changes per second")
	fs.Float64Var(&p.BaselineSeconds, "baseline", 5, "seconds of quiet load before rolling, crash and churn (quick: 3)")
	fs.Float64Var(&p.WarmupSeconds, "warmup", 1, "seconds of load on the fresh stack before the baseline of rolling and churn, left out of it")
	fs.Float64Var(&p.CheckInterval, "check-interval", 1, "Consul HTTP check interval, seconds (rolling, crash)")
	fs.IntVar(&p.Probers, "probers", 3, "propagation: concurrent fresh-connection probers")
	fs.StringVar(modes, "modes", strings.Join(AllModes, ","), "modes to compare")
	fs.StringVar(scenarios, "scenarios", strings.Join(AllScenarios, ","), "scenarios to run; opt-in, never in the default: "+strings.Join(ExtraScenarios, ", "))
	bin.Programs.Flags(fs) // -repo is also where the report goes by default
	fs.StringVar(&bin.ConsulTemplate, "consul-template", "consul-template", "consul-template binary")
	fs.StringVar(&o.jsonPath, "json", "", "results file (default <repo>/docs/bench/results.json)")
	fs.StringVar(&o.mdPath, "md", "", "report (default <repo>/docs/BENCHMARKS.md); plots go to <dir of -json>")
	fs.BoolVar(&o.render, "render", false, "only render the report and plots again from -json (rewriting it in the current format)")
	fs.StringVar(&o.growth, "growth", "", "only write the scale growth report (CPU per change, p50 and RSS against the catalog's size) from these results files, comma-separated, each from -scenarios scale at one -services; to -md (default <repo>/docs/bench/SCALE.md), its plot next to it")
	fs.BoolVar(&o.shared, "shared", false, "say in the report that the machine was shared with other work")
	fs.BoolVar(&o.keep, "keep", false, "keep the files of failed scenario runs")
	fs.StringVar(&o.profileDir, "profile", "", "save the daemon's CPU profile of the scale changes and its heap profile after them in this directory")
	fs.StringVar(&o.command, "command", "", "how the bench was invoked, for the report (default: this command line)")
	return fs
}

// quickDefaults applies -quick's sizes to the flags the command line did
// not set.
func quickDefaults(fs *flag.FlagSet, p *Params, churn *time.Duration) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	quick := map[string]func(){
		"runs": func() { p.Runs = 1 }, "changes": func() { p.Changes = 20 }, "cycles": func() { p.Cycles = 5 },
		"rate": func() { p.Rate = 300 }, "services": func() { p.Services = 100 }, "scale-changes": func() { p.ScaleChanges = 20 }, "nginx-updates": func() { p.NginxUpdates = 5000 },
		"churn": func() { *churn = 15 * time.Second }, "baseline": func() { p.BaselineSeconds = 3 },
	}
	for name, f := range quick {
		if !set[name] {
			f()
		}
	}
}

// unknown returns the first of names that is not in known, or "".
func unknown(names, known []string) string {
	for _, n := range names {
		if !slices.Contains(known, n) {
			return n
		}
	}
	return ""
}

// rerender (-render) writes the report and plots again from the results
// file, recounting errors and targets with the current code.
func rerender(o options, stdout, stderr io.Writer) int {
	res, err := ReadJSON(o.jsonPath)
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
		return 1
	}
	for _, m := range []map[string]*LoadMode{res.Rolling, res.Churn} {
		for _, lm := range m {
			lm.RecountErrors()
		}
	}
	res.Targets = EvaluateTargets(res)
	if err := writeReport(res, o.jsonPath, o.mdPath, true); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "rendered %s and the plots from %s\n", o.mdPath, o.jsonPath)
	return 0
}

// newRunner starts the results (machine, versions) and logs them; its log
// lines carry the seconds since now.
func newRunner(o options, proc procs, stdout io.Writer) *runner {
	start := time.Now()
	res := &Results{Date: start, Command: o.command, Params: o.p}
	res.Machine = proc.machine()
	res.Machine.Shared = o.shared
	res.Versions = versions(o.bin, o.p.Modes)
	r := &runner{bin: o.bin, p: o.p, res: res, proc: proc, keep: o.keep, profileDir: o.profileDir, fleetBaseline: o.fleetBaseline, logf: func(format string, args ...any) {
		fmt.Fprintf(stdout, "[%7.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}}
	r.logf("machine: %d cores, %s; load average %s", res.Machine.Cores, res.Machine.CPUModel, res.Machine.LoadAvgStart)
	r.logf("versions: %s; nginx %s; %s; %s; swallowkeeper %s", res.Versions.Go, res.Versions.Nginx, res.Versions.Consul, res.Versions.ConsulTemplate, res.Versions.SwallowKeeper)
	return r
}

// versions asks every binary measured for its version (consul-template
// only when its mode runs), and git for the daemon's commit.
func versions(bin Binaries, modes []string) Versions {
	v := Versions{
		Go:            runtime.Version(),
		Nginx:         strings.TrimPrefix(version(bin.Nginx, "-v"), "nginx version: "),
		Consul:        version(bin.Consul, "version"),
		SwallowKeeper: version(bin.Daemon, "version"),
	}
	if rev := version("git", "-C", bin.RepoRoot, "describe", "--always", "--dirty"); !strings.HasPrefix(rev, "unknown") && !strings.Contains(rev, "fatal") {
		v.SwallowKeeper += ", commit " + rev
	}
	if slices.Contains(modes, ModeConsulTemplate) {
		v.ConsulTemplate = version(bin.ConsulTemplate, "-version")
	}
	return v
}

// runAll runs every scenario Runs times in every mode (scale: ours-lua
// only), until ctx ends; a failed run is recorded and the next one goes on.
func (r *runner) runAll(ctx context.Context) {
	check := r.secs(r.p.CheckInterval)
	stacks := map[string]stackScenario{
		ScenarioPropagation: {StackOptions{MaxFails: 1}, 3, 0, r.propagation},
		ScenarioRolling:     {StackOptions{MaxFails: 1}, 3, check, r.rolling},
		ScenarioCrash:       {StackOptions{MaxFails: 0}, 3, check, r.crash},
		ScenarioChurn:       {StackOptions{MaxFails: 1}, 4, 0, r.churn},
	}
	for _, scen := range r.p.Scenarios {
		if slices.Contains(ExtraScenarios, scen) {
			if ctx.Err() == nil {
				r.runExtra(ctx, scen)
			}
			continue
		}
		for run := 1; run <= r.p.Runs && ctx.Err() == nil; run++ {
			if scen == ScenarioScale {
				if !slices.Contains(r.p.Modes, ModeLua) {
					break
				}
				r.logf("%s, run %d/%d, %s: %d services × %d instances", scen, run, r.p.Runs, ModeLua, r.p.Services, r.p.Instances)
				if err := r.scale(ctx, run); err != nil {
					r.fail(scen, ModeLua, run, err)
				}
				continue
			}
			for _, mode := range r.p.Modes {
				if ctx.Err() != nil {
					break
				}
				r.logf("%s, run %d/%d, %s", scen, run, r.p.Runs, mode)
				if err := r.onStack(ctx, stacks[scen], mode, run); err != nil {
					r.fail(scen, mode, run, err)
				}
			}
		}
		if scen == ScenarioPropagation {
			r.summarizePropagation()
		}
	}
}

// summarizePropagation pools the propagation runs of every mode and logs
// them.
func (r *runner) summarizePropagation() {
	for _, mode := range r.p.Modes {
		if pm := r.res.Propagation[mode]; pm != nil {
			pm.Summarize()
			r.logf("    %s: %d changes, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, %d timeouts",
				mode, len(pm.Samples), pm.All.P50, pm.All.P90, pm.All.P99, pm.All.Max, pm.Timeouts)
		}
	}
}

// finish evaluates the targets, writes results.json, the plots and the
// report, and prints the targets; 1 when a run failed or was interrupted.
func (r *runner) finish(ctx context.Context, o options, stdout, stderr io.Writer) int {
	res := r.res
	if ctx.Err() != nil {
		res.Errors = append(res.Errors, "interrupted: the run is incomplete")
	}
	res.Machine.LoadAvgEnd = r.proc.loadAvg()
	res.DurationS = time.Since(res.Date).Round(time.Second).Seconds()
	res.Targets = EvaluateTargets(res)
	if err := writeReport(res, o.jsonPath, o.mdPath, true); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper-bench: %v\n", err)
		return 1
	}
	met := 0
	for _, t := range res.Targets {
		if t.Met {
			met++
		}
		fmt.Fprintf(stdout, "  %-10s %-40s goal %-35s measured %-35s %s\n", t.Scenario, t.Name, t.Goal, t.Value, mark(t.Met))
	}
	r.logf("done in %v: %d of %d targets met; wrote %s, %s and the plots", time.Since(res.Date).Round(time.Second), met, len(res.Targets), o.jsonPath, o.mdPath)
	if len(res.Errors) > 0 {
		for _, e := range res.Errors {
			fmt.Fprintf(stderr, "swallowkeeper-bench: %s\n", e)
		}
		return 1
	}
	return 0
}

func (r *runner) fail(scen, mode string, run int, err error) {
	msg := fmt.Sprintf("%s/%s run %d: %v", scen, mode, run, err)
	r.res.Errors = append(r.res.Errors, msg)
	r.logf("    FAILED: %s", msg)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func writeReport(res *Results, jsonPath, mdPath string, writeJSON bool) error {
	dir := filepath.Dir(jsonPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if writeJSON {
		if err := WriteJSON(jsonPath, res); err != nil {
			return err
		}
	}
	if _, err := WritePlots(res, dir); err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(mdPath), dir)
	if err != nil {
		rel = dir
	}
	return os.WriteFile(mdPath, []byte(RenderMarkdown(res, filepath.ToSlash(rel))), 0o644)
}
