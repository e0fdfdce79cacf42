// Package reload is the data plane for plain nginx, with neither dyups nor
// Lua: nginx reads the persisted upstream file, and every change costs a
// configuration test and a reload.
//
// The engine has already written the file (persist first). This sink waits
// for the burst to settle (a quiescence window with a maximum, as
// consul-template's wait does, so a flapping service cannot cause a reload
// storm), runs the test command (nginx -t) against the real main
// configuration, and reloads only if it passes. If the test fails it puts
// back the last file that passed, so that nginx, now or after a restart,
// keeps serving the old set, says why, and tries again with backoff until
// the test passes or a newer state replaces the one that failed (Run).
package reload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Options configure the sink.
type Options struct {
	File    string   // the persisted file nginx includes (the engine's store)
	Test    []string // e.g. nginx -t -q; empty skips the test
	Command []string // e.g. nginx -s reload
	// MinWait is the quiet time after the last change before reloading;
	// MaxWait bounds how long a steady stream of changes can delay one.
	MinWait, MaxWait time.Duration
	Timeout          time.Duration // per command
	// RetryMin and RetryMax bound the backoff between attempts after a
	// failed test or reload (defaults 1s and 30s).
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

	lastGood []byte // file content that last passed the test

	smu    sync.Mutex
	status Status
}

// Status is the outcome of the reload sink's last attempt, for status.
type Status struct {
	Command     []string  // the reload command, to name the sink
	InSync      bool      // the last reload succeeded
	LastReload  time.Time // end of the last successful reload
	LastError   string
	LastErrorAt time.Time
	// Failing is set from a failed test or reload until an attempt
	// succeeds: nginx serves an older set meanwhile, and the sink retries
	// at NextRetry. Attempts counts the failed attempts in a row (the
	// first and every retry); FailingSince is when the first one failed.
	Failing      bool
	Attempts     int
	FailingSince time.Time
	NextRetry    time.Time
}

// Status returns the sink's current status.
func (s *Sink) Status() Status {
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.status
	st.Command = s.opt.Command
	return st
}

// record notes the outcome of an attempt; next is when the sink retries
// after a failure.
func (s *Sink) record(err error, next time.Time) {
	s.smu.Lock()
	defer s.smu.Unlock()
	now := time.Now()
	if err != nil {
		if !s.status.Failing {
			s.status.FailingSince = now
		}
		s.status.InSync, s.status.Failing = false, true
		s.status.Attempts++
		s.status.LastError, s.status.LastErrorAt, s.status.NextRetry = err.Error(), now, next
		s.m.failing.Set(1)
		return
	}
	s.status.InSync, s.status.LastReload = true, now
	s.status.Failing, s.status.Attempts, s.status.FailingSince, s.status.NextRetry = false, 0, time.Time{}, time.Time{}
	s.m.failing.Set(0)
}

var _ engine.Sink = (*Sink)(nil)

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
	if opt.MaxWait < opt.MinWait {
		opt.MaxWait = opt.MinWait
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = DefaultRetryMin
	}
	if opt.RetryMax < opt.RetryMin {
		opt.RetryMax = max(opt.RetryMin, DefaultRetryMax)
	}
	s := &Sink{opt: opt, log: log.With("sink", "reload"), m: newMetrics(reg), wake: make(chan struct{}, 1)}
	if b, err := os.ReadFile(opt.File); err == nil {
		s.lastGood = b // what nginx was started or last reloaded with, we assume
	}
	return s, nil
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

// Run reloads nginx after each settled burst of changes until ctx ends.
//
// A failed test or reload is retried with backoff (RetryMin doubling up to
// RetryMax, with jitter) until an attempt succeeds: a moment's mistake in
// nginx.conf, or nginx briefly down, must not strand nginx on an old set
// until the next registry change. A newer state ends the retries of the
// older one: it settles as usual and is then tried (and retried) itself.
// The backoff starts over only after a success, so a registry that keeps
// changing cannot turn a lasting failure into a test per change.
func (s *Sink) Run(ctx context.Context) {
	var (
		settle, retry *time.Timer
		fire, again   <-chan time.Time
		first         time.Time
	)
	bo := backoff.New(s.opt.RetryMin, s.opt.RetryMax)
	attempt := func() {
		s.mu.Lock()
		c := s.pending
		s.mu.Unlock()
		err := s.Apply(ctx, c.State)
		if err == nil {
			if n := bo.Attempts(); n > 0 {
				s.log.Info("nginx reloaded after failed attempts", "failed_attempts", n)
			}
			bo.Reset()
			s.record(nil, time.Time{})
			c.Ack()
			return
		}
		if ctx.Err() != nil {
			return // stopping: the command was cut short, not a failure of nginx
		}
		d := bo.Next()
		s.record(err, time.Now().Add(d))
		s.log.Error("nginx not reloaded; retrying", "attempt", bo.Attempts(), "retry_in", d.Round(time.Millisecond), "err", err)
		retry = time.NewTimer(d)
		again = retry.C
	}
	for {
		select {
		case <-ctx.Done():
			for _, t := range []*time.Timer{settle, retry} {
				if t != nil {
					t.Stop()
				}
			}
			return
		case <-s.wake:
			// A newer state: retrying the older one is moot.
			if retry != nil {
				retry.Stop()
				retry, again = nil, nil
			}
			now := time.Now()
			if fire == nil {
				first = now
			}
			d := s.opt.MinWait
			if limit := first.Add(s.opt.MaxWait); now.Add(d).After(limit) {
				d = max(limit.Sub(now), 0)
			}
			if settle != nil {
				settle.Stop()
			}
			settle = time.NewTimer(d)
			fire = settle.C
		case <-fire:
			fire = nil
			attempt()
		case <-again:
			retry, again = nil, nil
			attempt()
		}
	}
}

// Apply tests the file on disk (which holds st: the engine persisted it)
// and reloads nginx. When the test fails it restores the last file that
// passed and returns the test's output.
func (s *Sink) Apply(ctx context.Context, st upstream.State) error {
	current, err := os.ReadFile(s.opt.File)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if want := upstream.RenderFile(st); !bytes.Equal(current, want) {
		// The engine writes the file before it hands the state over; a
		// difference means someone else wrote it. Put ours back.
		if err := store.WriteAtomic(s.opt.File, want, 0o644); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		current = want
	}
	if len(s.opt.Test) > 0 {
		if out, err := s.exec(ctx, s.opt.Test); err != nil {
			s.m.reloads.WithLabelValues("test_failed").Inc()
			restored := "no earlier file that passed the test is known; the failing file stays"
			if s.lastGood != nil {
				if werr := store.WriteAtomic(s.opt.File, s.lastGood, 0o644); werr != nil {
					restored = "restoring the last good file failed: " + werr.Error()
				} else {
					restored = "restored the last file that passed the test"
				}
			}
			return fmt.Errorf("reload: %s failed, nginx keeps serving the old set (%s): %w: %s",
				strings.Join(s.opt.Test, " "), restored, err, out)
		}
	}
	if out, err := s.exec(ctx, s.opt.Command); err != nil {
		s.m.reloads.WithLabelValues("reload_failed").Inc()
		return fmt.Errorf("reload: %s: %w: %s", strings.Join(s.opt.Command, " "), err, out)
	}
	s.lastGood = current
	s.m.reloads.WithLabelValues("ok").Inc()
	s.log.Info("nginx reloaded", "upstreams", len(st))
	return nil
}

func (s *Sink) exec(ctx context.Context, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opt.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

type metrics struct {
	reloads *prometheus.CounterVec
	failing prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swallowkeeper_reloads_total",
			Help: "nginx reloads in reload mode, by outcome (ok, test_failed, reload_failed); retries count too.",
		}, []string{"outcome"}),
		failing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swallowkeeper_reload_failing",
			Help: "1 while the last nginx test or reload failed and the reload sink is retrying (nginx serves an older set), else 0.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.failing)
	}
	return m
}
