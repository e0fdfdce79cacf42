package dyups

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Processes lists the processes of one nginx: its master's pid and the
// pids of the master's live worker processes. procProcesses reads them from
// the pid file and /proc; tests pass their own.
type Processes interface {
	Workers() (master int, workers []int, err error)
}

// procProcesses finds nginx's processes on this host: the master's pid in
// nginx's pid file, its children in /proc.
type procProcesses struct {
	pidFile string
	proc    string // the proc file system, "/proc"
}

// NewProcProcesses returns the Processes of the nginx whose master writes
// pidFile, found through /proc (Linux).
func NewProcProcesses(pidFile string) Processes {
	return procProcesses{pidFile: pidFile, proc: "/proc"}
}

// Workers reads the master's pid from the pid file and lists the master's
// children whose title says "worker process" (not the cache manager or
// loader, not the old workers of a reload that are "shutting down", not a
// dead one awaiting its reaping, whose title is gone).
//
// The children come from /proc/PID/task/PID/children (two small reads per
// poll); a kernel without it (CONFIG_PROC_CHILDREN) costs a scan of
// /proc/*/stat instead.
func (p procProcesses) Workers() (int, []int, error) {
	data, err := os.ReadFile(p.pidFile)
	if err != nil {
		return 0, nil, fmt.Errorf("nginx pid file: %w", err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || master <= 0 {
		return 0, nil, fmt.Errorf("nginx pid file %s: %q is not a pid", p.pidFile, bytes.TrimSpace(data))
	}
	if _, err := os.Stat(filepath.Join(p.proc, strconv.Itoa(master))); err != nil {
		return 0, nil, fmt.Errorf("nginx master %d (from %s) is not running: %w", master, p.pidFile, err)
	}
	kids, err := p.children(master)
	if err != nil {
		return 0, nil, fmt.Errorf("nginx master %d: list its workers: %w", master, err)
	}
	var workers []int
	for _, pid := range kids {
		title, err := os.ReadFile(filepath.Join(p.proc, strconv.Itoa(pid), "cmdline"))
		if err != nil { // exited since it was listed
			continue
		}
		// nginx writes its title over argv ("nginx: worker process" and
		// NULs); a process started as a title keeps NULs between words.
		title = bytes.ReplaceAll(title, []byte{0}, []byte{' '})
		if bytes.Contains(title, []byte("worker process")) && !bytes.Contains(title, []byte("shutting down")) {
			workers = append(workers, pid)
		}
	}
	slices.Sort(workers)
	return master, workers, nil
}

// children lists the pids of master's child processes.
func (p procProcesses) children(master int) ([]int, error) {
	m := strconv.Itoa(master)
	data, err := os.ReadFile(filepath.Join(p.proc, m, "task", m, "children"))
	if err == nil {
		var pids []int
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return pids, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	entries, err := os.ReadDir(p.proc)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if parentOf(p.proc, pid) == master {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// parentOf reads a process's parent pid from /proc/PID/stat, 0 if unknown.
func parentOf(proc string, pid int) int {
	data, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// Why every upstream is pushed again.
const (
	repushWorker  = "worker"  // a new worker: a crashed one replaced, or a reload
	repushRestart = "restart" // a new master: nginx was restarted
)

// workerWatch follows the workers of one nginx, for Run: a worker that
// replaces a crashed one under real dyups serves the upstreams nginx had at
// its last start or reload until a POST reaches it, and the drift check's
// reads, each landing on one worker, may miss it for many checks. So when a
// new worker appears (or a new master: a restart), every upstream is
// pushed again once the worker can take it: delay after it was seen (real
// dyups makes such a worker wait 2 × dyups_read_msg_timeout before it
// serves and reads messages).
//
// A worker that appears while a push is pending gets a second push, delay
// after it was seen; later ones, until the first push, move that second
// push. So every worker is pushed to at most 2 × delay after it was seen,
// and a crash loop costs at most two pushes per delay.
type workerWatch struct {
	procs Processes
	delay time.Duration
	log   *slog.Logger

	known   bool // master and workers hold the last good look
	master  int
	workers []int
	lastErr string // of the last look, to log changes only

	timer       *time.Timer // fires when a push is due; nil until the first
	due         bool        // a push is pending on timer
	reason      string      // of that push
	again       time.Time   // a second push is pending for this time
	againReason string      // of the second push: repushRestart wins
}

// look lists the processes and schedules a push if a worker or the master
// is new. The first good look only learns what is there. It reports
// whether lastErr changed.
func (w *workerWatch) look(now time.Time) (errChanged bool) {
	master, workers, err := w.procs.Workers()
	if err != nil {
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			w.log.Warn("cannot watch nginx workers; a replaced worker is found only by the drift check", "err", err)
			return true
		}
		return false
	}
	if w.lastErr != "" {
		w.lastErr, errChanged = "", true
		w.log.Info("watching nginx workers again", "master", master, "workers", workers)
	}
	if !w.known {
		w.known, w.master, w.workers = true, master, workers
		return errChanged
	}
	switch {
	case master != w.master:
		w.log.Warn("nginx restarted; pushing every upstream again",
			"old_master", w.master, "new_master", master, "workers", workers, "in", w.delay)
		w.schedule(now, repushRestart)
	case hasNew(w.workers, workers):
		w.log.Warn("nginx worker replaced; pushing every upstream again",
			"old", w.workers, "new", workers, "in", w.delay)
		w.schedule(now, repushWorker)
	case hasNew(workers, w.workers):
		// A worker is gone (a crash): real dyups' replacement is not
		// listed as a worker until its start-up wait (2 ×
		// dyups_read_msg_timeout) is over, yet it applies a POST sent
		// during that wait before it serves its first request. Pushing
		// now closes the window in which it would serve nginx's
		// start-time upstreams; the push when it appears follows.
		w.log.Warn("nginx worker gone; pushing every upstream again",
			"old", w.workers, "now", workers, "in", w.delay)
		w.schedule(now, repushWorker)
	}
	w.master, w.workers = master, workers
	return errChanged
}

// hasNew reports whether now holds a pid that before does not.
func hasNew(before, now []int) bool {
	for _, pid := range now {
		if !slices.Contains(before, pid) {
			return true
		}
	}
	return false
}

func (w *workerWatch) schedule(now time.Time, reason string) {
	if w.due {
		w.again = now.Add(w.delay)
		if w.againReason != repushRestart {
			w.againReason = reason
		}
		return
	}
	w.due, w.reason = true, reason
	if w.timer == nil {
		w.timer = time.NewTimer(w.delay)
	} else {
		w.timer.Reset(w.delay)
	}
}

// C fires when a push is due; nil (never) when none is pending.
func (w *workerWatch) C() <-chan time.Time {
	if !w.due {
		return nil
	}
	return w.timer.C
}

// fired is called after C fired: it returns the reason of the push due
// now and arms the second push, if one is pending.
func (w *workerWatch) fired(now time.Time) string {
	reason := w.reason
	w.due, w.reason = false, ""
	if !w.again.IsZero() {
		w.due, w.reason = true, w.againReason
		w.timer.Reset(max(w.again.Sub(now), 0))
		w.again, w.againReason = time.Time{}, ""
	}
	return reason
}

// stop releases the timer.
func (w *workerWatch) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}
