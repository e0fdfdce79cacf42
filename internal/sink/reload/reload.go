// Package reload is the data plane for plain nginx, with neither dyups nor
// Lua: nginx reads the persisted upstream file, and every change costs a
// reload.
//
// The sink does not touch the file. The engine's store writes it and runs
// the test (nginx -t) as its verify command; a refused file is replaced by
// the previous one, and the engine retries it with backoff. Bursts of
// changes are settled by the engine's quiescence window (wait; reload mode
// keeps it at least reload.min_wait / reload.max_wait), so a flapping
// service cannot cause a reload storm. This sink runs the reload command
// (nginx -s reload) for each state handed over, and retries a failed
// reload with backoff until one succeeds or a newer state replaces it
// (Run). As a PersistObserver it also hears of the refused tests, so that
// its status, /readyz and the metrics say nginx was not reloaded, and why.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
)

// Options configure the sink.
type Options struct {
	Command []string      // e.g. nginx -s reload
	Timeout time.Duration // per command; 0 = 30s
	// RetryMin and RetryMax bound the backoff between attempts after a
	// failed reload (defaults 1s and 30s).
	RetryMin, RetryMax time.Duration
}

// Sink reloads nginx when the desired state changes.
type Sink struct {
	opt Options
	log *slog.Logger
	m   *metrics

	mu      sync.Mutex
	pending engine.Change
	wake    chan struct{}

	smu    sync.Mutex
	status Status
	// persistFailed: the failure shown is the engine's (a refused test),
	// which ends when the engine says so, not at the next reload.
	persistFailed bool
	failed        int // failed attempts since the last reload that succeeded, for the log
}

// Status is the outcome of the reload sink's last attempt; in /status it
// is the "reload" section.
type Status struct {
	Command    string    `json:"command"`              // the reload command, to name the sink
	InSync     bool      `json:"in_sync"`              // the last reload succeeded
	LastReload time.Time `json:"last_reload,omitzero"` // end of the last successful reload
	// Failing is set from a refused test or a failed reload until an
	// attempt succeeds: nginx serves an older set meanwhile, and the
	// engine (a test) or the sink (a reload) retries at NextRetry.
	// Attempts counts the failed attempts in a row (the first and every
	// retry); FailingSince is when the first one failed.
	Failing      bool      `json:"failing"`
	Attempts     int       `json:"failed_attempts"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	NextRetry    time.Time `json:"next_retry,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	LastErrorAt  time.Time `json:"last_error_at,omitzero"`
}

// Status returns the sink's current status.
func (s *Sink) Status() Status {
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.status
	st.Command = strings.Join(s.opt.Command, " ")
	return st
}

// SinkStatus reports the sink for /status, /readyz and the status page:
// while failing, its last error says since when and how often, and it
// holds the daemon not ready.
func (s *Sink) SinkStatus() engine.SinkStatus {
	st := s.Status()
	out := engine.SinkStatus{
		Kind: "reload", Name: "reload: " + st.Command, InSync: st.InSync, LastSync: st.LastReload,
		LastError: st.LastError, LastErrorAt: st.LastErrorAt, Ready: !st.Failing,
		Detail: st, Section: "reload",
	}
	if st.Failing {
		now := time.Now()
		out.LastError = failingSummary(st, now) + ": " + st.LastError
		out.NotReady = fmt.Sprintf("reload mode: nginx not reloaded for %s (%d failed attempts, retrying): %s",
			now.Sub(st.FailingSince).Round(time.Second), st.Attempts, st.LastError)
	}
	return out
}

// failingSummary says, for people, how long the sink has been failing and
// when it tries again.
func failingSummary(st Status, now time.Time) string {
	msg := fmt.Sprintf("nginx not reloaded for %s, %d failed attempts", now.Sub(st.FailingSince).Round(time.Second), st.Attempts)
	if !st.NextRetry.IsZero() {
		msg += fmt.Sprintf(", next try in %s", max(st.NextRetry.Sub(now), 0).Round(100*time.Millisecond))
	}
	return msg
}

// fail records a failed attempt, and when the next one is due.
func (s *Sink) fail(err error, next time.Time, persist bool) {
	s.smu.Lock()
	defer s.smu.Unlock()
	now := time.Now()
	if !s.status.Failing {
		s.status.FailingSince = now
	}
	s.status.InSync, s.status.Failing, s.persistFailed = false, true, persist
	s.status.Attempts++
	s.failed++
	s.status.LastError, s.status.LastErrorAt, s.status.NextRetry = err.Error(), now, next
	s.m.failing.Set(1)
	s.log.Error("nginx not reloaded; retrying", "attempt", s.status.Attempts, "retry_in", time.Until(next).Round(time.Millisecond), "err", err)
}

// recover ends the failure shown: after a reload, or when the engine has
// nothing left to persist (nginx then serves the state it was last
// reloaded with, which is the desired one). It returns the failed attempts
// since the last reload that succeeded.
func (s *Sink) recover(reloaded bool) int {
	s.smu.Lock()
	defer s.smu.Unlock()
	failed := s.failed
	if reloaded {
		s.status.LastReload = time.Now()
		s.failed = 0
	}
	s.status.InSync = !s.status.LastReload.IsZero()
	s.status.Failing, s.status.Attempts, s.status.FailingSince, s.status.NextRetry = false, 0, time.Time{}, time.Time{}
	s.persistFailed = false
	s.m.failing.Set(0)
	return failed
}

var (
	_ engine.Sink            = (*Sink)(nil)
	_ engine.PersistObserver = (*Sink)(nil)
)

// Retry bounds used when Options leave them zero.
const (
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
)

// New returns a reload sink.
func New(opt Options, log *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if len(opt.Command) == 0 {
		return nil, errors.New("reload: no reload command")
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = DefaultRetryMin
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(opt.RetryMin, DefaultRetryMax)
	}
	return &Sink{opt: opt, log: log.With("sink", "reload"), m: newMetrics(reg), wake: make(chan struct{}, 1)}, nil
}

// Update hands over the newest state without blocking.
func (s *Sink) Update(c engine.Change) {
	s.mu.Lock()
	s.pending = c
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Persisted hears from the engine whether the newest state could be
// persisted. A refused test (engine.ErrVerifyFailed) or a failed write is
// this sink's failure: nginx is not reloaded with the new state, and the
// engine tries again at retryAt. A nil error ends that failure.
func (s *Sink) Persisted(err error, retryAt time.Time) {
	if err == nil {
		s.smu.Lock()
		ours := s.persistFailed
		s.smu.Unlock()
		if ours {
			s.recover(false)
		}
		return
	}
	if errors.Is(err, engine.ErrVerifyFailed) {
		s.m.reloads.WithLabelValues("test_failed").Inc()
	}
	s.fail(err, retryAt, true)
}

// Run reloads nginx for each state handed over until stop ends; the
// commands run under work.
//
// A failed reload is retried with backoff (RetryMin doubling up to
// RetryMax, with jitter) until an attempt succeeds: nginx briefly down must
// not strand it on an old set until the next registry change. A newer
// state ends the retries of the older one and is reloaded at once (the
// engine has settled it). The backoff starts over only after a success,
// so a registry that keeps changing cannot turn a lasting failure into a
// reload per change.
func (s *Sink) Run(stop, work context.Context) {
	var (
		retry *time.Timer
		again <-chan time.Time
	)
	bo := backoff.New(s.opt.RetryMin, s.opt.RetryMax)
	for {
		select {
		case <-stop.Done():
			if retry != nil {
				retry.Stop()
			}
			return
		case <-s.wake:
			if retry != nil { // a newer state: retrying the older one is moot
				retry.Stop()
			}
		case <-again:
		}
		retry, again = nil, nil
		s.mu.Lock()
		c := s.pending
		s.mu.Unlock()
		err := s.reload(work, len(c.State))
		if err == nil {
			bo.Reset()
			c.Ack()
			continue
		}
		if stop.Err() != nil || work.Err() != nil {
			return // stopping: the command was cut short, not a failure of nginx
		}
		d := bo.Next()
		s.fail(err, time.Now().Add(d), false)
		c.Fail(err)
		retry = time.NewTimer(d)
		again = retry.C
	}
}

// reload runs the reload command.
func (s *Sink) reload(ctx context.Context, upstreams int) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.opt.Command[0], s.opt.Command[1:]...).CombinedOutput()
	if err != nil {
		s.m.reloads.WithLabelValues("reload_failed").Inc()
		return fmt.Errorf("reload: %s: %w: %s", strings.Join(s.opt.Command, " "), err, strings.TrimSpace(string(out)))
	}
	s.m.reloads.WithLabelValues("ok").Inc()
	if n := s.recover(true); n > 0 {
		s.log.Info("nginx reloaded after failed attempts", "upstreams", upstreams, "failed_attempts", n)
	} else {
		s.log.Info("nginx reloaded", "upstreams", upstreams)
	}
	return nil
}

type metrics struct {
	reloads *prometheus.CounterVec
	failing prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reloads: metric.CounterVec("swallowkeeper_reloads_total",
			"nginx reloads in reload mode, by outcome (ok; test_failed: the file was refused by reload.test, run by the store; reload_failed); retries count too.", "outcome"),
		failing: metric.Gauge("swallowkeeper_reload_failing",
			"1 while the last nginx test or reload failed and it is being retried (nginx serves an older set), else 0."),
	}
	metric.Register(reg, m.reloads, m.failing)
	return m
}
