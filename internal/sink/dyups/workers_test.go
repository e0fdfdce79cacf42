package dyups

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// fakeProcs is an nginx's processes as a test sets them; looks counts the
// times they were listed.
type fakeProcs struct {
	mu      sync.Mutex
	master  int
	workers []int
	err     error
	looks   int
}

func (p *fakeProcs) Workers() (int, []int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.looks++
	return p.master, slices.Clone(p.workers), p.err
}

func (p *fakeProcs) set(master int, workers ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.master, p.workers, p.err = master, workers, nil
}

func (p *fakeProcs) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

func (p *fakeProcs) looked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.looks
}

// TestWorkerWatchSchedulesPushes drives the watch by hand: what it
// schedules for each change of nginx's processes.
func TestWorkerWatchSchedulesPushes(t *testing.T) {
	p := &fakeProcs{}
	w := &workerWatch{procs: p, delay: time.Hour, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer w.stop()
	now := time.Now()
	step := func(what string, wantDue bool) {
		t.Helper()
		now = now.Add(time.Second)
		w.look(now)
		if w.due != wantDue {
			t.Fatalf("%s: push pending %v, want %v", what, w.due, wantDue)
		}
	}
	p.set(100, 101, 102)
	step("first look (at start)", false)
	step("nothing changed", false)
	// A crash under real dyups: the worker is gone, and its replacement
	// is listed only after its start-up wait. The push goes out for the
	// disappearance (the replacement applies it before it serves), and
	// again when the replacement appears.
	p.set(100, 101)
	step("a worker gone, none new", true)
	if r := w.fired(now); r != repushWorker || w.due {
		t.Fatalf("fired: reason %q, still pending %v", r, w.due)
	}
	p.set(100, 101, 103)
	step("a new worker", true)
	if r := w.fired(now); r != repushWorker || w.due {
		t.Fatalf("fired: reason %q, still pending %v", r, w.due)
	}
	step("after the push, nothing changed", false)

	p.fail(errors.New("nginx pid file: no such file"))
	step("pid file gone (nginx stopped)", false)
	p.set(100, 101, 103)
	step("back, same master and workers", false)
	p.set(200, 201, 202)
	step("a new master (restart)", true)
	if r := w.fired(now); r != repushRestart {
		t.Fatalf("fired: reason %q, want %q", r, repushRestart)
	}

	// A crash loop: a worker appearing while a push is pending gets a
	// second one, a delay after it appeared; a third moves the second.
	p.set(200, 201, 203)
	step("crash 1", true)
	first := now
	p.set(200, 201, 204)
	step("crash 2 while a push is pending", true)
	p.set(200, 201, 205)
	step("crash 3 while a push is pending", true)
	if want := now.Add(w.delay); !w.again.Equal(want) {
		t.Fatalf("second push at %v, want %v (a delay after crash 3)", w.again.Sub(first), want.Sub(first))
	}
	if r := w.fired(first.Add(w.delay)); r != repushWorker || !w.due || !w.again.IsZero() {
		t.Fatalf("after the first push: reason %q, second pending %v, third %v; want the second pending, no third", r, w.due, w.again)
	}
	w.fired(now.Add(w.delay))
	if w.due {
		t.Fatal("a third push is pending after two")
	}
}

// TestProcProcessesReadsPidFileAndChildren: the master from the pid file,
// its children from /proc/PID/task/PID/children or, without that file,
// from the ppid in every /proc/*/stat; only "worker process" titles.
func TestProcProcessesReadsPidFileAndChildren(t *testing.T) {
	for _, withChildren := range []bool{true, false} {
		t.Run("children file "+strconv.FormatBool(withChildren), func(t *testing.T) {
			proc := t.TempDir()
			pidFile := filepath.Join(t.TempDir(), "nginx.pid")
			write := func(path, text string) {
				t.Helper()
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			procs := map[int]struct {
				ppid  int
				title string
			}{
				10: {1, "nginx: master process /usr/sbin/nginx"},
				11: {10, "nginx: worker process"},
				12: {10, "nginx: worker process"},
				13: {10, "nginx: cache manager process"},
				14: {10, "nginx: worker process is shutting down"},
				15: {10, ""}, // dead, not yet reaped
				21: {20, "nginx: worker process"},
			}
			for pid, p := range procs {
				dir := filepath.Join(proc, strconv.Itoa(pid))
				write(filepath.Join(dir, "stat"), strconv.Itoa(pid)+" (nginx) S "+strconv.Itoa(p.ppid)+" 1 1 0")
				write(filepath.Join(dir, "cmdline"), strings.ReplaceAll(p.title, " ", "\x00"))
			}
			if withChildren {
				write(filepath.Join(proc, "10", "task", "10", "children"), "11 12 13 14 15 ")
			}
			pp := procProcesses{pidFile: pidFile, proc: proc}
			if _, _, err := pp.Workers(); err == nil || !strings.Contains(err.Error(), "pid file") {
				t.Errorf("no pid file: err %v", err)
			}
			write(pidFile, "99\n")
			if _, _, err := pp.Workers(); err == nil || !strings.Contains(err.Error(), "not running") {
				t.Errorf("stale pid file: err %v", err)
			}
			write(pidFile, "10\n")
			master, workers, err := pp.Workers()
			if err != nil || master != 10 || !slices.Equal(workers, []int{11, 12}) {
				t.Errorf("master %d workers %v (%v), want 10 [11 12]", master, workers, err)
			}
		})
	}
}

// watchedTarget is a target on a fake dyups whose nginx processes the test
// sets, running in the background until the test ends.
func watchedTarget(t *testing.T, f *fakeDyups, p *fakeProcs, delay time.Duration, log *slog.Logger) *Target {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	tg := newTarget(t, f)
	tg.log = log
	tg.procs = p
	tg.opt.WorkerPoll, tg.opt.WorkerReadyDelay = 5*time.Millisecond, delay
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return tg
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (f *fakeDyups) count(call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == call {
			n++
		}
	}
	return n
}

// TestRunPushesEverythingAgainForANewWorker: a new worker pid (a crashed
// worker replaced) makes Run post every desired upstream once more, no
// sooner than WorkerReadyDelay after it was seen, and count it; a new
// master (restart) does the same under its own reason.
func TestRunPushesEverythingAgainForANewWorker(t *testing.T) {
	const delay = 100 * time.Millisecond
	f := &fakeDyups{ups: map[string]string{}}
	p := &fakeProcs{}
	p.set(100, 101, 102)
	tg := watchedTarget(t, f, p, delay, nil)
	tg.Update(engine.Change{State: upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.2:80")}})
	waitFor(t, "the first sync", func() bool { return f.count("POST a") == 1 && f.count("POST b") == 1 })

	for i, tt := range []struct {
		master  int
		workers []int
		reason  string
	}{
		{100, []int{101, 103}, repushWorker},  // kill -9 of 102
		{200, []int{201, 202}, repushRestart}, // nginx restarted
	} {
		p.set(tt.master, tt.workers...)
		seen := time.Now()
		waitFor(t, "every upstream posted again", func() bool { return f.count("POST a") == i+2 && f.count("POST b") == i+2 })
		if d := time.Since(seen); d < delay {
			t.Errorf("%s: pushed again %v after the change, want after the %v the worker needs", tt.reason, d, delay)
		}
		if n := testutil.ToFloat64(tg.m.repushes.WithLabelValues(tg.url, tt.reason)); n != 1 {
			t.Errorf("%s: repushes metric %v, want 1", tt.reason, n)
		}
		if n := tg.Status().WorkerRepushes; n != i+1 {
			t.Errorf("status worker_repushes %d, want %d", n, i+1)
		}
	}
	// Nothing more while the processes stay: 40 more looks, no POST.
	looks := p.looked()
	waitFor(t, "40 more looks at the processes", func() bool { return p.looked() >= looks+40 })
	if a, b := f.count("POST a"), f.count("POST b"); a != 3 || b != 3 {
		t.Errorf("after 40 looks with no change: POST a %d, POST b %d times, want 3 each", a, b)
	}
}

// TestDriftCheckSamplesUntilAnAnswerDiffers: back-to-back reads mostly
// reach one worker; a stale worker that answers only the 7th read is found
// (three fixed reads missed it), the check stops at that answer, and when
// all answers agree it costs DetailMaxReads reads and sends nothing.
func TestDriftCheckSamplesUntilAnAnswerDiffers(t *testing.T) {
	desired := upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.2:80")}
	stale := detailText(upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.9:80")}, []string{"a", "b"})
	tests := []struct {
		name      string
		watched   bool // nginx_pid set
		budget    time.Duration
		staleRead int // the read the stale worker answers; 0: none
		wantReads int
		wantPosts string
	}{
		{name: "stale worker answers the 7th read", staleRead: 7, wantReads: 7, wantPosts: "POST b"},
		{name: "all agree: reads up to 4 × reads", wantReads: 12},
		{name: "all agree, the budget spent: reads only reads", budget: time.Nanosecond, wantReads: 3},
		{name: "workers watched: reads only reads", watched: true, staleRead: 7, wantReads: 3},
		{name: "stale worker answers the 2nd read: reads still reach reads", staleRead: 2, wantReads: 3, wantPosts: "POST b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDyups{ups: map[string]string{}}
			opt := Options{RetryBase: time.Millisecond, MaxAttempts: 3, DetailBudget: tt.budget}
			if tt.watched {
				opt.Processes = &fakeProcs{}
			}
			srv := newServer(t, f)
			tg, err := NewTarget(srv, withDefaults(opt), slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := tg.Sync(context.Background(), desired); err != nil {
				t.Fatal(err)
			}
			f.calls, f.detailReads = nil, 0
			f.detail = func(read int, now string) string {
				if read == tt.staleRead {
					return stale
				}
				return now
			}
			if err := tg.Reconcile(context.Background(), desired); err != nil {
				t.Fatal(err)
			}
			if f.detailReads != tt.wantReads || strings.Join(f.calls, ",") != tt.wantPosts {
				t.Errorf("read /detail %d times and sent %v; want %d reads and %q", f.detailReads, f.calls, tt.wantReads, tt.wantPosts)
			}
		})
	}
}
