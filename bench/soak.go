package bench

import (
	"context"
	"time"
)

// soak (ours-lua alone): rolling restarts of the three backends, one after
// the other without pause, for SoakSeconds under SoakRate req/s; every
// request counts (warm-up and baseline too) against the target of 0 failed.
func (r *runner) soak(ctx context.Context) error {
	rate := r.p.Rate
	r.p.Rate = r.p.SoakRate // underLoad's load runs at the runner's rate
	defer func() { r.p.Rate = rate }()
	check := r.secs(r.p.CheckInterval)
	return r.onStack(ctx, stackScenario{StackOptions{MaxFails: 1}, 3, check, func(ctx context.Context, st *Stack, bs []*Backend, mode string, run int) error {
		var until time.Time // set at the first restart, after the warm-up and baseline
		lr, restarts, err := r.restarting(ctx, st, bs, ScenarioSoak, mode, run, func(int) bool {
			if until.IsZero() {
				until = time.Now().Add(r.secs(r.p.SoakSeconds))
			}
			return time.Now().Before(until)
		})
		if err != nil {
			return err
		}
		r.res.Soak = &SoakResult{Rate: r.p.SoakRate, Seconds: r.p.SoakSeconds, Restarts: restarts, Run: lr}
		failed, sent := r.res.Soak.Failed()
		r.logf("    %d restarts in %.0f s: %d of %d requests failed (%d during the restarts), p50 %.1f / p99 %.1f / max %.1f ms (baseline p99 %.1f ms)",
			restarts, lr.During.Seconds, failed, sent, lr.During.Failed, lr.During.Latency.P50, lr.During.Latency.P99, lr.During.Latency.Max, lr.Baseline.Latency.P99)
		return nil
	}}, ModeLua, 1)
}

// runExtra runs one of the opt-in scenarios, once.
func (r *runner) runExtra(ctx context.Context, scen string) {
	var err error
	mode := ModeLua
	switch scen {
	case ScenarioFanout:
		r.logf("%s: one daemon, %d nginx targets (1 worker each), %d changes per phase", scen, r.p.FanoutTargets, r.p.FanoutChanges)
		err = r.fanout(ctx)
	case ScenarioFleet:
		mode = "daemons"
		r.logf("%s: %v daemons against one Consul server with %d services × %d instances, %d changes each", scen, r.p.FleetDaemons, r.p.FleetServices, r.p.Instances, r.p.FleetChanges)
		err = r.fleet(ctx)
	case ScenarioSoak:
		r.logf("%s, %s: rolling restarts for %.0f s at %d req/s", scen, ModeLua, r.p.SoakSeconds, r.p.SoakRate)
		err = r.soak(ctx)
	}
	if err != nil {
		r.fail(scen, mode, 1, err)
	}
}
