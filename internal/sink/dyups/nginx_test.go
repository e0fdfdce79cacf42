package dyups

// Tests of the target against a real nginx running SwallowKeeper's Lua
// dyups module (nginx/lua), started by testenv.StartNginx.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// traffic sends requests for one Host through nginx's proxy, each on a new
// connection (so that they spread over the workers), until stopped, and
// counts the answers by backend and the failures.
type traffic struct {
	mu       sync.Mutex
	answers  map[string]int
	failed   int
	failures []string // the first few
	stop     chan struct{}
	done     chan struct{}
}

func startTraffic(t *testing.T, proxyURL, host string) *traffic {
	tr := &traffic{answers: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(tr.done)
		for {
			select {
			case <-tr.stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, proxyURL+"/", nil)
			req.Host = host
			resp, err := c.Do(req)
			var body []byte
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			tr.mu.Lock()
			switch {
			case err != nil:
				tr.fail(err.Error())
			case resp.StatusCode != http.StatusOK:
				tr.fail(fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body)))
			default:
				tr.answers[string(body)]++
			}
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(tr.end)
	return tr
}

func (tr *traffic) fail(why string) {
	tr.failed++
	if len(tr.failures) < 5 {
		tr.failures = append(tr.failures, why)
	}
}

// end stops the traffic and waits for its last request.
func (tr *traffic) end() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

// counts returns the answers from backend id and the failures so far.
func (tr *traffic) counts(id string) (int, int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.answers[id], tr.failed
}

func (tr *traffic) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return fmt.Sprintf("answers %v, %d failed %v", tr.answers, tr.failed, tr.failures)
}

// apiGet returns the answer to GET path of nginx's dyups API.
func apiGet(t *testing.T, ngx *testenv.Nginx, path string) string {
	t.Helper()
	resp, err := http.Get(ngx.APIURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestCaseOnlyRenameFailsNoRequest (issue 13.1, reproduction B on the sink
// side): rn is renamed Rn while traffic for it flows. The POST of Rn
// replaces rn in nginx and no DELETE follows (it would delete Rn), so no
// request fails, and the drift checks after it repair nothing.
func TestCaseOnlyRenameFailsNoRequest(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := testenv.StartBackend(t, "A"), testenv.StartBackend(t, "B")
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{MaxAttempts: 5}), slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tg.Sync(ctx, upstream.State{"rn": named("rn", a.Addr())}); err != nil {
		t.Fatal(err)
	}
	tr := startTraffic(t, ngx.ProxyURL(), "rn")
	waitFor(t, "50 answers from A", func() bool { n, _ := tr.counts("A"); return n >= 50 })

	renamed := upstream.State{"Rn": named("Rn", b.Addr())}
	if err := tg.Sync(ctx, renamed); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := tg.Reconcile(ctx, renamed); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := tr.counts("B"); n < 200; n, _ = tr.counts("B") {
		if time.Now().After(deadline) {
			t.Fatalf("after the rename B answered %d of 200 requests: %v; nginx lists %q", n, tr, apiGet(t, ngx, "/list"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.end()
	if _, failed := tr.counts(""); failed != 0 {
		t.Errorf("requests failed during the rename: %v", tr)
	}
	if st := tg.Status(); st.DriftRepairs != 0 {
		t.Errorf("drift checks after the rename repaired %d upstreams (%v), want none", st.DriftRepairs, st.Drift)
	}
	if got := apiGet(t, ngx, "/list"); got != "Rn\n" {
		t.Errorf("nginx lists %q, want Rn", got)
	}
	t.Logf("rename rn → Rn under traffic: %v", tr)
}

// syncBuffer collects a log that the test reads while it is written.
type syncBuffer = testenv.LogBuffer

// posts counts the POSTs to /upstream/ that nginx logged in its access log.
func posts(t *testing.T, ngx *testenv.Nginx) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(ngx.Prefix(), "access.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte(`"POST /upstream/`))
}

// TestWorkerWatchPushesAgainOnLuaNginx (issue 13.7, the mechanism): with
// targets[].nginx_pid set, a worker killed with SIGKILL and replaced makes
// the target post every upstream again, WorkerReadyDelay (2 s, as real
// dyups needs with dyups_read_msg_timeout 1s) after the new worker
// appeared, within 2 × 1 s + 1 s of the kill; a restart of nginx (a new
// master, which on the Lua plane without a persisted file starts empty)
// does the same. The Lua module itself loses nothing when a worker dies
// (its state is in a shared dict); this tests the watch and the push.
func TestWorkerWatchPushesAgainOnLuaNginx(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{NginxPID: filepath.Join(ngx.Prefix(), "nginx.pid")}),
		slog.New(slog.NewTextHandler(logs, nil)), NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	state := upstream.State{}
	for _, name := range []string{"s1", "s2", "s3"} {
		state[name] = named(name, testenv.StartBackend(t, name).Addr())
	}
	tg.Update(engine.Change{State: state})
	waitFor(t, "the first sync's 3 POSTs", func() bool { return posts(t, ngx) == 3 })

	// kill -9 of a worker.
	before := ngx.WorkerPIDs()
	victim := before[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", victim, err)
	}
	killed := time.Now()
	waitFor(t, "the worker replaced", func() bool {
		pids := ngx.WorkerPIDs()
		return len(pids) == 2 && !slices.Contains(pids, victim)
	})
	deadline := killed.Add(2*time.Second + time.Second) // 2 × dyups_read_msg_timeout + 1 s
	waitFor(t, "every upstream posted again", func() bool { return posts(t, ngx) >= 6 })
	healed := time.Since(killed)
	if time.Now().After(deadline) {
		t.Errorf("pushed again %v after the kill, want within 3s", healed)
	}
	// The Lua plane's replacement serves at once, so the watch may see the
	// crash and the replacement in one look (one push) or in two (two).
	repushes := testutil.ToFloat64(tg.m.repushes.WithLabelValues(tg.url, repushWorker))
	if repushes != 1 && repushes != 2 {
		t.Errorf("swallowkeeper_dyups_worker_repushes_total{reason=worker} = %v, want 1 or 2", repushes)
	}
	waitFor(t, "each push posted every upstream", func() bool { return posts(t, ngx) == 3+3*int(repushes) })
	gone := fmt.Sprintf(`msg="nginx worker gone; pushing every upstream again" target=%s old="%v"`, tg.url, before)
	replaced := fmt.Sprintf(`msg="nginx worker replaced; pushing every upstream again" target=%s old="%v"`, tg.url, before)
	if !strings.Contains(logs.String(), gone) && !strings.Contains(logs.String(), replaced) {
		t.Errorf("log lacks %s or %s:\n%s", gone, replaced, logs)
	}
	t.Logf("worker %d killed; every upstream posted again after %v", victim, healed)

	// A restart: the Lua plane, with no persisted file, starts empty.
	// While nginx is down the watch says why it cannot watch.
	ngx.Stop(t)
	waitFor(t, "the status to say the workers cannot be watched", func() bool {
		return strings.Contains(tg.Status().WatchError, "nginx pid file")
	})
	ngx.Start(t)
	restarted := time.Now()
	if got := apiGet(t, ngx, "/list"); got != "" {
		t.Fatalf("nginx restarted with %q, want nothing", got)
	}
	waitFor(t, "every upstream posted again after the restart", func() bool { return posts(t, ngx) == 3+3*int(repushes)+3 })
	if got := apiGet(t, ngx, "/list"); got != "s1\ns2\ns3\n" {
		t.Errorf("after the restart nginx lists %q, want s1 s2 s3", got)
	}
	if e := tg.Status().WatchError; e != "" {
		t.Errorf("status watch_error %q after nginx came back", e)
	}
	if n := testutil.ToFloat64(tg.m.repushes.WithLabelValues(tg.url, repushRestart)); n != 1 {
		t.Errorf("swallowkeeper_dyups_worker_repushes_total{reason=restart} = %v, want 1", n)
	}
	t.Logf("nginx restarted; every upstream posted again after %v", time.Since(restarted))
}
