package bench

import (
	"context"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
)

const (
	extNode    = "bench-ext" // catalog node of the instances the scale changes add and remove
	scaleNodes = 100         // catalog nodes holding the scale instances
)

func scaleNode(k int) string { return fmt.Sprintf("bench-ext-%d", k) }

func scaleService(i int) string { return fmt.Sprintf("svc-%04d", i) }

// scale (ours-lua only): Services × Instances instances in Consul before
// the daemon starts; measure the cold sync into nginx, the daemon's
// connections to Consul, its memory, and the CPU time and dyups pushes of
// single-instance changes.
func (r *runner) scale(ctx context.Context, run int) (err error) {
	st, err := NewStack(ctx, r.bin, ModeLua, StackOptions{MaxFails: 1, DictMB: 256, ConsulServer: true, ConsulWatch: r.p.ConsulWatch,
		PerUpstreamFiles: r.p.Store == "directory"})
	if err != nil {
		return err
	}
	defer func() { r.teardown(st, nil, err) }()
	sr := ScaleRun{Run: run, Services: r.p.Services, Instances: r.p.Instances}
	if err := r.fillCatalog(ctx, st, &sr); err != nil {
		return err
	}

	t0 := time.Now()
	if err := st.StartController(); err != nil {
		return err
	}
	pid := st.ControllerPID()
	conns := r.sampleConns(ctx, pid, st.DaemonConsulPort())
	defer conns.stop()
	if err := r.coldSync(ctx, st, t0, &sr); err != nil {
		return err
	}
	if err := r.idleCPU(ctx, pid, &sr); err != nil {
		return err
	}
	if err := r.scaleChanges(ctx, st, pid, &sr); err != nil {
		return err
	}
	sr.MaxConsulConns = conns.stop()

	if r.p.NginxUpdates > 0 {
		if err := r.nginxMemory(ctx, st, &sr); err != nil {
			return err
		}
	}
	if r.profileDir != "" {
		// After the measured changes, so that profiling does not weigh on
		// them: 10 s of the same changes under the CPU profiler.
		if err := r.profileScale(ctx, st.MetricsURL, run, func(k int) error { _, err := r.scaleChange(ctx, st, r.p.ScaleChanges+k); return err }); err != nil {
			return err
		}
	}
	if err := r.daemonMemory(st, pid, &sr); err != nil {
		return err
	}
	if r.res.Scale == nil {
		r.res.Scale = &ScaleResult{}
	}
	r.res.Scale.Runs = append(r.res.Scale.Runs, sr)
	r.logf("    run %d: cold sync %.0f ms, %d Consul connections, RSS %.1f MB (peak %.1f; anonymous %.1f, file %.1f; Go heap in use %.1f, allocated %.1f, runtime total %.1f; stacks %.1f of %d goroutines), CPU/change %.2f ms (raw %.2f, idle %.1f ms/s), pushes/change %.2f, change p50 / p99 %.1f / %.1f ms, service reads/change %.1f, sweeps %d; one file replace here costs %.2f ms of CPU",
		run, sr.ColdSyncMs, sr.MaxConsulConns, sr.RSSMB, sr.PeakRSSMB, sr.RSSAnonMB, sr.RSSFileMB, sr.HeapInuseMB, sr.HeapLiveMB, sr.GoSysMB, sr.StackInuseMB, sr.Goroutines, sr.CPUPerChangeMs, sr.CPUPerChangeRawMs, sr.IdleCPUMsPerS, sr.PushesPerChange, sr.ChangeLatency.P50, sr.ChangeLatency.P99, sr.ServiceReadsPerChange, sr.Sweeps, sr.FileReplaceCPUMs)
	return nil
}

// fillCatalog registers the scale instances (external nodes: no agent
// anti-entropy) and records how long that took and how large Consul's
// checks answer has grown.
func (r *runner) fillCatalog(ctx context.Context, st *Stack, sr *ScaleRun) error {
	t := time.Now()
	if err := registerMany(ctx, st.Consul, sr.Services, sr.Instances); err != nil {
		return err
	}
	sr.RegisterS = time.Since(t).Seconds()
	checks, err := httpDo(ctx, http.DefaultClient, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/health/state/any", st.ConsulPort), "")
	if err != nil {
		return err
	}
	sr.ChecksAnswerKB = float64(len(checks)) / 1024
	r.logf("    %d × %d instances registered in %.1f s; /v1/health/state/any answers %.0f KB", sr.Services, sr.Instances, sr.RegisterS, sr.ChecksAnswerKB)
	return nil
}

// connSampler keeps the most established connections a process has had to
// a port, sampled every 20 ms until stop.
type connSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	most   atomic.Int64
}

func (r *runner) sampleConns(ctx context.Context, pid, port int) *connSampler {
	c := &connSampler{}
	ctx, c.cancel = context.WithCancel(ctx)
	c.wg.Go(func() {
		for ctx.Err() == nil {
			if n, err := r.proc.socketsTo(pid, port); err == nil && int64(n) > c.most.Load() {
				c.most.Store(int64(n))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return c
}

// stop ends the sampling (again: a no-op) and returns the most seen.
func (c *connSampler) stop() int {
	c.cancel()
	c.wg.Wait()
	return int(c.most.Load())
}

// coldSync waits until nginx holds every scale instance (the daemon started
// at t0), then for the daemon's first drift check after it.
func (r *runner) coldSync(ctx context.Context, st *Stack, t0 time.Time, sr *ScaleRun) error {
	want := sr.Services * sr.Instances
	got := 0
	sr.Synced = poll(ctx, 5*time.Minute, 25*time.Millisecond, func() bool {
		d, err := st.apiGet("/detail")
		if err != nil {
			return false
		}
		got = strings.Count(d, "\nserver ") + boolInt(strings.HasPrefix(d, "server "))
		return got >= want
	})
	sr.ColdSyncMs = ms(time.Since(t0))
	if !sr.Synced {
		return fmt.Errorf("nginx holds %d of %d servers 5 min after the daemon started; log:\n%s", got, want, st.ControllerLog())
	}
	r.logf("    cold sync of %d servers into nginx: %.0f ms", want, sr.ColdSyncMs)
	// The first drift check after the sync (5 s on) parses every upstream
	// of /detail once: it belongs to the sync, not to idling.
	return backoff.Sleep(ctx, 6*time.Second)
}

// idleCPU measures the daemon's CPU time per second while nothing changes
// (the drift check reads /detail every 5 s: part of the idle cost, not of
// a change's).
func (r *runner) idleCPU(ctx context.Context, pid int, sr *ScaleRun) error {
	idle := 2 * 5 * time.Second
	if r.p.Quick {
		idle = 5 * time.Second
	}
	c0, err := r.proc.cpu(pid)
	if err != nil {
		return err
	}
	i0 := time.Now()
	if err := backoff.Sleep(ctx, idle); err != nil {
		return err
	}
	c1, _ := r.proc.cpu(pid)
	sr.IdleCPUMsPerS = ms(c1-c0) / time.Since(i0).Seconds()
	return nil
}

// scaleChanges makes ScaleChanges single-instance changes one after the
// other and records their latency, the daemon's CPU time for them (raw,
// and less its idle rate), its dyups pushes and its Consul reads.
func (r *runner) scaleChanges(ctx context.Context, st *Stack, pid int, sr *ScaleRun) error {
	m0, err := scrape(st.MetricsURL)
	if err != nil {
		return err
	}
	cpuA, _ := r.proc.cpu(pid)
	tA := time.Now()
	var lat []float64
	for k := range r.p.ScaleChanges {
		d, err := r.scaleChange(ctx, st, k)
		if err != nil {
			return err
		}
		lat = append(lat, ms(d))
	}
	tB := time.Now()
	cpuB, _ := r.proc.cpu(pid)
	m1, err := scrape(st.MetricsURL)
	if err != nil {
		return err
	}
	sr.Changes = r.p.ScaleChanges
	sr.ChangesSeconds = tB.Sub(tA).Seconds()
	sr.CPUChangesMs = ms(cpuB - cpuA)
	sr.CPUPerChangeRawMs = sr.CPUChangesMs / float64(sr.Changes)
	sr.CPUPerChangeMs = PerChange(sr.CPUChangesMs, sr.IdleCPUMsPerS, sr.ChangesSeconds, sr.Changes)
	sr.Pushes = dyupsPushes(m1) - dyupsPushes(m0)
	sr.PushesPerChange = float64(sr.Pushes) / float64(sr.Changes)
	sr.ChangeLatency = Summarize(lat)
	sr.ServiceReadsPerChange = (metricSum(m1, "swallowkeeper_consul_service_reads_total") - metricSum(m0, "swallowkeeper_consul_service_reads_total")) / float64(sr.Changes)
	sr.Sweeps = int(metricSum(m1, "swallowkeeper_consul_sweeps_total") - metricSum(m0, "swallowkeeper_consul_sweeps_total"))
	sr.FileReplaceCPUMs = fileReplaceCPU(filepath.Dir(st.File), true) // both stores write through spares
	return nil
}

// fileReplaceCPU is the CPU (this process's utime+stime) of one atomic
// replace of a 600-byte file in dir, as the daemon's store does it on
// each change: through the file's spare (both stores since 2026-12-08),
// written over under a write lease, fsynced, exchanged with the file,
// then the directory fsynced (internal/store/spare.go); without spare, a
// temp file fsynced, renamed in and the directory fsynced; over 50
// replaces: the kernel's part of a change's CPU on this disk,
// which no change to the daemon removes.
func fileReplaceCPU(dir string, spare bool) float64 {
	const n = 50
	data := make([]byte, 600)
	target := filepath.Join(dir, ".bench-replace")
	spareName := target + ".spare"
	defer os.Remove(target)
	defer os.Remove(spareName)
	if spare {
		for _, p := range []string{target, spareName} {
			if os.WriteFile(p, data, 0o644) != nil {
				return 0
			}
		}
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0 := cpu()
	for range n {
		if spare {
			f, err := os.OpenFile(spareName, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return 0
			}
			_, err = unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_WRLCK)
			f.WriteAt(data, 0) // same length: nothing to cut; the mode is kept
			if err == nil {
				unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
			}
			f.Sync()
			f.Close()
			if err != nil || unix.Renameat2(unix.AT_FDCWD, spareName, unix.AT_FDCWD, target, unix.RENAME_EXCHANGE) != nil {
				return 0 // no leases or exchange here: the store falls back to new files
			}
		} else {
			f, err := os.CreateTemp(dir, ".bench-replace.tmp-*")
			if err != nil {
				return 0
			}
			f.Write(data)
			f.Sync()
			f.Close()
			if os.Rename(f.Name(), target) != nil {
				os.Remove(f.Name())
				return 0
			}
		}
		if d, err := os.Open(dir); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return ms(cpu()-c0) / n
}

// scaleChange k adds an 11th instance to a service (k even) or removes it
// again, and returns how long nginx's API took to show it.
func (r *runner) scaleChange(ctx context.Context, st *Stack, k int) (time.Duration, error) {
	svc := scaleService((k / 2 * 37) % r.p.Services)
	id := fmt.Sprintf("%s-extra-%d", svc, k/2)
	port := 40000 + k/2
	addr := fmt.Sprintf("server 127.0.0.1:%d\n", port)
	add := k%2 == 0
	var werr error
	if add {
		_, werr = st.Consul.Catalog().Register(catalogInstance(svc, id, "127.0.0.1", port), nil)
	} else {
		_, werr = st.Consul.Catalog().Deregister(&api.CatalogDeregistration{Node: extNode, ServiceID: id}, nil)
	}
	w := time.Now()
	if werr != nil {
		return 0, werr
	}
	if !poll(ctx, 30*time.Second, 2*time.Millisecond, func() bool {
		u, err := st.apiGet("/upstream/" + svc)
		return err == nil && strings.Contains(u, addr) == add
	}) {
		return 0, fmt.Errorf("change %d (%s %s) not in nginx after 30s", k, svc, id)
	}
	return time.Since(w), nil
}

// daemonMemory records the daemon's resident set (and its peak, anonymous
// and file-backed parts) and the Go runtime's heap figures.
func (r *runner) daemonMemory(st *Stack, pid int, sr *ScaleRun) error {
	mem, err := r.proc.memory(pid)
	if err != nil {
		return err
	}
	sr.RSSMB, sr.PeakRSSMB, sr.RSSAnonMB, sr.RSSFileMB = mem.RSS, mem.HWM, mem.Anon, mem.File
	if m, err := scrape(st.MetricsURL); err == nil {
		sr.HeapInuseMB = metricSum(m, "go_memstats_heap_inuse_bytes") / mib
		sr.HeapLiveMB = metricSum(m, "go_memstats_heap_alloc_bytes") / mib
		sr.GoSysMB = metricSum(m, "go_memstats_sys_bytes") / mib
		sr.StackInuseMB = metricSum(m, "go_memstats_stack_inuse_bytes") / mib
		sr.Goroutines = int(metricSum(m, "go_goroutines"))
	}
	return nil
}

// nginxMemory POSTs r.p.NginxUpdates upstream updates straight to nginx's
// dyups API, over 100 upstreams the daemon does not own (1–3 servers each,
// changing every time), then DELETEs them, and records nginx's memory
// before and after: a leak in the Lua module or nginx would show as growth.
// Warm-up rounds of a tenth as many updates, and /detail read over fresh
// connections, come before the first sample, until memory at rest stops
// rising: a worker's memory first rises to a plateau once it has built its
// first large answers (the allocators keep what they took), which is no
// leak: in a run without the warm-up one worker went from 7.1 to 8.9 MB of
// anonymous memory over the updates while the other, already there,
// stayed at 9.0.
func (r *runner) nginxMemory(ctx context.Context, st *Stack, sr *ScaleRun) error {
	master := st.nginx.cmd.Process.Pid
	const names = 100
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	do := func(method, path, body string) error {
		_, err := httpDo(ctx, client, method, st.APIURL+path, body)
		return err
	}
	// updates POSTs n updates and DELETEs the upstreams again.
	updates := func(n int) error {
		var (
			next    atomic.Int64
			failed  atomic.Bool
			errOnce sync.Once
			first   error
			wg      sync.WaitGroup
		)
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil && !failed.Load() {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					var body strings.Builder
					for k := range 1 + i%3 {
						fmt.Fprintf(&body, "server 127.0.%d.%d:%d weight=%d max_fails=1 fail_timeout=10s;\n", 1+k, 1+i%250, 20000+i%1000, 1+i%5)
					}
					if err := do(http.MethodPost, fmt.Sprintf("/upstream/bench-mem-%d", i%names), body.String()); err != nil {
						errOnce.Do(func() { first = err })
						failed.Store(true)
					}
				}
			})
		}
		wg.Wait()
		if first != nil {
			return fmt.Errorf("nginx updates: %w", first)
		}
		for k := range min(n, names) { // the names the updates made: fewer when n < names
			if err := do(http.MethodDelete, fmt.Sprintf("/upstream/bench-mem-%d", k), ""); err != nil {
				return fmt.Errorf("nginx updates: %w", err)
			}
		}
		return nil
	}
	// One round did not always suffice: a run started at 28.0 MB and ended
	// at 31.8, where the other runs of the same code started at 29.9 and
	// 30.7.
	var before, luaBefore float64
	var rounds []float64
	for round := 1; ; round++ {
		if err := updates(r.p.NginxUpdates / 10); err != nil {
			return err
		}
		for range 8 { // each on a new connection (apiGet), so every worker answers some
			if _, err := st.apiGet("/detail"); err != nil {
				return err
			}
		}
		pss, lua, err := settledPSS(ctx, r.proc, st, master)
		if err != nil {
			return err
		}
		rounds = append(rounds, pss)
		settled := round > 1 && pss <= before*(1+warmupSettled)
		before, luaBefore = pss, lua
		if settled || round == warmupRounds {
			break
		}
	}
	sr.NginxWarmupMB = rounds
	t := time.Now()
	if err := updates(r.p.NginxUpdates); err != nil {
		return err
	}
	sr.NginxUpdatesS = time.Since(t).Seconds()
	if err := backoff.Sleep(ctx, time.Second); err != nil {
		return err
	}
	after, luaAfter, err := settledPSS(ctx, r.proc, st, master)
	if err != nil {
		return err
	}
	sr.NginxUpdates, sr.NginxPSSStartMB, sr.NginxPSSEndMB = r.p.NginxUpdates, before, after
	sr.NginxLuaStartKB, sr.NginxLuaEndKB = luaBefore, luaAfter
	r.logf("    nginx: warm-up rounds at rest %.1f MB; %d updates in %.1f s; PSS %.1f → %.1f MB (%+.1f%%); Lua heaps %.0f → %.0f KB",
		rounds, r.p.NginxUpdates, sr.NginxUpdatesS, before, after, sr.NginxGrowth()*100, luaBefore, luaAfter)
	return nil
}

// settledPSS is nginx's memory (treePSS) at rest: the smallest of
// pssSamples samples a second apart, each right after a full Lua
// collection in every worker, and the workers' Lua heaps at that sample.
// The samples span one drift check of the daemon, which makes every worker
// build its /detail answer (0.85 MB at 10,000 servers): a single sample
// taken just after one read a few percent high or low (-5.7% to +5.5% over
// three runs). Memory that nginx keeps raises every sample.
func settledPSS(ctx context.Context, pr procs, st *Stack, master int) (pssMB, luaKB float64, err error) {
	for i := range pssSamples {
		if i > 0 {
			if err := backoff.Sleep(ctx, time.Second); err != nil {
				return 0, 0, err
			}
		}
		lua, err := collectLua(ctx, pr, st, master)
		if err != nil {
			return 0, 0, err
		}
		pss, err := pr.treePSS(master)
		if err != nil {
			return 0, 0, err
		}
		if i == 0 || pss < pssMB {
			pssMB, luaKB = pss, lua
		}
	}
	return pssMB, luaKB, nil
}

const pssSamples = 6

// The nginx memory warm-up repeats (at most warmupRounds times) until a
// round leaves memory at rest no more than warmupSettled above the last.
const (
	warmupRounds  = 4
	warmupSettled = 0.01
)

// collectLua runs a full Lua collection in every nginx worker (through the
// bench's /_bench/lua-gc location, over fresh connections until each
// worker has answered) and returns the sum of their Lua heaps in KB.
func collectLua(ctx context.Context, pr procs, st *Stack, master int) (float64, error) {
	kids, err := pr.children(master)
	if err != nil {
		return 0, err
	}
	workers := len(kids)
	heaps := map[string]float64{}
	// As many requests at once as there are workers: a worker busy with a
	// long collection (hundreds of ms at 100,000 servers) leaves the next
	// connections to the others, so one after the other could reach the
	// same worker every time.
	for try := 0; try < 200 && (len(heaps) < workers || workers == 0) && ctx.Err() == nil; try++ {
		bodies := make([]string, max(workers, 1))
		errs := make([]error, len(bodies))
		var wg sync.WaitGroup
		for i := range bodies {
			wg.Go(func() { bodies[i], errs[i] = st.apiGet("/_bench/lua-gc") })
		}
		wg.Wait()
		for i, body := range bodies {
			if errs[i] != nil {
				return 0, fmt.Errorf("lua gc: %w", errs[i])
			}
			f := strings.Fields(body)
			if len(f) != 2 {
				return 0, fmt.Errorf("lua gc: answer %q", body)
			}
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("lua gc: answer %q", body)
			}
			heaps[f[0]] = kb
		}
	}
	if len(heaps) < workers {
		return 0, fmt.Errorf("lua gc: %d of %d workers answered", len(heaps), workers)
	}
	total := 0.0
	for _, kb := range heaps {
		total += kb
	}
	return total, nil
}

// profileScale saves a 20 s CPU profile of the daemon at idle (four drift
// checks), a 10 s CPU profile while change runs (k = 0, 1, ...), then a
// heap profile, in r.profileDir; all are served on the daemon's metrics
// listener.
func (r *runner) profileScale(ctx context.Context, metricsURL string, run int, change func(k int) error) error {
	if err := os.MkdirAll(r.profileDir, 0o755); err != nil {
		return err
	}
	base := strings.TrimSuffix(metricsURL, "/metrics")
	idleFile := filepath.Join(r.profileDir, fmt.Sprintf("scale-idle-run%d.pprof", run))
	if err := fetchTo(ctx, base+"/debug/pprof/profile?seconds=20", idleFile); err != nil {
		return fmt.Errorf("idle CPU profile: %w", err)
	}
	r.logf("    idle CPU profile: %s", idleFile)
	cpuFile := filepath.Join(r.profileDir, fmt.Sprintf("scale-cpu-run%d.pprof", run))
	done := make(chan error, 1)
	go func() { done <- fetchTo(ctx, base+"/debug/pprof/profile?seconds=10", cpuFile) }()
	for k := 0; ; k++ {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("CPU profile: %w", err)
			}
			heapFile := filepath.Join(r.profileDir, fmt.Sprintf("scale-heap-run%d.pprof", run))
			if err := fetchTo(ctx, base+"/debug/pprof/heap?gc=1", heapFile); err != nil {
				return fmt.Errorf("heap profile: %w", err)
			}
			r.logf("    profiles of %d changes: %s, %s", k, cpuFile, heapFile)
			return nil
		default:
		}
		if err := change(k); err != nil {
			return err
		}
	}
}

// fetchTo saves the body of a GET of url in file.
func fetchTo(ctx context.Context, url, file string) error {
	b, err := httpDo(ctx, http.DefaultClient, http.MethodGet, url, "")
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// httpDo sends one request and returns the answer's body, or an error
// naming the request unless the status is 200.
func httpDo(ctx context.Context, client *http.Client, method, url, body string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s %s", method, url, resp.Status, b)
	}
	return b, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// registerMany puts n services × per instances into the catalog on one
// external node, through the transaction API: 64 instances (a service and
// a check each; Consul allows 128 operations) per request, 4 requests at a
// time. One registration per request took about a minute for 10,000.
func registerMany(ctx context.Context, c *api.Client, n, per int) error {
	// The instances are spread over scaleNodes nodes, as over a fleet of
	// hosts: Consul's catalog writes slow down with the number of services
	// on one node (17 to 29 s to fill the catalog with all 10,000 on one
	// node, about 2 s over 100).
	nodes := api.TxnOps{&api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: extNode, Address: "127.0.0.1"}}}}
	for k := range scaleNodes {
		nodes = append(nodes, &api.TxnOp{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: scaleNode(k), Address: "127.0.0.1"}}})
	}
	if err := txn(ctx, c, nodes); err != nil {
		return fmt.Errorf("register %d nodes: %w", len(nodes), err)
	}
	const batch = 64
	batches := make(chan api.TxnOps)
	var (
		firstErr error
		failed   atomic.Bool
		once     sync.Once
		wg       sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for ops := range batches {
				if err := txn(ctx, c, ops); err != nil {
					once.Do(func() { firstErr = err })
					failed.Store(true)
				}
			}
		})
	}
	var ops api.TxnOps
	for s := 0; s < n && ctx.Err() == nil && !failed.Load(); s++ {
		for i := range per {
			reg := catalogInstance(scaleService(s), fmt.Sprintf("%s-%d", scaleService(s), i),
				fmt.Sprintf("127.0.%d.%d", 1+s/250, 1+s%250), 10000+i)
			node := scaleNode((s*per + i) % scaleNodes)
			ops = append(ops,
				&api.TxnOp{Service: &api.ServiceTxnOp{Verb: api.ServiceSet, Node: node, Service: *reg.Service}},
				&api.TxnOp{Check: &api.CheckTxnOp{Verb: api.CheckSet, Check: api.HealthCheck{Node: node, CheckID: reg.Check.CheckID,
					Name: reg.Check.Name, Status: reg.Check.Status, ServiceID: reg.Check.ServiceID, ServiceName: reg.Check.ServiceName}}})
			if len(ops) == 2*batch {
				batches <- ops
				ops = nil
			}
		}
	}
	if len(ops) > 0 && !failed.Load() {
		batches <- ops
	}
	close(batches)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("register: %w", firstErr)
	}
	return ctx.Err()
}

// txn runs ops as one Consul transaction; a refusal is an error too.
func txn(ctx context.Context, c *api.Client, ops api.TxnOps) error {
	ok, resp, _, err := c.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err == nil && !ok {
		err = fmt.Errorf("transaction refused: %v", resp.Errors)
	}
	return err
}

// catalogInstance is an instance on the external node with a passing
// check of its own, as an instance registered through an agent has.
func catalogInstance(svc, id, addr string, port int) *api.CatalogRegistration {
	return &api.CatalogRegistration{Node: extNode, Address: "127.0.0.1", SkipNodeUpdate: true,
		Service: &api.AgentService{ID: id, Service: svc, Address: addr, Port: port},
		Check: &api.AgentCheck{Node: extNode, CheckID: "service:" + id, Name: "bench check", Status: api.HealthPassing,
			ServiceID: id, ServiceName: svc}}
}
