package bench

import (
	"fmt"
	"strings"
)

// The report sections of the opt-in scenarios (issue 18).

func renderFanout(w writer, r *Results) {
	f := r.Fanout
	w("One daemon, %d nginx processes (Lua dyups module, 1 worker each, each with its own prefix, API and proxy port on loopback, all listed as the daemon's `targets`). One steady instance; a second registers (TTL check passing) and each target is probed through its proxy over a keep-alive connection, every %g ms, until the new instance answers: the time from the Consul write returning to the start of that probe is the target's figure (\"routes\"), the slowest target's is the change's. Probing every target every millisecond would itself take both cores (20 nginx, the backends and the client), so the probes are spaced; with the round robin over two servers a probe meets the new one at least every other request, so \"routes\" runs up to two probe intervals behind the moment nginx could route it. \"Applied\" is the same taken from nginx's side with no probe involved: each nginx logs its dyups API requests with `$msec` (the end of the request, to the millisecond), and a 1-worker nginx routes the new set from the end of the POST that brings it (its worker checks the shared dict's version on every request). The instance then deregisters and every target is waited for until it routes to the steady one alone again (not timed). %d changes per phase. Then target %d is hung (SIGSTOP of its master and worker: the kernel still accepts connections to its API, nothing answers them) and the same changes are timed on the other targets, for at least %.0f s (more changes if need be), past two of the daemon's default 5 s request timeouts towards a target.\n\n",
		f.Targets, r.Params.FanoutProbeMs, f.Changes, f.HungIndex, fanoutHungFor.Seconds())
	w("| phase | changes | write → last target routes, p50 / p90 / p99 / max | spread (last − first target), p50 / p99 | write → last target applied, p50 / p99 / max | applied spread, p50 / p99 | timeouts | phase took |\n|---|---|---|---|---|---|---|---|\n")
	row := func(name string, p *FanoutPhase, s Summary, whole bool) {
		spread, applied, aspread := "—", "—", "—"
		if whole {
			spread = f1(p.Spread.P50) + " / " + f1(p.Spread.P99) + " ms"
			if p.Applied.N > 0 {
				applied = f1(p.Applied.P50) + " / " + f1(p.Applied.P99) + " / " + f1(p.Applied.Max) + " ms"
				aspread = f1(p.AppliedSpread.P50) + " / " + f1(p.AppliedSpread.P99) + " ms"
			}
		}
		w("| %s | %d | %s / %s / %s / %s ms | %s | %s | %s | %d | %.1f s |\n", name, len(p.Samples), f1(s.P50), f1(s.P90), f1(s.P99), f1(s.Max),
			spread, applied, aspread, p.Timeouts, p.Seconds)
	}
	row(fmt.Sprintf("all %d targets", f.Targets), &f.Normal, f.Normal.Last, true)
	if f.Hung != nil {
		row(fmt.Sprintf("the same changes, target %d left out", f.HungIndex), &f.Normal, f.Normal.LastOthers, false)
		row(fmt.Sprintf("target %d hung, the other %d", f.HungIndex, f.Targets-1), f.Hung, f.Hung.Last, true)
	}
	w("\n")
	if f.Hung != nil {
		w("The daemon's log named the hung target on %d lines", f.HungLogLines)
		if f.HungLogFirst != "" {
			w("; the first: `%s`", strings.ReplaceAll(f.HungLogFirst, "`", "'"))
		}
		w(". The slowest changes of the hung phase, in seconds after the target was stopped (%s UTC): %s.\n\n",
			f.HungAt.UTC().Format("15:04:05.000"), strings.Join(f.Hung.Slowest(5, f.HungAt), "; "))
	}
	var met []string
	for _, t := range r.Targets {
		if t.Scenario == ScenarioFanout {
			met = append(met, fmt.Sprintf("%s: %s (goal %s): %s", t.Name, t.Value, t.Goal, mark(t.Met)))
		}
	}
	if len(met) > 0 {
		w("%s.\n\n", strings.Join(met, "; "))
	}
}

func renderFleet(w writer, r *Results) {
	f := r.Fleet
	w("Fleets of daemons against one Consul server (`-server -bootstrap-expect=1`, data on disk) holding %d services × %d instances (%d checks; `/v1/health/state/any` answers %.1f MB). Each daemon runs the real watch path (Consul reads, engine, persisted file) in reload mode with no target; its reload command appends a byte to a marker file, which tells when it applied a change. The daemons reach Consul through a TCP proxy in the bench that counts the bytes each way and the HTTP request lines by path (query parameter names kept, values dropped). For each fleet size: every daemon starts at once and syncs; after 3 s, 5 s of idling give Consul's idle rates; then %d single-instance changes (an instance added to a service, then removed), each waited for until every daemon applied it, and 1 s after the last. Per change: the bytes Consul served (Consul → daemons) and Consul's CPU time (`utime+stime` of its `/proc/PID/stat`) over that window, less the idle rates, divided by the number of changes; Consul's CPU includes the catalog write itself, the same for every fleet size. \"Per daemon vs a checks answer\" divides the bytes per change by the fleet size and by the size of the whole checks answer, which is what every daemon read on each change before issue 18 (1.0 = no better than that).\n\n",
		f.Services, f.Instances, f.Services*f.Instances+1, float64(f.ChecksAnswerBytes)/(1<<20), r.Params.FleetChanges)
	w("%s With per_service the proxy counts TLS bytes, a little more than the answers inside them.\n\n", consulWatchNote(r.Params.ConsulWatch))
	w("| daemons | cold sync (all) | connections (max) | change → last daemon p50 / p99 | Consul served per change | per daemon vs a checks answer | Consul CPU per change (raw) | Consul idle: bytes/s, CPU | requests per change |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, run := range f.Runs {
		w("| %d | %.1f s | %d | %s / %s ms | %s | %.4f× | %.2f ms (%.2f) | %s/s, %.1f ms/s | %.1f |\n", run.Daemons, run.ColdSyncMs/1000, run.MaxConns,
			f1(run.ChangeLatency.P50), f1(run.ChangeLatency.P99), bytesCell(run.BytesPerChange), f.BytesRatio(run),
			run.CPUPerChangeMs, run.CPURawPerChange, bytesCell(run.IdleBytesPerS), run.IdleCPUMsPerS,
			float64(run.ConsulRequests)/float64(max(run.Changes, 1)))
	}
	if f.Baseline != nil && len(f.Baseline.Runs) > 0 {
		w("\nThe same fleets with the baseline daemon (%s), run right after each size above against the same Consul, and what the daemon measured above costs Consul per change as a ratio to it:\n\n", orDash(f.Baseline.Daemon))
		w("| daemons | baseline: Consul served per change | baseline: Consul CPU per change | bytes, ratio to baseline | CPU, ratio to baseline | baseline: change → last daemon p50 / p99 |\n|---|---|---|---|---|---|\n")
		for _, run := range f.Runs {
			b, ok := f.BaselineOf(run)
			if !ok {
				continue
			}
			w("| %d | %s | %.2f ms | %s | %s | %s / %s ms |\n", run.Daemons, bytesCell(b.BytesPerChange), b.CPUPerChangeMs,
				ratio(run.BytesPerChange, b.BytesPerChange), ratio(run.CPUPerChangeMs, b.CPUPerChangeMs), f1(b.ChangeLatency.P50), f1(b.ChangeLatency.P99))
		}
	}
	w("\nRequests the daemons made during the changes, by path (the most frequent):\n\n| daemons | requests |\n|---|---|\n")
	for _, run := range f.Runs {
		w("| %d | %s |\n", run.Daemons, errorsCell(run.RequestsByPath))
	}
	for _, run := range f.baselineRuns() {
		w("| %d, baseline | %s |\n", run.Daemons, errorsCell(run.RequestsByPath))
	}
	w("\n")
}

// bytesCell prints a byte count in B, KB or MB.
func bytesCell(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

func renderSoak(w writer, r *Results) {
	s := r.Soak
	lr := s.Run
	failed, sent := s.Failed()
	w("ours-lua alone: three backends (HTTP check every %g s) restarted one after the other, as in the rolling restart (deregister → drain → graceful stop → start → register → first request back), without pause for %.0f s, under %d req/s (every %s request a POST); before that %g s of warm-up and %g s of baseline under the same load, whose requests count too.\n\n",
		r.Params.CheckInterval, s.Seconds, s.Rate, ordinal(r.Params.PostEvery), r.Params.WarmupSeconds, r.Params.BaselineSeconds)
	w("| restarts | requests during restarts | failed, all requests (during restarts: GET / POST) | p50 / p99 / max during restarts | p99 baseline | slowest drain | slowest rejoin | errors |\n|---|---|---|---|---|---|---|---|\n")
	w("| %d | %d (≥ %d: %s) | %d of %d (%d / %d) (target 0: %s) | %s / %s / %s ms | %s ms | %.0f ms | %.0f ms | %s |\n\n",
		s.Restarts, lr.During.Requests, targetSoakRequests, mark(lr.During.Requests >= targetSoakRequests),
		failed, sent, lr.During.FailedGET, lr.During.FailedPOST, mark(failed == 0 && sent > 0),
		f1(lr.During.Latency.P50), f1(lr.During.Latency.P99), f1(lr.During.Latency.Max), f1(lr.Baseline.Latency.P99),
		lr.SlowestDrainMs, lr.SlowestRejoinMs, errorsCell(append(append(append([]string{}, lr.Warmup.Errors...), lr.Baseline.Errors...), lr.During.Errors...)))
}
