//go:build realdyups

package dyups

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// driftLine is the start of the line a drift check logs per upstream it
// found wrong.
const driftLine = "drift: nginx does not hold what it should"

// TestRealDyupsOneDriftOneLogLine (issue 16.9) on real dyups: the target
// runs as the daemon runs it (Run, 2 workers, dyups_read_msg_timeout 1 s
// or SWALLOWKEEPER_REAL_DYUPS_TIMER), with a drift check every 200 ms and
// back to back (every 1 ms), both faster than the workers' timer, so that
// checks read nginx while a worker may not yet have applied the repair.
// Each damage is one drift: an operator's DELETE, an operator's POST of
// another server set, an nginx restart from a stale included file, a
// killed worker. Each must log one drift line, and the next damage of the
// same upstream its own line again.
func TestRealDyupsOneDriftOneLogLine(t *testing.T) {
	for _, resync := range []time.Duration{200 * time.Millisecond, time.Millisecond} {
		t.Run("resync="+resync.String(), func(t *testing.T) { oneDriftOneLine(t, resync) })
	}
}

func oneDriftOneLine(t *testing.T, resync time.Duration) {
	a, b := testenv.StartBackend(t, "A"), testenv.StartBackend(t, "B")
	want := upstream.State{"web": named("web", a.Addr())}
	ngx := startRealDyups(t, realOptions{})
	logs := &testenv.LogBuffer{}
	tg, sent := newRealTarget(t, ngx, Options{Resync: resync}, logs)
	stop, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tg.Run(stop, context.Background()) }()
	t.Cleanup(func() { cancel(); <-done })
	acked := make(chan error, 16)
	tg.Update(engine.Change{State: want, Done: func(err error) { acked <- err }})
	select {
	case err := <-acked:
		if err != nil {
			t.Fatalf("first sync: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("first sync not acknowledged in 15s; log:\n%s", logs.String())
	}

	// checks waits until n more drift checks have ended, and at least
	// span has passed.
	checks := func(what string, n int, span time.Duration) {
		t.Helper()
		seen, last, end := 0, tg.Status().LastCheck, time.Now().Add(span)
		waitUntil(t, span+time.Duration(n)*time.Second+10*time.Second, what, func() bool {
			if lc := tg.Status().LastCheck; !lc.Equal(last) {
				seen, last = seen+1, lc
			}
			return seen >= n && time.Now().After(end)
		})
	}
	count := func() int { return strings.Count(logs.String(), driftLine) }
	// settled waits for the drift check to have logged want lines in all,
	// then for every worker to have read every dyups message twice, then
	// for drift checks over three timer periods more: a repair that a
	// drift check saw as drift again would have logged by then.
	settled := func(what string, want int) {
		t.Helper()
		waitUntil(t, 20*time.Second, fmt.Sprintf("%s: drift line %d", what, want), func() bool { return count() >= want })
		reads := sent.count("GET", "/detail")
		ngx.settle(t)
		checks(what+": checks after the repair", 3, 3*ngx.timer)
		reads = sent.count("GET", "/detail") - reads
		if n := count(); n != want {
			t.Errorf("%s: %d drift lines in all, want %d; log:\n%s", what, n, want, logs.String())
		}
		t.Logf("FIGURE resync %v, timer %v, %s: %d drift line(s) for this drift (%d in all); %d reads of /detail after it found the drift, %d POSTs sent in all", resync, ngx.timer, what, count()-(want-1), count(), reads, sent.count("POST", "/upstream/"))
	}

	checks("drift checks before any damage", 5, 0)
	if n := count(); n != 0 {
		t.Fatalf("drift logged %d times before any damage; log:\n%s", n, logs.String())
	}

	// An operator's DELETE.
	if code, body := ngx.do(t, "DELETE", "/upstream/web", ""); code != 200 {
		t.Fatalf("operator DELETE: %d %s", code, body)
	}
	settled("operator DELETE", 1)

	// An operator's POST of another server set.
	if code, body := ngx.do(t, "POST", "/upstream/web", "server "+b.Addr()+";"); code != 200 {
		t.Fatalf("operator POST: %d %s", code, body)
	}
	settled("operator POST of B", 2)

	// The same damage again is a new drift, logged again.
	if code, body := ngx.do(t, "DELETE", "/upstream/web", ""); code != 200 {
		t.Fatalf("second operator DELETE: %d %s", code, body)
	}
	settled("second operator DELETE", 3)

	// nginx restarted from a stale included file (B).
	ngx.restart(t, upstream.State{"web": named("web", b.Addr())})
	settled("nginx restart from a stale file", 4)

	// A worker killed: its replacement serves the start-time file (B)
	// until a POST reaches it (docs/DYUPS-API.md, "Crashed workers"). The
	// drift check finds it, with traffic, within a few checks.
	tr := startRealTraffic(t, ngx.proxyURL(), "web", 3)
	defer tr.end()
	ngx.settle(t)
	killWorker(t, ngx, ngx.workerPIDs()[0], nil)
	settled("a worker killed", 5)
}

// do sends one request to the dyups API over a new connection.
func (n *realNginx) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, n.apiURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// restart stops nginx and starts it again on the same ports, with included
// as the upstream file it includes.
func (n *realNginx) restart(t *testing.T, included upstream.State) {
	t.Helper()
	n.kill()
	if err := os.WriteFile(filepath.Join(n.prefix, "upstreams.conf"), upstream.RenderFile(included), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr, err := os.OpenFile(filepath.Join(n.prefix, "stderr.log"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.bin, "-p", n.prefix, "-c", n.conf, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		stderr.Close()
		t.Fatalf("restart %s: %v", n.bin, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		stderr.Close()
		close(done)
	}()
	waitUntil(t, 10*time.Second, "the restarted nginx's workers", func() bool { return len(n.workerPIDs()) == n.workers })
	if err := testenv.WaitHTTP(context.Background(), n.apiURL()+"/list", 10*time.Second); err != nil {
		t.Fatalf("dyups API after restart: %v\n%s", err, n.errorLog())
	}
}
