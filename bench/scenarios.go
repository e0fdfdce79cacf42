package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

// the service every traffic scenario routes to
const service = "web"

// runner runs the scenarios and fills the results.
type runner struct {
	bin  Binaries
	p    Params
	res  *Results
	proc procs // /proc: the CPU time, memory and sockets of what is measured
	logf func(format string, args ...any)
	keep bool // keep the directories of failed scenario runs
	// profileDir, when set, receives the daemon's CPU profile of the scale
	// changes and its heap profile after them (scale-cpu-runN.pprof,
	// scale-heap-runN.pprof), for `go tool pprof`.
	profileDir string
	// fleetBaseline, when set, is a second daemon binary (the one before a
	// change, say) the fleet scenario also runs, for the ratio to it.
	fleetBaseline string

	// pooled latencies of the load scenarios: scenario → mode → phase
	pool map[string]map[string]map[string][]float64
}

func (r *runner) pooled(scen, mode, phase string, lat []float64) {
	if r.pool == nil {
		r.pool = map[string]map[string]map[string][]float64{}
	}
	if r.pool[scen] == nil {
		r.pool[scen] = map[string]map[string][]float64{}
	}
	if r.pool[scen][mode] == nil {
		r.pool[scen][mode] = map[string][]float64{}
	}
	r.pool[scen][mode][phase] = append(r.pool[scen][mode][phase], lat...)
}

func backends(n int) ([]*Backend, error) {
	var bs []*Backend
	for i := 1; i <= n; i++ {
		b, err := NewBackend(i)
		if err != nil {
			stopAll(bs)
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

func stopAll(bs []*Backend) {
	for _, b := range bs {
		b.Crash()
	}
}

func ids(bs ...*Backend) []string {
	var s []string
	for _, b := range bs {
		s = append(s, b.ID)
	}
	return s
}

// setup starts a stack for mode with backends, registers them, starts the
// controller and waits until nginx routes to all of them.
func (r *runner) setup(ctx context.Context, mode string, opt StackOptions, n int, check time.Duration) (*Stack, []*Backend, error) {
	st, err := NewStack(ctx, r.bin, mode, opt)
	if err != nil {
		return nil, nil, err
	}
	bs, err := backends(n)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	fail := func(err error) (*Stack, []*Backend, error) {
		st.Close()
		stopAll(bs)
		return nil, nil, err
	}
	for _, b := range bs {
		if err := st.Register(service, b, check); err != nil {
			return fail(err)
		}
	}
	t := time.Now()
	if err := st.StartController(); err != nil {
		return fail(err)
	}
	if err := st.WaitRouting(ctx, service, ids(bs...), 60*time.Second); err != nil {
		return fail(err)
	}
	r.logf("    %s: nginx routes to %d backends %v after the controller started", mode, n, time.Since(t).Round(time.Millisecond))
	return st, bs, nil
}

// stackScenario is a traffic scenario: the stack it runs on and its body.
type stackScenario struct {
	opt      StackOptions
	backends int
	check    time.Duration // Consul HTTP check interval of the backends; 0: none
	run      func(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error
}

// onStack runs sc's body on a fresh stack, and tears the stack down after.
func (r *runner) onStack(ctx context.Context, sc stackScenario, mode string, run int) (err error) {
	st, bs, err := r.setup(ctx, mode, sc.opt, sc.backends, sc.check)
	if err != nil {
		return err
	}
	defer func() { r.teardown(st, bs, err) }()
	return sc.run(ctx, st, bs, mode, run)
}

func (r *runner) teardown(st *Stack, bs []*Backend, err error) {
	st.Close()
	stopAll(bs)
	if err != nil && r.keep {
		r.logf("    files kept in %s", st.Dir)
		return
	}
	st.Cleanup()
}

// propagation: one instance (inst-3) registers, fails its check,
// recovers and deregisters, over and over, beside two steady ones; each
// change is timed from the Consul write returning to nginx routing to the
// new set, seen by fresh-connection probes.
func (r *runner) propagation(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error {
	c := bs[2]
	if err := st.Deregister(c.ID); err != nil {
		return err
	}
	if err := st.WaitRouting(ctx, service, ids(bs[0], bs[1]), 30*time.Second); err != nil {
		return err
	}
	if r.res.Propagation == nil {
		r.res.Propagation = map[string]*PropagationMode{}
	}
	pm := r.res.Propagation[mode]
	if pm == nil {
		pm = &PropagationMode{}
		r.res.Propagation[mode] = pm
	}
	prober := StartProber(st.ProxyURL, service, r.p.Probers)
	defer func() {
		total, errs := prober.Stop()
		pm.Probes += total
		pm.ProbeErrors += errs
	}()
	if err := backoff.Sleep(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	kinds := []string{"register", "fail", "recover", "deregister"}
	const timeout = 15 * time.Second
	for i := range r.p.Changes {
		kind := kinds[i%len(kinds)]
		prober.Reset()
		var werr error
		switch kind {
		case "register":
			werr = st.Register(service, c, 0)
		case "fail":
			werr = st.SetTTL(c.ID, api.HealthCritical)
		case "recover":
			werr = st.SetTTL(c.ID, api.HealthPassing)
		case "deregister":
			werr = st.Deregister(c.ID)
		}
		t0 := time.Now()
		if werr != nil {
			return fmt.Errorf("change %d (%s): %w", i, kind, werr)
		}
		join := kind == "register" || kind == "recover"
		var lat time.Duration
		ok := poll(ctx, timeout, 3*time.Millisecond, func() bool {
			var done bool
			lat, done = Convergence(prober.Probes(), t0, c.ID, join, 150*time.Millisecond)
			return done
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s := PropSample{Run: run, Kind: kind, Ms: ms(lat)}
		if !ok {
			s.TimedOut, s.Ms = true, ms(timeout)
			r.logf("    %s change %d (%s): no convergence within %v", mode, i, kind, timeout)
			want := ids(bs[0], bs[1])
			if join {
				want = ids(bs...)
			}
			if err := st.WaitRouting(ctx, service, want, 30*time.Second); err != nil {
				return err
			}
		}
		pm.Samples = append(pm.Samples, s)
		if err := backoff.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// rolling: three backends restarted one after the other, cycles times,
// under steady load: deregister, drain (until the backend has had no
// request for drainQuiet), stop gracefully, start, register, wait for
// traffic.
func (r *runner) rolling(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error {
	lr, restarts, err := r.restarting(ctx, st, bs, ScenarioRolling, mode, run, func(cycle int) bool { return cycle < r.p.Cycles })
	if err != nil {
		return err
	}
	r.addLoadRun(&r.res.Rolling, ScenarioRolling, mode, lr)
	r.logf("    %s run %d: %d restarts, %d of %d requests failed, p99 %.1f ms (baseline %.1f ms)",
		mode, run, restarts, lr.During.Failed, lr.During.Requests, lr.During.Latency.P99, lr.Baseline.Latency.P99)
	return nil
}

// restarting restarts bs one after the other (restartBackend) under load,
// while more(cycle) holds before each restart, and returns the load run
// with the restarts' figures and how many restarts there were.
func (r *runner) restarting(ctx context.Context, st *Stack, bs []*Backend, scen, mode string, run int, more func(cycle int) bool) (LoadRun, int, error) {
	var slowestDrain, slowestRejoin time.Duration
	restarts := 0
	lp, err := r.underLoad(ctx, st, scen, mode, run, time.Second, func() ([]time.Time, error) {
		var rejoins []time.Time // when each restarted backend answered again
		for cycle := 0; ; cycle++ {
			for _, b := range bs {
				if !more(cycle) {
					return rejoins, nil
				}
				drain, rejoin, err := r.restartBackend(ctx, st, b, cycle)
				if err != nil {
					return nil, err
				}
				slowestDrain, slowestRejoin = max(slowestDrain, drain), max(slowestRejoin, rejoin)
				rejoins = append(rejoins, b.LastRequest()) // its first request back, within the 2 ms poll
				restarts++
			}
		}
	})
	if err != nil {
		return LoadRun{}, 0, err
	}
	lr := lp.run
	lr.Changes, lr.SlowestDrainMs, lr.SlowestRejoinMs = 2*restarts, ms(slowestDrain), ms(slowestRejoin)
	return lr, restarts, nil
}

// drainQuiet: a deregistered backend is drained once it has had no request
// for this long.
const drainQuiet = 300 * time.Millisecond

// restartBackend restarts b as a rolling restart does: deregister, drain,
// graceful stop, start, register (check passing), wait for traffic. It
// returns how long the drain took (less drainQuiet) and how long after its
// registration the backend got its first request.
func (r *runner) restartBackend(ctx context.Context, st *Stack, b *Backend, cycle int) (drain, rejoin time.Duration, err error) {
	if err := st.Deregister(b.ID); err != nil {
		return 0, 0, err
	}
	t := time.Now()
	if !poll(ctx, 20*time.Second, 5*time.Millisecond, func() bool { return time.Since(b.LastRequest()) >= drainQuiet }) {
		return 0, 0, fmt.Errorf("cycle %d: %s still receives requests 20s after deregistering", cycle, b.ID)
	}
	drain = time.Since(t) - drainQuiet
	b.Stop()
	if err := b.Start(); err != nil {
		return 0, 0, fmt.Errorf("cycle %d: restart %s: %w", cycle, b.ID, err)
	}
	served := b.Served()
	t = time.Now()
	if err := st.Register(service, b, r.secs(r.p.CheckInterval)); err != nil {
		return 0, 0, err
	}
	if !poll(ctx, 20*time.Second, 2*time.Millisecond, func() bool { return b.Served() > served }) {
		return 0, 0, fmt.Errorf("cycle %d: %s gets no traffic 20s after registering; %s", cycle, b.ID, st.diagnose(b))
	}
	return drain, time.Since(t), nil
}

// eventWindow: requests due this soon after a registry event count as
// near it (LoadRun.NearEvent).
const eventWindow = 100 * time.Millisecond

func (lr *LoadRun) splitByEvents(reqs []Request, from, to time.Time, events []time.Time) {
	near, away := SplitByEvents(reqs, from, to, events, eventWindow)
	n, a := Summarize(near), Summarize(away)
	lr.NearEvent, lr.AwayFromEvent, lr.EventWindowMs = &n, &a, ms(eventWindow)
}

func (r *runner) secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// warmUp starts the steady load on the stack just set up, lets it run for
// -warmup seconds, then for -baseline seconds, and returns it with when the
// baseline began; the caller stops it, on every path. The first
// requests on a fresh nginx and fresh backends open connections and warm
// the workers' Lua code: one run's baseline p99 read 184.8 ms where the
// others read 2.5–4.3 ms, and a ratio against it "met" its target at
// 0.04×. So that time is left out of the baseline, in every mode alike.
func (r *runner) warmUp(ctx context.Context, st *Stack) (*Load, time.Time, error) {
	load := StartLoad(st.ProxyURL, service, r.p.Rate, r.p.PostEvery)
	base := load.Start.Add(r.secs(r.p.WarmupSeconds))
	return load, base, backoff.Sleep(ctx, time.Until(base)+r.secs(r.p.BaselineSeconds))
}

// loadPhase is one run of a load scenario, as underLoad measured it.
type loadPhase struct {
	run                   LoadRun   // warm-up, baseline and phase figures
	reqs                  []Request // every request of the run
	loadStart, start, end time.Time // the load's start; the phase
}

// underLoad runs phase, which makes a load scenario's registry changes and
// returns when each took effect, under steady load after warmUp; then it
// waits settle for the requests the last change disturbed, stops the load
// and summarises the warm-up, the baseline and the phase (split around the
// changes), pooling the latencies of the last two for scen's percentiles.
func (r *runner) underLoad(ctx context.Context, st *Stack, scen, mode string, run int, settle time.Duration,
	phase func() (events []time.Time, err error)) (loadPhase, error) {
	load, base, err := r.warmUp(ctx, st)
	defer load.Stop() // for the early returns; Stop may be called again
	if err != nil {
		return loadPhase{}, err
	}
	start := time.Now()
	events, err := phase()
	if err != nil {
		return loadPhase{}, err
	}
	end := time.Now()
	if err := backoff.Sleep(ctx, settle); err != nil {
		return loadPhase{}, err
	}
	reqs := load.Stop()
	lr := LoadRun{Run: run, Warmup: Stats(reqs, load.Start, base),
		Baseline: Stats(reqs, base, start), During: Stats(reqs, start, end)}
	lr.splitByEvents(reqs, start, end, events)
	r.pooled(scen, mode, "baseline", Latencies(reqs, base, start))
	r.pooled(scen, mode, "during", Latencies(reqs, start, end))
	return loadPhase{run: lr, reqs: reqs, loadStart: load.Start, start: start, end: end}, nil
}

func (r *runner) addLoadRun(m *map[string]*LoadMode, scen, mode string, lr LoadRun) {
	if *m == nil {
		*m = map[string]*LoadMode{}
	}
	lm := (*m)[mode]
	if lm == nil {
		lm = &LoadMode{}
		(*m)[mode] = lm
	}
	lm.Runs = append(lm.Runs, lr)
	warm, base, during := lm.parts()
	lm.Warmup = Merge(warm, nil)
	lm.Baseline = Merge(base, r.pool[scen][mode]["baseline"])
	lm.During = Merge(during, r.pool[scen][mode]["during"])
}

// crash: one of three backends dies abruptly (listener and connections
// closed, as by SIGKILL) without deregistering; Consul's HTTP check finds
// it. nginx gets max_fails=0 here, so that it tries the dead server on
// every turn until it is removed and its removal shows in $upstream_addr.
func (r *runner) crash(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error {
	load := StartLoad(st.ProxyURL, service, r.p.Rate, r.p.PostEvery)
	defer load.Stop() // for the early returns; Stop may be called again
	if err := backoff.Sleep(ctx, r.secs(r.p.BaselineSeconds)); err != nil {
		return err
	}
	dead := bs[1]
	var critical atomic.Int64
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t0 := time.Now()
	dead.Crash()
	wg.Go(func() {
		poll(watchCtx, time.Minute, 10*time.Millisecond, func() bool {
			checks, _, err := st.Consul.Health().Checks(service, nil)
			if err != nil {
				return false
			}
			for _, c := range checks {
				if c.ServiceID == dead.ID && c.Status == api.HealthCritical {
					critical.Store(int64(time.Since(t0)))
					return true
				}
			}
			return false
		})
	})
	window := max(3*r.secs(r.p.CheckInterval), 4*time.Second)
	err := backoff.Sleep(ctx, window)
	stopWatch()
	wg.Wait()
	if err != nil {
		return err
	}
	reqs := load.Stop()
	cr := CrashRun{Run: run, CriticalMs: ms(time.Duration(critical.Load()))}
	end := t0.Add(window)
	var last time.Time
	var lat []float64
	errs := map[string]int{}
	for _, q := range reqs {
		if q.Sched.Before(t0) || !q.Sched.Before(end) {
			continue
		}
		cr.Requests++
		lat = append(lat, ms(q.Latency()))
		if q.Post {
			cr.POSTs++
		} else {
			cr.GETs++
		}
		if q.Failed() {
			errs[q.describe()]++
			if q.Post {
				cr.FailedPOST++
			} else {
				cr.FailedGET++
			}
		}
		if strings.Contains(q.Upstream, dead.Addr()) && q.End.After(last) {
			last = q.End
		}
	}
	cr.Latency = Summarize(lat)
	cr.Errors = topErrors(errs, 5)
	if !last.IsZero() {
		cr.RemovedMs = ms(last.Sub(t0))
	}
	cr.Removed = last.Before(end.Add(-time.Second))
	if r.res.Crash == nil {
		r.res.Crash = map[string]*CrashMode{}
	}
	if r.res.Crash[mode] == nil {
		r.res.Crash[mode] = &CrashMode{}
	}
	r.res.Crash[mode].Runs = append(r.res.Crash[mode].Runs, cr)
	r.logf("    %s run %d: %d failed GETs, %d failed POSTs of %d; last request to the dead server %.0f ms after the crash (Consul critical after %.0f ms)",
		mode, run, cr.FailedGET, cr.FailedPOST, cr.Requests, cr.RemovedMs, cr.CriticalMs)
	return nil
}

// churn: four backends, one check flipped every 1/ChurnPerSecond under
// steady keep-alive load.
func (r *runner) churn(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error {
	changes := 0
	lp, err := r.underLoad(ctx, st, ScenarioChurn, mode, run, 2*time.Second, func() ([]time.Time, error) {
		every := time.Duration(float64(time.Second) / r.p.ChurnPerSecond)
		var flips []time.Time
		until := time.Now().Add(r.secs(r.p.ChurnSeconds))
		tick := time.NewTicker(every)
		defer tick.Stop()
		for time.Now().Before(until) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
			b := bs[(changes/2)%len(bs)]
			status := api.HealthCritical
			if changes%2 == 1 {
				status = api.HealthPassing
			}
			if err := st.SetTTL(b.ID, status); err != nil {
				return nil, err
			}
			flips = append(flips, time.Now())
			changes++
		}
		return flips, nil
	})
	if err != nil {
		return err
	}
	lr, reqs := lp.run, lp.reqs
	lr.Changes = changes
	lr.PhaseStartS, lr.PhaseEndS = lp.start.Sub(lp.loadStart).Seconds(), lp.end.Sub(lp.loadStart).Seconds()
	at := make([]float64, len(reqs))
	lat := make([]float64, len(reqs))
	failed := make([]bool, len(reqs))
	for i, q := range reqs {
		at[i] = q.Sched.Sub(lp.loadStart).Seconds()
		lat[i] = ms(q.Latency())
		failed[i] = q.Failed()
	}
	lr.Series = Series(at, lat, failed, 1)
	r.addLoadRun(&r.res.Churn, ScenarioChurn, mode, lr)
	r.logf("    %s run %d: %d changes, %d of %d requests failed, p99 %.1f ms (baseline %.1f ms), %.0f ok/s",
		mode, run, changes, lr.During.Failed, lr.During.Requests, lr.During.Latency.P99, lr.Baseline.Latency.P99, lr.During.OKPerSec)
	return nil
}
