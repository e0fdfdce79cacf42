// Package engine owns SwallowKeeper's state and its one direction of flow:
// sources send complete snapshots, the engine settles them, merges them,
// applies the guards, persists the result first and then hands it to the
// sinks. All state lives in the goroutine that runs Run.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Source watches one registry.
//
// Run sends a complete Snapshot on out: once as soon as it has read the
// whole registry, then again whenever anything may have changed. It never
// sends a delta or a partial read: after a read error it sends nothing until
// a full read succeeds again (stale beats partial). Run returns when ctx
// ends and never closes out.
type Source interface {
	Run(ctx context.Context, out chan<- Snapshot)
}

// Store persists the state that nginx starts from.
type Store interface {
	// Load returns the last saved state; an absent file is an empty state,
	// a corrupt one an error.
	Load() (upstream.State, error)
	// Save writes the state atomically and durably. An error means the
	// state is not persisted; the engine pushes nothing and retries.
	Save(upstream.State) error
}

// ErrVerifyFailed is wrapped by a Store's Save error when the file was
// written but its verify command (nginx -t) refused it, and the previous
// file was put back.
var ErrVerifyFailed = errors.New("refused by the verify command")

// Sink brings one data plane (an nginx target) to the desired state.
type Sink interface {
	// Update hands over the newest desired state. It never blocks: a sink
	// still busy with an older change keeps only the newest one.
	Update(Change)
}

// Change is a desired state handed to the sinks.
type Change struct {
	State upstream.State
	// Done is called by a sink once its data plane holds State; not for a
	// change superseded by a newer one. Safe from any goroutine; nil-safe
	// callers use Ack.
	Done func()
}

// Ack calls Done if set.
func (c Change) Ack() {
	if c.Done != nil {
		c.Done()
	}
}

// Wait is the quiescence window, as in consul-template: after a change the
// engine waits until no new snapshot came for Min, but never longer than Max
// after the first one. Zero Min applies at once.
type Wait struct {
	Min, Max time.Duration
}

// Engine runs the flow. Build it with New.
type Engine struct {
	sources []Source
	store   Store
	sinks   []Sink
	guards  Guards
	wait    Wait
	log     *slog.Logger
	m       *metrics

	status    atomic.Pointer[Status] // published by Run for readers elsewhere
	holdSince map[string]time.Time   // hold key → since; Run's goroutine only
}

func holdKey(h Hold) string { return h.Guard + "\x00" + h.Upstream }

// Status is what the engine has applied and what it holds back, published
// after every change for the status page and command.
type Status struct {
	Applied   upstream.State // persisted and handed to the sinks
	Holds     []Hold
	Sources   int // sources configured
	Answered  int // sources that have sent a snapshot
	LastApply time.Time
	// PersistError is the last failure to write the file, until a write
	// succeeds; nothing is pushed meanwhile. A file the verify command
	// refused shows here, with the command's output.
	PersistError string
	// Snapshots counts the registry snapshots the engine has taken in; a
	// status is published after each one is handled.
	Snapshots int
	// Dropped lists the registry entries the sources left out as invalid.
	Dropped []registry.Dropped
}

// Status returns the latest published status; nil before Run started.
func (e *Engine) Status() *Status { return e.status.Load() }

func (e *Engine) publish(applied upstream.State, holds []Hold, latest []*Snapshot, snapshots int, last time.Time, persistErr error) {
	answered := 0
	for _, s := range latest {
		if s != nil {
			answered++
		}
	}
	shown := make([]Hold, len(holds))
	for i, h := range holds {
		h.Since = e.holdSince[holdKey(h)]
		shown[i] = h
	}
	st := &Status{Applied: applied, Holds: shown, Sources: len(latest), Answered: answered, Snapshots: snapshots, LastApply: last}
	for _, snap := range latest {
		if snap != nil {
			st.Dropped = append(st.Dropped, snap.Dropped...)
		}
	}
	if persistErr != nil {
		st.PersistError = persistErr.Error()
	}
	e.status.Store(st)
}

// New builds an engine. reg may be nil when no metrics are wanted.
func New(sources []Source, store Store, sinks []Sink, g Guards, w Wait, log *slog.Logger, reg prometheus.Registerer) *Engine {
	return &Engine{sources: sources, store: store, sinks: sinks, guards: g, wait: w, log: log, m: newMetrics(reg)}
}

type tagged struct {
	source int
	snap   Snapshot
}

// fanIn starts every source and forwards their snapshots, tagged with the
// source's index, to one channel.
func (e *Engine) fanIn(ctx context.Context) <-chan tagged {
	out := make(chan tagged)
	for i, src := range e.sources {
		ch := make(chan Snapshot)
		go src.Run(ctx, ch)
		go func() {
			for {
				select {
				case s := <-ch:
					select {
					case out <- tagged{i, s}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return out
}

// Run loads the persisted state, pushes it to the sinks (nginx may have
// restarted without it in memory), then follows the sources until ctx ends.
// It returns an error only when the persisted state cannot be read.
func (e *Engine) Run(ctx context.Context) error {
	prev, err := e.store.Load()
	if err != nil {
		return err
	}
	e.log.Info("loaded persisted state", "upstreams", len(prev))
	e.m.upstreams.Set(float64(len(prev)))
	if len(prev) > 0 {
		e.push(prev, time.Now())
	}

	in := e.fanIn(ctx)
	latest := make([]*Snapshot, len(e.sources))
	var lastApply, seen time.Time // seen: when the newest snapshot arrived
	var (
		snapshots  int   // taken in so far
		persistErr error // the last Save's, until one succeeds or nothing needs saving
		lastHolds  []Hold
	)
	publish := func() { e.publish(prev, lastHolds, latest, snapshots, lastApply, persistErr) }
	publish()
	var (
		settle    *time.Timer // fires when the quiescence window closes
		settleC   <-chan time.Time
		drops     = Drops{}
		recheck   *time.Timer // fires when a held drop can be confirmed
		recheckC  <-chan time.Time
		firstSeen time.Time
		retry     = backoff.New(200*time.Millisecond, 10*time.Second)
		retryC    <-chan time.Time
	)
	apply := func() {
		settleC = nil
		next, holds, at := Plan(prev, deref(latest), e.guards, drops, time.Now())
		if recheck != nil {
			recheck.Stop()
			recheckC = nil
		}
		if !at.IsZero() {
			recheck = time.NewTimer(max(time.Until(at), 0))
			recheckC = recheck.C
		}
		e.reportHolds(lastHolds, holds)
		lastHolds = holds
		if next.Equal(prev) {
			// Nothing to persist (any more): a pending retry has no work.
			persistErr, retryC = nil, nil
			retry.Reset()
			publish()
			return
		}
		if err := e.store.Save(next); err != nil {
			// Persist first: nothing reaches nginx that the file would not
			// bring back after a restart. Retry the newest state later:
			// a verify command that refused the file may pass once the
			// operator mends nginx.conf, with no registry change.
			e.m.storeErrors.Inc()
			d := retry.Next()
			if errors.Is(err, ErrVerifyFailed) {
				e.m.verifyFailures.Inc()
				e.log.Error("verify command refused the new upstream file; previous file kept, nginx left unchanged, will retry",
					"err", err, "retry_in", d)
			} else {
				e.log.Error("persist failed; nginx left unchanged, will retry", "err", err, "retry_in", d)
			}
			retryC = time.After(d)
			persistErr = err
			publish()
			return
		}
		persistErr = nil
		retry.Reset()
		retryC = nil
		e.logChanges(prev, next)
		e.m.applies.Inc()
		e.m.upstreams.Set(float64(len(next)))
		e.m.lastApply.SetToCurrentTime()
		e.push(next, seen)
		prev = next
		lastApply = time.Now()
		publish()
	}

	for {
		select {
		case <-ctx.Done():
			if settle != nil {
				settle.Stop()
			}
			return nil
		case t := <-in:
			snap := t.snap
			latest[t.source] = &snap
			seen = time.Now()
			snapshots++
			if slices.Contains(latest, nil) {
				publish() // apply nothing until every source has answered once
				continue
			}
			if e.wait.Min <= 0 {
				apply() // publishes
				continue
			}
			now := time.Now()
			if settleC == nil {
				firstSeen = now
			}
			d := e.wait.Min
			if e.wait.Max > 0 && now.Add(d).After(firstSeen.Add(e.wait.Max)) {
				d = max(firstSeen.Add(e.wait.Max).Sub(now), 0)
			}
			if settle != nil {
				settle.Stop()
			}
			settle = time.NewTimer(d)
			settleC = settle.C
			publish() // settling
		case <-settleC:
			apply()
		case <-retryC:
			retryC = nil
			apply()
		case <-recheckC:
			recheckC = nil
			apply()
		}
	}
}

// Desired loads the persisted state, waits for one snapshot from every
// source and plans the next state without saving or pushing anything. It
// serves the one-shot commands (once, render).
func (e *Engine) Desired(ctx context.Context) (prev, next upstream.State, holds []Hold, err error) {
	prev, err = e.store.Load()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := e.fanIn(ctx)
	latest := make([]*Snapshot, len(e.sources))
	for slices.Contains(latest, nil) {
		select {
		case <-ctx.Done():
			return nil, nil, nil, fmt.Errorf("waiting for the registry: %w", context.Cause(ctx))
		case t := <-in:
			snap := t.snap
			latest[t.source] = &snap
		}
	}
	// A one-shot run is an operator's decision taken now: there is no
	// later read to confirm a big drop with, so the drop guards are off;
	// every other guard holds.
	g := e.guards
	g.ConfirmAfter = 0
	next, holds, _ = Plan(prev, deref(latest), g, Drops{}, time.Now())
	return prev, next, holds, nil
}

// Save persists a state through the engine's store (for the once command).
func (e *Engine) Save(s upstream.State) error { return e.store.Save(s) }

// push hands the state to every sink, and observes the propagation time
// (registry change seen → every sink acknowledged) when the last one acks.
func (e *Engine) push(s upstream.State, seen time.Time) {
	remaining := atomic.Int64{}
	remaining.Store(int64(len(e.sinks)))
	done := func() {
		if remaining.Add(-1) == 0 {
			e.m.propagation.Observe(time.Since(seen).Seconds())
		}
	}
	for _, sink := range e.sinks {
		var once sync.Once
		sink.Update(Change{State: s, Done: func() { once.Do(done) }})
	}
}

func (e *Engine) reportHolds(before, now []Hold) {
	e.m.holds.Set(float64(len(now)))
	if e.holdSince == nil {
		e.holdSince = map[string]time.Time{}
	}
	held := map[string]bool{}
	for _, h := range now {
		held[holdKey(h)] = true
		if _, ok := e.holdSince[holdKey(h)]; !ok {
			e.holdSince[holdKey(h)] = time.Now()
		}
	}
	for k := range e.holdSince {
		if !held[k] {
			delete(e.holdSince, k)
		}
	}
	for _, h := range now {
		if !slices.Contains(before, h) {
			e.m.holdsStarted.WithLabelValues(h.Guard).Inc()
			e.log.Warn("guard holds a change", "upstream", h.Upstream, "guard", h.Guard, "reason", h.Reason)
		}
	}
	for _, h := range before {
		if !slices.Contains(now, h) {
			e.log.Info("guard released", "upstream", h.Upstream, "reason_was", h.Reason)
		}
	}
}

// logChanges logs the delta, a line per server, never the whole state.
func (e *Engine) logChanges(prev, next upstream.State) {
	c := upstream.Diff(prev, next)
	for _, name := range c.Set {
		added, removed := upstream.ServerDelta(prev[name], next[name])
		for _, s := range removed {
			e.log.Info("- server", "upstream", name, "server", s.Addr.String(), "instance", s.Instance)
		}
		for _, s := range added {
			e.log.Info("+ server", "upstream", name, "server", s.Addr.String(), "instance", s.Instance, "weight", s.Weight)
		}
		if o, ok := prev[name]; ok && o.Keepalive != next[name].Keepalive {
			e.log.Info("~ keepalive", "upstream", name, "from", o.Keepalive, "to", next[name].Keepalive)
		}
		if _, ok := prev[name]; !ok {
			e.log.Info("+ upstream", "upstream", name, "servers", len(next[name].Servers))
		}
	}
	for _, name := range c.Removed {
		e.log.Info("- upstream", "upstream", name)
	}
}

func deref(snaps []*Snapshot) []Snapshot {
	out := make([]Snapshot, len(snaps))
	for i, s := range snaps {
		out[i] = *s
	}
	return out
}

type metrics struct {
	applies, storeErrors        prometheus.Counter
	verifyFailures              prometheus.Counter
	holdsStarted                *prometheus.CounterVec
	upstreams, holds, lastApply prometheus.Gauge
	propagation                 prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_engine_applies_total",
			Help: "Changed states persisted and handed to the sinks.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_engine_persist_errors_total",
			Help: "Failed attempts to persist the upstream file; nginx is left unchanged until one succeeds.",
		}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_verify_failures_total",
			Help: "Written upstream files the verify command refused; the previous file was put back and nothing pushed (also counted in swallowkeeper_engine_persist_errors_total).",
		}),
		holdsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swallowkeeper_guard_holds_total",
			Help: "Times a guard started holding back part of the registry's answer, by guard.",
		}, []string{"guard"}),
		upstreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swallowkeeper_upstreams",
			Help: "Upstreams in the applied state.",
		}),
		holds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swallowkeeper_guard_holds_active",
			Help: "Guard holds in force now.",
		}),
		lastApply: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "swallowkeeper_engine_last_apply_timestamp_seconds",
			Help: "When a changed state was last persisted and handed to the sinks.",
		}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "swallowkeeper_propagation_seconds",
			Help:    "From a registry snapshot's arrival to every data plane acknowledging the resulting state (superseded states are not counted).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.applies, m.storeErrors, m.verifyFailures, m.holdsStarted, m.upstreams, m.holds, m.lastApply, m.propagation)
	}
	return m
}
