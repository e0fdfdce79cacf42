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
// keeps serving the old set, and says why.
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
}

// Status returns the sink's current status.
func (s *Sink) Status() Status {
	s.smu.Lock()
	defer s.smu.Unlock()
	st := s.status
	st.Command = s.opt.Command
	return st
}

func (s *Sink) record(err error) {
	s.smu.Lock()
	defer s.smu.Unlock()
	if err != nil {
		s.status.InSync, s.status.LastError, s.status.LastErrorAt = false, err.Error(), time.Now()
		return
	}
	s.status.InSync, s.status.LastReload = true, time.Now()
}

var _ engine.Sink = (*Sink)(nil)

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
func (s *Sink) Run(ctx context.Context) {
	var (
		settle *time.Timer
		fire   <-chan time.Time
		first  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			if settle != nil {
				settle.Stop()
			}
			return
		case <-s.wake:
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
			s.mu.Lock()
			c := s.pending
			s.mu.Unlock()
			err := s.Apply(ctx, c.State)
			s.record(err)
			if err != nil {
				s.log.Error("nginx not reloaded", "err", err)
			} else {
				c.Ack()
			}
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
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swallowkeeper_reloads_total",
		Help: "nginx reloads in reload mode, by outcome (ok, test_failed, reload_failed).",
	}, []string{"outcome"})}
	if reg != nil {
		reg.MustRegister(m.reloads)
	}
	return m
}
