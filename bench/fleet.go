package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

// newConsulStack starts a Stack that holds Consul alone (no nginx, no
// controller): the fan-out and fleet scenarios add their own processes.
func newConsulStack(ctx context.Context, b Binaries, name string, opt StackOptions) (s *Stack, err error) {
	if s, err = newStackDir(name, b, ModeLua, opt, "metrics"); err != nil {
		return nil, err
	}
	defer s.closeIfFailed(&err)
	s.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", s.ports["metrics"])
	if err := os.WriteFile(s.File, []byte("# Empty until the first sync.\n"), 0o644); err != nil {
		return nil, err
	}
	return s, s.startConsul(ctx)
}

// fleetDaemon is one daemon of a fleet, in reload mode with no target: its
// reload command appends a byte to a marker file, so the marker's size
// counts the changes it applied. The watch path (Consul reads, engine,
// file) is the one every mode runs.
type fleetDaemon struct {
	dir, file, marker string
	p                 *proc
}

// fleetDaemonConfig is a fleet daemon's configuration.
func fleetDaemonConfig(consul, file, marker string) string {
	return fmt.Sprintf(`# Written by swallowkeeper-bench (fleet).
%sfile: %s
guards:
  confirm_after: 0s
upstreams:
  allow_addresses: [127.0.0.0/8]
metrics:
  listen: ""
targets: []
reload:
  enabled: true
  test: []
  command: ["/bin/sh", "-c", %s]
  min_wait: 0s
  max_wait: 1s
`, consul, file, strconv.Quote("echo >> "+marker))
}

func startFleetDaemon(daemon, dir, consul string) (*fleetDaemon, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &fleetDaemon{dir: dir, file: filepath.Join(dir, "upstreams.conf"), marker: filepath.Join(dir, "reloads")}
	cfg := filepath.Join(dir, "swallowkeeper.yml")
	if err := os.WriteFile(cfg, []byte(fleetDaemonConfig(consul, d.file, d.marker)), 0o644); err != nil {
		return nil, err
	}
	var err error
	d.p, err = startProc(dir, "swallowkeeper", daemon, "run", "-config", cfg)
	return d, err
}

// applied is how many changes the daemon has applied (reloads run).
func (d *fleetDaemon) applied() int64 {
	fi, err := os.Stat(d.marker)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func stopFleet(ds []*fleetDaemon) {
	var wg sync.WaitGroup
	for _, d := range ds {
		if d != nil && d.p != nil {
			wg.Go(d.p.stop)
		}
	}
	wg.Wait()
}

// fleet: one Consul server (production mode) with FleetServices ×
// Instances instances; for each fleet size, that many daemons sync, idle,
// then follow FleetChanges single-instance changes. Consul's cost is what
// it serves (bytes on a counting proxy between the daemons and it) and its
// CPU time (utime+stime of its process), per change, net of the idle rate.
func (r *runner) fleet(ctx context.Context) (err error) {
	st, err := newConsulStack(ctx, r.bin, "fleet", StackOptions{ConsulServer: true,
		// Every daemon connects from 127.0.0.1 (through the proxy): Consul's
		// default of 200 connections per client address would refuse a
		// large fleet.
		ConsulHCL:   []string{"limits { http_max_conns_per_client = 4000 }"},
		ConsulWatch: r.p.ConsulWatch})
	if err != nil {
		return err
	}
	defer func() { r.teardown(st, nil, err) }()
	fr := &FleetResult{Services: r.p.FleetServices, Instances: r.p.Instances}
	t := time.Now()
	if err := registerMany(ctx, st.Consul, fr.Services, fr.Instances); err != nil {
		return err
	}
	checks, err := httpDo(ctx, http.DefaultClient, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/health/state/any", st.ConsulPort), "")
	if err != nil {
		return err
	}
	fr.ChecksAnswerBytes = int64(len(checks))
	r.logf("    %d × %d instances registered in %.1f s; /v1/health/state/any answers %.0f KB", fr.Services, fr.Instances, time.Since(t).Seconds(), float64(len(checks))/1024)
	proxy, err := newCountingProxy(fmt.Sprintf("127.0.0.1:%d", st.DaemonConsulPort()), st.opt.consulTLS())
	if err != nil {
		return err
	}
	defer proxy.Close()
	r.res.Fleet = fr
	if r.fleetBaseline != "" {
		fr.Baseline = &FleetBaseline{Daemon: version(r.fleetBaseline, "version") + ", " + r.fleetBaseline}
	}
	change := 0
	for _, n := range r.p.FleetDaemons {
		for _, daemon := range []string{r.bin.Daemon, r.fleetBaseline} {
			if daemon == "" {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			base := daemon != r.bin.Daemon
			run, err := r.fleetRun(ctx, st, proxy, daemon, n, fr, &change)
			if err != nil {
				return fmt.Errorf("%d daemons (%s): %w", n, daemon, err)
			}
			which := "measured"
			if base {
				which = "baseline"
				fr.Baseline.Runs = append(fr.Baseline.Runs, run)
			} else {
				fr.Runs = append(fr.Runs, run)
			}
			r.logf("    %d daemons, %s: cold sync %.1f s, %d connections; per change: Consul served %.0f KB (%.4f× a checks answer per daemon), Consul CPU %.2f ms (raw %.2f), %d requests; last daemon p50 %.1f / p99 %.1f ms",
				n, which, run.ColdSyncMs/1000, run.MaxConns, run.BytesPerChange/1024, fr.BytesRatio(run), run.CPUPerChangeMs, run.CPURawPerChange,
				run.ConsulRequests/int64(max(run.Changes, 1)), run.ChangeLatency.P50, run.ChangeLatency.P99)
		}
	}
	return nil
}

// fleetRun starts n daemons against the proxy, waits for their cold sync,
// measures Consul idle, then over the changes; change numbers the catalog
// changes across runs.
func (r *runner) fleetRun(ctx context.Context, st *Stack, proxy *countingProxy, daemon string, n int, fr *FleetResult, change *int) (FleetRun, error) {
	run := FleetRun{Daemons: n}
	pid := st.consul.pid()
	ds := make([]*fleetDaemon, n)
	defer stopFleet(ds)
	proxy.resetMost()
	t0 := time.Now()
	for i := range n {
		d, err := startFleetDaemon(daemon, filepath.Join(st.Dir, fmt.Sprintf("fleet-%d-%d-%d", n, *change, i)), st.consulConfig(proxy.Addr()))
		ds[i] = d
		if err != nil {
			return run, err
		}
	}
	last := scaleService(fr.Services - 1)
	synced := make([]bool, n)
	dead := false
	if !poll(ctx, 5*time.Minute, 50*time.Millisecond, func() bool {
		all := true
		for i, d := range ds {
			if synced[i] {
				continue
			}
			if d.p.exited() {
				dead = true
				return true
			}
			if d.applied() > 0 {
				b, err := os.ReadFile(d.file)
				synced[i] = err == nil && strings.Contains(string(b), last)
			}
			all = all && synced[i]
		}
		return all
	}) || dead {
		for _, d := range ds {
			if d.p.exited() || d.applied() == 0 {
				return run, fmt.Errorf("daemon in %s did not sync; log:\n%s", d.dir, d.p.tail())
			}
		}
		return run, fmt.Errorf("the daemons did not sync within 5 minutes")
	}
	run.ColdSyncMs = ms(time.Since(t0))
	// What the cold sync set going (re-reads, first blocking queries)
	// settles before the idle window.
	if err := backoff.Sleep(ctx, 3*time.Second); err != nil {
		return run, err
	}
	idle := 5 * time.Second
	c0, cpu0 := proxy.snapshot(), r.cpuOf(pid)
	ti := time.Now()
	if err := backoff.Sleep(ctx, idle); err != nil {
		return run, err
	}
	secs := time.Since(ti).Seconds()
	c1, cpu1 := proxy.snapshot(), r.cpuOf(pid)
	run.IdleBytesPerS = float64(c1.since(c0).served) / secs
	run.IdleCPUMsPerS = ms(cpu1-cpu0) / secs

	var lat []float64
	tA := time.Now()
	for range r.p.FleetChanges {
		d, err := r.fleetChange(ctx, st, ds, *change)
		*change++
		if err != nil {
			return run, err
		}
		lat = append(lat, ms(d))
	}
	// Reads a change sets off after the daemons applied it count too.
	if err := backoff.Sleep(ctx, time.Second); err != nil {
		return run, err
	}
	run.ChangesSeconds = time.Since(tA).Seconds()
	c2, cpu2 := proxy.snapshot(), r.cpuOf(pid)
	d := c2.since(c1)
	run.Changes = r.p.FleetChanges
	run.ChangeLatency = Summarize(lat)
	run.BytesServed, run.BytesRequested = d.served, d.requested
	run.ConsulCPUMs = ms(cpu2 - cpu1)
	run.BytesPerChange = PerChange(float64(d.served), run.IdleBytesPerS, run.ChangesSeconds, run.Changes)
	run.CPUPerChangeMs = PerChange(run.ConsulCPUMs, run.IdleCPUMsPerS, run.ChangesSeconds, run.Changes)
	run.CPURawPerChange = PerChange(run.ConsulCPUMs, 0, 0, run.Changes)
	run.ConsulRequests = d.requests()
	run.RequestsByPath = countPaths(d.paths, 8)
	run.MaxConns = int(proxy.most.Load())
	return run, nil
}

// cpuOf is a process's CPU time, 0 when unreadable (the figure then shows
// as 0, not as an error mid-run).
func (r *runner) cpuOf(pid int) time.Duration {
	c, _ := r.proc.cpu(pid)
	return c
}

// fleetChange k adds an instance to a service (k even) or removes it again,
// and returns how long until every daemon had applied it.
func (r *runner) fleetChange(ctx context.Context, st *Stack, ds []*fleetDaemon, k int) (time.Duration, error) {
	svc := scaleService((k / 2 * 37) % r.p.FleetServices)
	id := fmt.Sprintf("%s-fleet-%d", svc, k/2)
	before := make([]int64, len(ds))
	for i, d := range ds {
		before[i] = d.applied()
	}
	var werr error
	if k%2 == 0 {
		_, werr = st.Consul.Catalog().Register(catalogInstance(svc, id, "127.0.0.1", 40000+k/2), nil)
	} else {
		_, werr = st.Consul.Catalog().Deregister(&api.CatalogDeregistration{Node: extNode, ServiceID: id}, nil)
	}
	w := time.Now()
	if werr != nil {
		return 0, werr
	}
	done := make([]bool, len(ds))
	if !poll(ctx, 30*time.Second, time.Millisecond, func() bool {
		all := true
		for i, d := range ds {
			done[i] = done[i] || d.applied() > before[i]
			all = all && done[i]
		}
		return all
	}) {
		late := 0
		for _, ok := range done {
			if !ok {
				late++
			}
		}
		return 0, fmt.Errorf("change %d (%s %s): %d of %d daemons did not apply it within 30s", k, svc, id, late, len(ds))
	}
	return time.Since(w), nil
}
