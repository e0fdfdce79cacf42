package faults

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestNginxRestartUnderLoad: traffic flows while nginx is stopped (a change
// arrives meanwhile) and started again, then while its workers are killed
// with SIGKILL, one at a time and all at once. nginx starts from the
// persisted file, which already holds the change, and routes to the
// desired set within one reconcile round; requests fail only while nginx
// or a worker was down.
func TestNginxRestartUnderLoad(t *testing.T) {
	const reconcile = time.Second
	const workers = 2 // testenv.StartNginx's default
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	metrics := testenv.Addr(testenv.FreePort(t))
	cfg := writeConfig(t, daemonConfig{Consul: c.HTTPAddr(), File: file, Target: ng.APIURL(), Metrics: metrics, Reconcile: reconcile})
	bs := []*backend{startBackend(t, "web-1"), startBackend(t, "web-2"), startBackend(t, "web-3")}
	for _, b := range bs {
		c.Register(t, "web", b.ID, "127.0.0.1", b.Port, nil, nil)
	}
	d := startDaemon(t, cfg, metrics)
	waitRoutes(t, ng, d, "web", 20*time.Second, "web-1", "web-2", "web-3")
	ctx := context.Background()

	l := startLoad(ng, "web", 100, 4)
	time.Sleep(2 * time.Second)
	m0 := d.scrape(t)
	var windows []window

	// nginx stops; web-3 leaves while it is down: the daemon persists the
	// change (nothing to push to) and retries the push.
	downStart := time.Now()
	ng.Stop(t)
	c.Deregister(t, "web-3")
	want := []string{bs[0].Addr(), bs[1].Addr()}
	slices.Sort(want)
	persisted, ok := waitFor(ctx, 10*time.Second, func() bool {
		st, err := upstream.ParseFile(must(os.ReadFile(file)))
		if err != nil {
			return false
		}
		var got []string
		for _, s := range st["web"].Servers {
			got = append(got, s.Addr.String())
		}
		return slices.Equal(got, want)
	})
	if !ok {
		t.Fatalf("the change was not persisted while nginx was down; log:\n%s", d.log.String())
	}
	time.Sleep(2 * time.Second)
	during := d.status(t)
	ng.Start(t)
	up := time.Now()
	windows = append(windows, window{"nginx down", downStart, up})

	// Within one reconcile round nginx holds and routes to the desired set,
	// and the daemon reports the target in sync.
	held, ok := waitFor(ctx, reconcile+time.Second, func() bool {
		addrs, _, err := detailAddrs(ng, "web")
		return err == nil && slices.Equal(addrs, want)
	})
	if !ok {
		addrs, _, err := detailAddrs(ng, "web")
		t.Fatalf("nginx holds %v (%v) %v after its restart, want %v", addrs, err, held, want)
	}
	waitRoutes(t, ng, d, "web", reconcile+time.Second, "web-1", "web-2")
	routed := time.Since(up)
	// The daemon's own retry lands within its push backoff cap (5s).
	inSync, ok := waitFor(ctx, 5*time.Second+reconcile, func() bool {
		st := d.status(t)
		return len(st.Targets) == 1 && st.Targets[0].InSync && st.Targets[0].LastSync.After(up)
	})
	if !ok {
		t.Errorf("the daemon did not sync nginx within %v of its restart; log:\n%s", inSync, d.log.String())
	}
	if routed > reconcile+time.Second {
		t.Errorf("nginx routed to the desired set only %v after its restart (reconcile interval %v)", routed, reconcile)
	}
	figure(t, "daemon /status while nginx was down: in_sync=%v (last error %q)", during.Targets[0].InSync, during.Targets[0].LastError)
	if during.Targets[0].InSync || during.Targets[0].LastError == "" {
		t.Errorf("while its push was being retried the target showed in_sync=%v, last error %q; want out of sync with the error", during.Targets[0].InSync, during.Targets[0].LastError)
	}
	figure(t, "nginx down %v; the change made meanwhile was persisted %v after it; after the restart nginx held the desired set in %v, routed to it in %v, the daemon's retried push succeeded after %v (reconcile %v)",
		up.Sub(downStart).Round(time.Millisecond), persisted.Round(time.Millisecond), held.Round(time.Millisecond),
		routed.Round(time.Millisecond), inSync.Round(time.Millisecond), reconcile)

	// Workers die with SIGKILL under load: one at a time, then all at once.
	kills := 0
	killWorkers := func(victims []int) {
		t.Helper()
		start := time.Now()
		for _, pid := range victims {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 worker %d: %v", pid, err)
			}
			kills++
		}
		if _, ok := waitFor(ctx, 10*time.Second, func() bool {
			pids := ng.WorkerPIDs()
			if len(pids) != workers {
				return false
			}
			for _, p := range pids {
				if slices.Contains(victims, p) {
					return false
				}
			}
			return true
		}); !ok {
			t.Fatalf("nginx did not replace workers %v; error log:\n%s", victims, ng.ErrorLog())
		}
		windows = append(windows, window{"worker killed", start, time.Now()})
		time.Sleep(time.Second)
	}
	for range 3 {
		pids := ng.WorkerPIDs()
		killWorkers(pids[:1])
	}
	killWorkers(ng.WorkerPIDs())
	// The shared dict outlives the workers: the desired set is still
	// routed, and a new change still arrives.
	waitRoutes(t, ng, d, "web", reconcile+time.Second, "web-1", "web-2")
	c.Register(t, "web", "web-3", "127.0.0.1", bs[2].Port, nil, nil)
	joined := waitRoutes(t, ng, d, "web", 5*time.Second, "web-1", "web-2", "web-3")
	time.Sleep(time.Second)

	recs := l.finish()
	m1 := d.scrape(t)
	failedIn := map[string]int{}
	var outside []request
	for _, r := range failures(recs) {
		in := ""
		for _, w := range windows {
			if r.overlaps(w) {
				in = w.what
				break
			}
		}
		if in == "" {
			outside = append(outside, r)
		} else {
			failedIn[in]++
		}
	}
	figure(t, "%d worker SIGKILLs; a change after them reached traffic in %v", kills, joined.Round(time.Millisecond))
	figure(t, "requests through nginx: %d sent; failed while nginx was down: %d; while a worker was killed: %d; failed outside those windows: %d",
		len(recs), failedIn["nginx down"], failedIn["worker killed"], len(outside))
	figure(t, "daemon: %v dyups requests retried, %v drift repairs, %v pushes in all during the test",
		m1.sum("swallowkeeper_dyups_requests_total", `outcome="retryable"`)-m0.sum("swallowkeeper_dyups_requests_total", `outcome="retryable"`),
		m1.sum("swallowkeeper_dyups_drift_repairs_total")-m0.sum("swallowkeeper_dyups_drift_repairs_total"),
		m1.pushes()-m0.pushes())
	if len(outside) > 0 {
		var first []string
		for _, r := range outside[:min(len(outside), 5)] {
			first = append(first, r.start.Format("15:04:05.000")+" "+r.err)
		}
		t.Errorf("%d requests failed outside the nginx down and worker kill windows; first:\n%s", len(outside), strings.Join(first, "\n"))
	}
	if !d.running() {
		t.Fatalf("daemon exited; log:\n%s", d.log.String())
	}

	// A graceful stop (SIGTERM) exits 0 and leaves nginx as it is.
	before, err := detail(ng)
	if err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	d.stop(t)
	stopped := time.Since(stopAt)
	if after, err := detail(ng); err != nil || after != before {
		t.Errorf("nginx changed when the daemon stopped (%v):\n%s\nwas:\n%s", err, after, before)
	}
	seen, failed := route(ng, "web", 20)
	if failed > 0 || !slices.Equal(keys(seen), []string{"web-1", "web-2", "web-3"}) {
		t.Errorf("after the daemon stopped, traffic went to %v with %d failures", seen, failed)
	}
	figure(t, "SIGTERM: the daemon exited 0 in %v and nginx kept its upstreams", stopped.Round(time.Millisecond))
}
