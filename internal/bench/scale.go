package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

const extNode = "bench-ext" // catalog node holding the scale instances

func scaleService(i int) string { return fmt.Sprintf("svc-%04d", i) }

// scale (ours-lua only): Services × Instances instances in Consul before
// the daemon starts; measure the cold sync into nginx, the daemon's
// connections to Consul, its memory, and the CPU time and dyups pushes of
// single-instance changes.
func (r *runner) scale(ctx context.Context, run int) (err error) {
	n, per := r.p.Services, r.p.Instances
	st, err := NewStack(ctx, r.bin, ModeLua, StackOptions{MaxFails: 1, DictMB: 256})
	if err != nil {
		return err
	}
	defer func() { r.teardown(st, nil, err) }()
	sr := ScaleRun{Run: run, Services: n, Instances: per}

	// Fill Consul's catalog (external node: no agent anti-entropy).
	t := time.Now()
	if err := registerMany(ctx, st.Consul, n, per); err != nil {
		return err
	}
	sr.RegisterS = time.Since(t).Seconds()
	r.logf("    %d × %d instances registered in %.1f s", n, per, sr.RegisterS)

	// Cold start.
	t0 := time.Now()
	if err := st.StartController(); err != nil {
		return err
	}
	pid := st.ControllerPID()
	var maxConns atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for sampleCtx.Err() == nil {
			if c, err := socketsTo(pid, st.ConsulPort); err == nil && int64(c) > maxConns.Load() {
				maxConns.Store(int64(c))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() { stopSampling(); wg.Wait() }()
	want := n * per
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
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}

	// Idle CPU (the drift check reads /detail every 5 s: part of the
	// idle cost, not of a change's).
	idle := 2 * 5 * time.Second
	if r.p.Quick {
		idle = 5 * time.Second
	}
	c0, err := procCPU(pid)
	if err != nil {
		return err
	}
	i0 := time.Now()
	if err := sleep(ctx, idle); err != nil {
		return err
	}
	c1, _ := procCPU(pid)
	sr.IdleCPUMsPerS = ms(c1-c0) / time.Since(i0).Seconds()

	// Single-instance changes: add an 11th instance to a service, then
	// remove it, each timed until nginx's API shows it.
	m0, err := scrape(st.MetricsURL)
	if err != nil {
		return err
	}
	cpuA, _ := procCPU(pid)
	tA := time.Now()
	var lat []float64
	for k := range r.p.ScaleChanges {
		svc := scaleService((k / 2 * 37) % n)
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
			return werr
		}
		if !poll(ctx, 30*time.Second, 2*time.Millisecond, func() bool {
			u, err := st.apiGet("/upstream/" + svc)
			return err == nil && strings.Contains(u, addr) == add
		}) {
			return fmt.Errorf("change %d (%s %s) not in nginx after 30s", k, svc, id)
		}
		lat = append(lat, ms(time.Since(w)))
	}
	tB := time.Now()
	cpuB, _ := procCPU(pid)
	m1, err := scrape(st.MetricsURL)
	if err != nil {
		return err
	}
	sr.Changes = r.p.ScaleChanges
	sr.ChangesSeconds = tB.Sub(tA).Seconds()
	sr.CPUChangesMs = ms(cpuB - cpuA)
	sr.CPUPerChangeRawMs = sr.CPUChangesMs / float64(sr.Changes)
	sr.CPUPerChangeMs = max(sr.CPUChangesMs-sr.IdleCPUMsPerS*sr.ChangesSeconds, 0) / float64(sr.Changes)
	sr.Pushes = dyupsPushes(m1) - dyupsPushes(m0)
	sr.PushesPerChange = float64(sr.Pushes) / float64(sr.Changes)
	sr.ChangeLatency = Summarize(lat)
	sr.ServiceReadsPerChange = (metricSum(m1, "swallowkeeper_consul_service_reads_total") - metricSum(m0, "swallowkeeper_consul_service_reads_total")) / float64(sr.Changes)
	sr.Sweeps = int(metricSum(m1, "swallowkeeper_consul_sweeps_total") - metricSum(m0, "swallowkeeper_consul_sweeps_total"))
	stopSampling()
	wg.Wait()
	sr.MaxConsulConns = int(maxConns.Load())
	rss, hwm, err := procRSS(pid)
	if err != nil {
		return err
	}
	sr.RSSMB, sr.PeakRSSMB = rss, hwm
	if r.res.Scale == nil {
		r.res.Scale = &ScaleResult{}
	}
	r.res.Scale.Runs = append(r.res.Scale.Runs, sr)
	r.logf("    run %d: cold sync %.0f ms, %d Consul connections, RSS %.1f MB (peak %.1f), CPU/change %.2f ms (raw %.2f, idle %.1f ms/s), pushes/change %.2f, change p50 %.1f ms, service reads/change %.1f, sweeps %d",
		run, sr.ColdSyncMs, sr.MaxConsulConns, sr.RSSMB, sr.PeakRSSMB, sr.CPUPerChangeMs, sr.CPUPerChangeRawMs, sr.IdleCPUMsPerS, sr.PushesPerChange, sr.ChangeLatency.P50, sr.ServiceReadsPerChange, sr.Sweeps)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// registerMany puts n services × per instances into the catalog on one
// external node, 16 registrations at a time.
func registerMany(ctx context.Context, c *api.Client, n, per int) error {
	type job struct{ svc, inst int }
	jobs := make(chan job)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for j := range jobs {
				svc := scaleService(j.svc)
				port := 10000 + j.inst
				_, err := c.Catalog().Register(catalogInstance(svc, fmt.Sprintf("%s-%d", svc, j.inst),
					fmt.Sprintf("127.0.%d.%d", 1+j.svc/250, 1+j.svc%250), port), nil)
				if err != nil {
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
	for s := 0; s < n && ctx.Err() == nil && firstErr == nil; s++ {
		for i := range per {
			jobs <- job{s, i}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("register: %w", firstErr)
	}
	return ctx.Err()
}

// catalogInstance is an instance on the external node with a passing
// check of its own, as an instance registered through an agent has.
func catalogInstance(svc, id, addr string, port int) *api.CatalogRegistration {
	return &api.CatalogRegistration{Node: extNode, Address: "127.0.0.1", SkipNodeUpdate: true,
		Service: &api.AgentService{ID: id, Service: svc, Address: addr, Port: port},
		Check: &api.AgentCheck{Node: extNode, CheckID: "service:" + id, Name: "bench check", Status: api.HealthPassing,
			ServiceID: id, ServiceName: svc}}
}
