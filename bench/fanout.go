package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

// fanTarget is one nginx of the fan-out: Lua dyups, one worker, its own
// prefix, API and proxy ports; every one loads the daemon's file at start.
type fanTarget struct {
	dir      string
	apiLog   string // the API's access log: when each POST ended ($msec)
	apiURL   string
	proxyURL string
	nginx    *proc
	client   *http.Client // keep-alive: one worker answers every probe
}

// startFanTarget starts nginx number i under st.Dir.
func startFanTarget(ctx context.Context, st *Stack, i int) (*fanTarget, error) {
	dir := filepath.Join(st.Dir, fmt.Sprintf("nginx-%02d", i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	t := &fanTarget{dir: dir, apiLog: filepath.Join(dir, "api-access.log"), apiURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), proxyURL: fmt.Sprintf("http://127.0.0.1:%d/", ports[1]),
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}}
	t.nginx, _, err = startNginxIn(ctx, st.bin, dir, fanoutConfText(), true, st.File, 16, ports[0], ports[1])
	if err != nil {
		if t.nginx == nil {
			t = nil // nothing started, nothing to stop
		}
		return t, fmt.Errorf("nginx %d: %w", i, err)
	}
	return t, nil
}

// fanoutConfText is the Lua mode's nginx.conf with one worker, and an
// access log of the dyups API that says when each request ended, to the
// millisecond: a 1-worker nginx routes the new set from the end of the POST
// that brings it (the worker checks the dict's version on every request).
func fanoutConfText() string {
	text := strings.Replace(nginxConfText(ModeLua), "worker_processes 2;", "worker_processes 1;", 1)
	text = strings.Replace(text, "    upstream swallowkeeper_backend {",
		"    log_format sk_api '$msec $request_method $request_uri $status';\n    upstream swallowkeeper_backend {", 1)
	return strings.Replace(text, "        listen 127.0.0.1:{{api}} reuseport;\n",
		"        listen 127.0.0.1:{{api}} reuseport;\n        access_log {{dir}}/api-access.log sk_api;\n", 1)
}

// FirstPost returns when the first "POST uri" answered 200 at or after
// from, in an access log of fanoutConfText's format; ok is false when none
// did.
func FirstPost(log []byte, uri string, from time.Time) (time.Time, bool) {
	for _, l := range strings.Split(string(log), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[1] != http.MethodPost || f[2] != uri || f[3] != "200" {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		at := time.UnixMilli(int64(sec*1000 + 0.5))
		// $msec has millisecond resolution: a POST that ended in the
		// millisecond of from counts.
		if !at.Before(from.Truncate(time.Millisecond)) {
			return at, true
		}
	}
	return time.Time{}, false
}

// signal sends sig to the target's nginx master and worker (its process
// group).
func (t *fanTarget) signal(sig syscall.Signal) error { return syscall.Kill(-t.nginx.pid(), sig) }

// get sends one GET for service through the target's proxy and returns
// the instance that answered ("" on any failure).
func (t *fanTarget) get(ctx context.Context) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.proxyURL, nil)
	req.Host = service
	resp, err := t.client.Do(req)
	if err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// routesExactly waits until the target's answers (over fresh rounds of
// requests) come from exactly want.
func (t *fanTarget) routesExactly(ctx context.Context, want []string, timeout time.Duration) ([]string, bool) {
	want = slices.Sorted(slices.Values(want))
	var got []string
	ok := poll(ctx, timeout, 10*time.Millisecond, func() bool {
		seen := map[string]bool{}
		for range 4*len(want) + 4 {
			b := t.get(ctx)
			if b == "" {
				got = []string{"failed request"}
				return false
			}
			seen[b] = true
		}
		got = slices.Sorted(func(yield func(string) bool) {
			for k := range seen {
				if !yield(k) {
					return
				}
			}
		})
		return slices.Equal(got, want)
	})
	return got, ok
}

// fanout: one daemon pushes to FanoutTargets nginx processes. One steady
// instance (so that a probe meets the new one at least every other request
// of the round robin); a second joins (timed: Consul write → each target's first
// probe answered by it) and leaves again (waited for, not timed),
// FanoutChanges times; then the same with one target hung (SIGSTOP), whose
// neighbours must not notice.
func (r *runner) fanout(ctx context.Context) (err error) {
	st, err := newConsulStack(ctx, r.bin, "fanout", StackOptions{MaxFails: 1})
	if err != nil {
		return err
	}
	var targets []*fanTarget
	bs, err := backends(2)
	if err != nil {
		st.Close()
		return err
	}
	hung := -1
	defer func() {
		if hung >= 0 {
			targets[hung].signal(syscall.SIGCONT)
		}
		st.controller.stop()
		for _, t := range targets {
			t.nginx.stop()
		}
		r.teardown(st, bs, err)
	}()
	for i := range r.p.FanoutTargets {
		t, err := startFanTarget(ctx, st, i)
		if t != nil {
			targets = append(targets, t)
		}
		if err != nil {
			return err
		}
	}
	steady := ids(bs[0])
	for _, b := range bs[:1] {
		if err := st.Register(service, b, 0); err != nil {
			return err
		}
	}
	var urls []string
	for _, t := range targets {
		urls = append(urls, t.apiURL)
	}
	if err := st.startFanoutDaemon(urls); err != nil {
		return err
	}
	t0 := time.Now()
	if err := waitAllRoute(ctx, targets, -1, steady, 60*time.Second); err != nil {
		return fmt.Errorf("%w; daemon log:\n%s", err, st.controller.tail())
	}
	r.logf("    %d nginx targets route to %v %v after the daemon started", len(targets), steady, time.Since(t0).Round(time.Millisecond))
	fr := &FanoutResult{Targets: len(targets), Changes: r.p.FanoutChanges}
	r.res.Fanout = fr
	if err := r.fanoutPhase(ctx, st, targets, bs, -1, 0, &fr.Normal); err != nil {
		return err
	}
	fr.HungIndex = len(targets) / 2
	fr.Normal.Summarize(fr.HungIndex)
	r.logf("    all targets: write → last target p50 %.1f / p99 %.1f ms, spread p50 %.1f / p99 %.1f ms, %d timeouts",
		fr.Normal.Last.P50, fr.Normal.Last.P99, fr.Normal.Spread.P50, fr.Normal.Spread.P99, fr.Normal.Timeouts)
	if len(targets) < 2 {
		return nil
	}
	hung = fr.HungIndex
	fr.HungAt = time.Now()
	if err := targets[hung].signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("stop target %d: %w", hung, err)
	}
	fr.Hung = &FanoutPhase{}
	if err := r.fanoutPhase(ctx, st, targets, bs, hung, fanoutHungFor, fr.Hung); err != nil {
		return err
	}
	fr.Hung.Summarize(hung)
	fr.HungLogLines, fr.HungLogFirst = linesNaming(st.controller.log, targets[hung].apiURL)
	r.logf("    target %d hung for %.1f s: write → last other target p50 %.1f / p99 %.1f ms (without it %.1f / %.1f), %d timeouts",
		hung, fr.Hung.Seconds, fr.Hung.Last.P50, fr.Hung.Last.P99, fr.Normal.LastOthers.P50, fr.Normal.LastOthers.P99, fr.Hung.Timeouts)
	return nil
}

// startFanoutDaemon starts the daemon with every target's API listed.
func (s *Stack) startFanoutDaemon(urls []string) error {
	cfg := s.daemonConfig("fanout") + "targets:\n"
	for _, u := range urls {
		cfg += "  - url: " + u + "\n"
	}
	return s.startDaemon(cfg)
}

// waitAllRoute waits until every target but skip routes to exactly want.
func waitAllRoute(ctx context.Context, targets []*fanTarget, skip int, want []string, timeout time.Duration) error {
	var wg sync.WaitGroup
	errs := make([]error, len(targets))
	for i, t := range targets {
		if i == skip {
			continue
		}
		wg.Go(func() {
			if got, ok := t.routesExactly(ctx, want, timeout); !ok {
				errs[i] = fmt.Errorf("target %d routes to %v, want %v after %v", i, got, want, timeout)
			}
		})
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// fanoutTimeout bounds the wait for one target to show a change.
const fanoutTimeout = 10 * time.Second

// fanoutHungFor is the shortest hung phase: past two of the daemon's
// default per-request timeouts towards a target (5 s), so that changes
// also land while a push to the hung target times out and is retried.
const fanoutHungFor = 12 * time.Second

// fanoutPhase makes FanoutChanges joins of bs[1] (more if the phase has
// not lasted minFor yet) and times each on every target but skip; after
// each, bs[1] leaves and the phase waits until every probed target has
// dropped it.
func (r *runner) fanoutPhase(ctx context.Context, st *Stack, targets []*fanTarget, bs []*Backend, skip int, minFor time.Duration, ph *FanoutPhase) error {
	c := bs[1]
	steady := ids(bs[0])
	start := time.Now()
	defer func() { ph.Seconds = time.Since(start).Seconds() }()
	for k := 0; k < r.p.FanoutChanges || time.Since(start) < minFor; k++ {
		tw := time.Now()
		if err := st.Register(service, c, 0); err != nil {
			return err
		}
		t0 := time.Now()
		s := FanoutSample{PerTargetMs: make([]float64, len(targets)), AppliedMs: make([]float64, len(targets)), At: tw}
		var wg sync.WaitGroup
		for i, t := range targets {
			s.PerTargetMs[i], s.AppliedMs[i] = -1, -1
			if i == skip {
				continue
			}
			wg.Go(func() {
				for time.Since(t0) < fanoutTimeout && ctx.Err() == nil {
					start := time.Now()
					if t.get(ctx) == c.ID {
						s.PerTargetMs[i] = ms(start.Sub(t0))
						return
					}
					time.Sleep(time.Duration(r.p.FanoutProbeMs * float64(time.Millisecond)))
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for i, t := range targets {
			if i == skip {
				continue
			}
			if b, err := os.ReadFile(t.apiLog); err == nil {
				if at, ok := FirstPost(b, "/upstream/"+service, tw); ok {
					s.AppliedMs[i] = max(ms(at.Sub(t0)), 0)
				}
			}
		}
		for i, v := range s.PerTargetMs {
			if i != skip && v < 0 {
				s.TimedOut = true
				r.logf("    change %d: target %d did not route to %s within %v", k, i, c.ID, fanoutTimeout)
			}
		}
		ph.Samples = append(ph.Samples, s)
		if err := st.Deregister(c.ID); err != nil {
			return err
		}
		if err := waitAllRoute(ctx, targets, skip, steady, 30*time.Second); err != nil {
			return err
		}
		if err := backoff.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// linesNaming counts the lines of the log file that name what, and returns
// the first one: the daemon's word that it met the hung target.
func linesNaming(logPath, what string) (int, string) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, ""
	}
	n, first := 0, ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, what) {
			if n == 0 {
				first = l
			}
			n++
		}
	}
	return n, first
}
