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
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/history"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
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

// DeltaSaver is a Store that saves a state faster when told how it
// differs from prev, the state of its last successful Save (or Load): c
// is the Diff of prev and s. A store that finds prev is not what it
// saved last saves s as Save does.
type DeltaSaver interface {
	SaveDelta(prev, s upstream.State, c upstream.Changes) error
}

// ErrVerifyFailed is wrapped by a Store's Save error when the file was
// written but its verify command (nginx -t) refused it, and the previous
// file was put back.
var ErrVerifyFailed = errors.New("refused by the verify command")

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

	drains      DrainStore   // the marks of servers drained by hand; nil: none
	drainStates []DrainState // as last planned; Run's goroutine only

	status    atomic.Pointer[Status] // published by Run for readers elsewhere
	holdSince map[string]time.Time   // hold key → since; Run's goroutine only

	// The recent changes and server counts for the status page; Run's
	// goroutine only, copied into each published Status. cause is why the
	// apply in progress runs.
	hist     *history.Ring
	timeline *history.Timeline
	// The history and timeline as last published: rebuilt only after a
	// change was noted, or once a minute so that old points age out, not
	// on every snapshot the engine takes in.
	histDirty   bool
	histBuilt   time.Time
	pubHistory  []history.Event
	pubTimeline history.Published
	cause       string
	// planCause, when set, is the cause of the first apply that plans
	// (see Resume).
	planCause string
	drifts    chan driftNote // repairs the sinks report, for Run's goroutine

	// FullPlanEvery is how often at least a plan compares every upstream
	// rather than the ones the snapshots touched; 0 is
	// DefaultFullPlanEvery. Set it before Run.
	FullPlanEvery time.Duration
}

func (e *Engine) fullPlanEvery() time.Duration {
	if e.FullPlanEvery > 0 {
		return e.FullPlanEvery
	}
	return DefaultFullPlanEvery
}

// DriftReporter is implemented by a sink that repairs drift (a dyups
// target). Run hands it, before the sinks start, a function that any
// goroutine may call with the upstreams a drift check found wrong in
// nginx and pushed again; they show in Status's History with cause
// "drift". The function never blocks: when Run lags far behind, a report
// is dropped (the sink still counts its repairs).
type DriftReporter interface {
	ReportDriftTo(func(sink string, upstreams []string))
}

type driftNote struct {
	sink      string
	upstreams []string
}

// noteDrift queues a drift report for Run's goroutine without blocking.
func (e *Engine) noteDrift(sink string, upstreams []string) {
	select {
	case e.drifts <- driftNote{sink, slices.Clone(upstreams)}:
	default:
	}
}

// HistorySize is how many applied changes Status keeps; HistoryWindow is
// how far back its per-upstream server counts go.
const (
	HistorySize   = 50
	HistoryWindow = time.Hour
)

// note records an applied change in the history shown by Status.
func (e *Engine) note(upstreamName, change, detail string) {
	if e.hist == nil {
		e.hist = history.NewRing(HistorySize)
	}
	cause := e.cause
	if cause == "" {
		cause = history.CauseRegistry
	}
	e.hist.Add(history.Event{At: time.Now(), Upstream: upstreamName, Change: change, Detail: detail, Cause: cause})
	e.histDirty = true
}

// count records an upstream's server count for the timeline.
func (e *Engine) count(name string, n int) {
	if e.timeline == nil {
		e.timeline = &history.Timeline{Window: HistoryWindow, MaxPoints: 240}
	}
	e.timeline.Record(name, time.Now(), n)
	e.histDirty = true
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
	// History is the last HistorySize changes applied (servers, upstreams,
	// guard holds and releases), oldest first, each with its cause.
	History []history.Event
	// Timeline is each upstream's server count over the last
	// HistoryWindow, by upstream name: the points in the window and the
	// last one before it. An upstream that did not change in this run has
	// none; its count is the applied one.
	Timeline history.Published
	// Drains is every drain mark, active or not, by upstream and address.
	Drains []DrainState
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
	if now := time.Now(); e.histDirty || now.Sub(e.histBuilt) > time.Minute {
		full := now.Sub(e.histBuilt) > time.Minute
		e.histDirty = false
		if e.hist != nil {
			e.pubHistory = e.hist.Events()
		}
		if e.timeline != nil {
			// Once a minute every series again, with what left the window
			// dropped; in between only the upstreams a change touched.
			if full {
				e.histBuilt = now
				e.timeline.Expire(now)
				e.pubTimeline = e.timeline.All(now)
			} else {
				e.pubTimeline = e.timeline.Update(e.pubTimeline, now)
			}
		} else if full {
			e.histBuilt = now
		}
	}
	st.History, st.Timeline = e.pubHistory, e.pubTimeline
	st.Drains = e.drainStates
	e.status.Store(st)
}

// New builds an engine. reg may be nil when no metrics are wanted.
func New(sources []Source, store Store, sinks []Sink, g Guards, w Wait, log *slog.Logger, reg prometheus.Registerer) *Engine {
	return &Engine{sources: sources, store: store, sinks: sinks, guards: g, wait: w, log: log, m: newMetrics(reg), drifts: make(chan driftNote, 64)}
}

type tagged struct {
	source int
	snap   Snapshot
}

// fanIn starts every source and forwards their snapshots, tagged with the
// source's index, to one channel. wg counts the sources' Runs and the
// forwarders until they return.
func (e *Engine) fanIn(ctx context.Context, wg *sync.WaitGroup) <-chan tagged {
	out := make(chan tagged)
	for i, src := range e.sources {
		ch := make(chan Snapshot)
		wg.Add(2)
		go func() {
			defer wg.Done()
			src.Run(ctx, ch)
		}()
		go func() {
			defer wg.Done()
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

// Run loads the persisted state, starts the sinks and hands them that
// state (nginx may have restarted without it in memory; a store with a
// verify command checks it first), then follows the sources until ctx
// ends, and returns once the sinks have stopped. It returns an error only
// when the persisted state cannot be read.
func (e *Engine) Run(ctx context.Context) error {
	prev, err := e.store.Load()
	if err != nil {
		return err
	}
	e.log.Info("loaded persisted state", "upstreams", len(prev))
	e.m.upstreams.Set(float64(len(prev)))
	for _, s := range e.sinks {
		if r, ok := s.(DriftReporter); ok {
			r.ReportDriftTo(e.noteDrift)
		}
	}
	defer e.runSinks(ctx)()
	// Run returns only once its sources and the drain watch have: a
	// SIGHUP runs a kept source again under the next engine, and two of
	// its Runs must not overlap.
	var wg sync.WaitGroup
	defer wg.Wait()

	l := &loop{
		e:         e,
		prev:      prev,
		delivered: len(prev) == 0, // an empty state needs no push
		latest:    make([]*Snapshot, len(e.sources)),
		seen:      time.Now(),
		retry:     backoff.New(200*time.Millisecond, 10*time.Second),
		base:      prev,
	}
	if e.drains != nil {
		l.loadDrains()
		l.overlay(prev, nil) // for status; apply lays them over a loaded state
	}
	drainC := e.followDrains(ctx, &wg)
	if l.delivered {
		l.publish()
	} else {
		l.apply() // publishes
	}
	l.follow(ctx, e.fanIn(ctx, &wg), drainC)
	return nil
}

// loop is Run's state; only Run's goroutine touches it.
type loop struct {
	e    *Engine
	prev upstream.State // the applied state: persisted, and handed to the sinks once delivered
	// delivered is false until the state loaded at start has been handed
	// to the sinks.
	delivered  bool
	latest     []*Snapshot // each source's newest snapshot; nil until it answers
	seen       time.Time   // when the newest snapshot arrived
	snapshots  int         // taken in so far
	lastApply  time.Time
	holds      []Hold
	persistErr error   // the last Save's, until one succeeds or nothing needs saving
	planner    Planner // carries the drops awaiting confirmation
	retry      *backoff.Backoff

	settle    *time.Timer // fires when the quiescence window closes
	settleC   <-chan time.Time
	firstSeen time.Time   // the first snapshot of the window
	recheck   *time.Timer // fires when a held drop can be confirmed
	recheckC  <-chan time.Time
	retryC    <-chan time.Time // fires when a failed persist is tried again
	cause     string           // why the next apply runs, when not a registry snapshot

	// base is prev before the drain marks were laid over it: the state
	// the registry and the guards gave, which Plan compares with, so that
	// an undrained server comes back as the registry has it. planned is
	// the base of the state being applied.
	base, planned upstream.State
	dm            drainMarks

	// What the snapshots touched since the last plan (Snapshot.Touched),
	// relative to since, the source's map that plan took; known is false
	// when a snapshot since said nothing, or before the first plan.
	// touched is what the plan in progress says changed (nil: unknown);
	// lastFull is when a plan last looked at every upstream.
	since    upstream.State
	pending  []string
	known    bool
	touched  []string
	lastFull time.Time
	// compare: the apply in progress is the periodic full compare, which
	// also has the store and the sinks look at every upstream. A delta
	// that left a change out took the source's map, that change included,
	// as the applied state: only they can still tell it was not saved or
	// pushed.
	compare bool
}

// DefaultFullPlanEvery bounds how long plans go on trusting the sources'
// Touched: at least this often a plan compares every upstream, also with
// no new snapshot, a safety net for a source that would leave a change
// out (Engine.FullPlanEvery).
const DefaultFullPlanEvery = time.Minute

func (l *loop) publish() {
	l.e.publish(l.prev, l.holds, l.latest, l.snapshots, l.lastApply, l.persistErr)
}

// follow takes in snapshots and timers until ctx ends.
func (l *loop) follow(ctx context.Context, in <-chan tagged, drainC <-chan struct{}) {
	compare := time.NewTicker(l.e.fullPlanEvery())
	defer compare.Stop()
	for {
		select {
		case <-ctx.Done():
			if l.settle != nil {
				l.settle.Stop()
			}
			return
		case <-compare.C:
			// Plans have trusted the snapshots' Touched since the last
			// full one: compare every upstream now, even with no new
			// snapshot. Nothing is written or pushed when all is well.
			if l.known && l.settleC == nil && !slices.Contains(l.latest, nil) && time.Since(l.lastFull) >= l.e.fullPlanEvery() {
				l.known, l.compare, l.cause = false, true, history.CauseCompare
				l.apply()
			}
		case t := <-in:
			l.take(t)
		case <-l.settleC:
			l.apply()
		case <-l.retryC:
			l.retryC, l.cause = nil, history.CauseRetry
			l.apply()
		case <-l.recheckC:
			l.recheckC, l.cause = nil, history.CauseConfirm
			l.apply()
		case <-drainC:
			if l.loadDrains() {
				l.cause = causeDrain
				l.apply()
			}
		case d := <-l.e.drifts:
			l.e.cause = history.CauseDrift
			for _, name := range d.upstreams {
				l.e.note(name, "drift repair", "pushed again to "+d.sink)
			}
			l.publish()
		}
	}
}

// take records a snapshot, and applies at once or (re)starts the
// quiescence window: it closes Min after the newest snapshot, but never
// later than Max after the first one.
func (l *loop) take(t tagged) {
	snap := t.snap
	l.latest[t.source] = &snap
	l.seen = time.Now()
	l.snapshots++
	if snap.Touched == nil || len(l.latest) != 1 || len(l.pending)+len(snap.Touched) > len(snap.Upstreams) {
		l.known, l.pending = false, l.pending[:0]
	} else if l.known {
		l.pending = append(l.pending, snap.Touched...)
	}
	if slices.Contains(l.latest, nil) {
		l.publish() // apply nothing until every source has answered once
		return
	}
	w := l.e.wait
	if w.Min <= 0 {
		l.apply() // publishes
		return
	}
	now := time.Now()
	if l.settleC == nil {
		l.firstSeen = now
	}
	d := w.Min
	if w.Max > 0 && now.Add(d).After(l.firstSeen.Add(w.Max)) {
		d = max(l.firstSeen.Add(w.Max).Sub(now), 0)
	}
	if l.settle != nil {
		l.settle.Stop()
	}
	l.settle = time.NewTimer(d)
	l.settleC = l.settle.C
	l.publish() // settling
}

// apply plans the next state (once every source has answered), persists
// it and hands it to the sinks, then publishes the status. Until then the
// state loaded at start is the one handed over, after the store's check.
func (l *loop) apply() {
	l.settleC = nil
	defer l.publish()
	l.e.cause, l.cause = l.cause, ""
	if !l.delivered {
		l.e.cause = history.CauseStart
	}
	next := l.prev
	l.planned, l.touched = l.base, nil
	if !slices.Contains(l.latest, nil) {
		if l.e.planCause != "" {
			l.e.cause, l.e.planCause = l.e.planCause, ""
		}
		next = l.plan()
	} else if l.e.drains != nil {
		next = l.drainsOnly()
	}
	// One pass over every upstream finds both whether anything changed
	// and what, for the log; over the touched ones only when the plan
	// tells them and nothing else moved (no drain laid over either).
	// touched, when known, names every upstream in which next may differ
	// from l.prev in any field (its service too, which Diff ignores).
	var diff upstream.Changes
	var touched []string
	if l.touched != nil && upstream.SameState(l.prev, l.base) && upstream.SameState(next, l.planned) {
		touched = l.touched
		diff = upstream.DiffNames(l.prev, next, touched)
	} else {
		diff = upstream.Diff(l.prev, next)
	}
	changed := !diff.Empty()
	l.e.tellPlanned(next, l.prev, touched)
	compare := l.compare
	l.compare = false
	if !changed && l.delivered && !compare {
		l.base = l.planned
		l.persisted(nil) // nothing (any more) to persist: a pending retry has no work
		return
	}
	// Persist first: nothing reaches nginx that the file would not bring
	// back after a restart.
	var err error
	if ds, ok := l.e.store.(DeltaSaver); changed && ok && !compare {
		err = ds.SaveDelta(l.prev, next, diff)
	} else if changed || compare {
		err = l.e.store.Save(next) // writes nothing when the disk holds it
	} else if c, ok := l.e.store.(Checker); ok {
		err = c.Check()
	}
	l.persisted(err)
	if err != nil {
		return
	}
	if changed {
		l.e.logChanges(l.prev, next, diff)
		l.e.m.applies.Inc()
		l.e.m.upstreams.Set(float64(len(next)))
		l.e.m.lastApply.SetToCurrentTime()
		l.lastApply = time.Now()
	}
	seen := l.seen
	if compare && !changed {
		seen = time.Time{} // no registry change to time: a check of what is held
	}
	l.e.push(next, l.prev, touched, seen)
	l.prev, l.delivered, l.base = next, true, l.planned
}

// plan runs Plan over the newest snapshots and arms the timer that
// confirms a held drop.
func (l *loop) plan() upstream.State {
	d := Delta{}
	if l.known && time.Since(l.lastFull) < l.e.fullPlanEvery() {
		d = Delta{Since: l.since, Touched: l.pending}
	}
	next, holds, at, touched := l.planner.PlanDelta(l.base, deref(l.latest), l.e.guards, time.Now(), d)
	if touched == nil {
		l.lastFull = time.Now()
		l.e.m.plans.WithLabelValues("full").Inc()
	} else {
		l.e.m.plans.WithLabelValues("delta").Inc()
	}
	l.planned, l.touched = next, touched
	if len(l.latest) == 1 {
		l.since, l.pending, l.known = l.latest[0].Upstreams, l.pending[:0], true
	}
	next, holds = l.overlay(next, holds)
	if l.recheck != nil {
		l.recheck.Stop()
		l.recheckC = nil
	}
	if !at.IsZero() {
		l.recheck = time.NewTimer(max(time.Until(at), 0))
		l.recheckC = l.recheck.C
	}
	l.e.reportHolds(l.holds, holds)
	l.holds = holds
	return next
}

// persisted records the outcome of persisting. After a failure the
// newest state is tried again later with backoff, with no new snapshot: a
// verify command that refused the file may pass once the operator mends
// nginx.conf.
func (l *loop) persisted(err error) {
	if err == nil {
		failed := l.persistErr != nil
		l.persistErr, l.retryC = nil, nil
		l.retry.Reset()
		if failed {
			l.e.tellPersisted(nil, time.Time{})
		}
		return
	}
	l.e.m.storeErrors.Inc()
	d := l.retry.Next()
	if errors.Is(err, ErrVerifyFailed) {
		l.e.m.verifyFailures.Inc()
		l.e.log.Error("verify command refused the new upstream file; previous file kept, nginx left unchanged, will retry",
			"err", err, "retry_in", d)
	} else {
		l.e.log.Error("persist failed; nginx left unchanged, will retry", "err", err, "retry_in", d)
	}
	l.retryC = time.After(d)
	l.persistErr = err
	l.e.tellPersisted(err, time.Now().Add(d))
}

// Desired loads the persisted state, waits for one snapshot from every
// source and plans the next state without saving or pushing anything; it
// logs what the guards hold back. It serves the one-shot commands (render,
// and once through Once).
func (e *Engine) Desired(ctx context.Context) (prev, next upstream.State, holds []Hold, err error) {
	prev, err = e.store.Load()
	if err != nil {
		return nil, nil, nil, err
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the sources end with this call
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := e.fanIn(ctx, &wg)
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
	for _, h := range holds {
		e.log.Warn("guard holds a change", "upstream", h.Upstream, "guard", h.Guard, "reason", h.Reason)
	}
	if next, holds, err = e.desiredDrains(next, holds); err != nil {
		return nil, nil, nil, err
	}
	return prev, next, holds, nil
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
			e.note(h.Upstream, "hold", h.Guard+": "+h.Reason)
		}
	}
	for _, h := range before {
		if !slices.Contains(now, h) {
			e.log.Info("guard released", "upstream", h.Upstream, "reason_was", h.Reason)
			e.note(h.Upstream, "release", h.Guard+": "+h.Reason)
		}
	}
}

// logChanges logs c, the Diff of prev and next, a line per server, never
// the whole state.
func (e *Engine) logChanges(prev, next upstream.State, c upstream.Changes) {
	for _, name := range c.Set {
		added, removed := upstream.ServerDelta(prev[name], next[name])
		// A server in both lists stayed and changed its parameters: one
		// "~ server" line says what changed.
		was := make(map[netip.AddrPort]upstream.Server, len(removed))
		for _, s := range removed {
			was[s.Addr] = s
		}
		for _, s := range added {
			if o, ok := was[s.Addr]; ok {
				delete(was, s.Addr)
				e.log.Info("~ server", "upstream", name, "server", s.Addr.String(), "instance", s.Instance, "change", upstream.ServerChange(o, s))
				e.note(name, "~ server", s.Addr.String()+" "+upstream.ServerChange(o, s))
			}
		}
		for _, s := range removed {
			if _, ok := was[s.Addr]; ok {
				e.log.Info("- server", "upstream", name, "server", s.Addr.String(), "instance", s.Instance)
				e.note(name, "- server", s.Addr.String())
			}
		}
		for _, s := range added {
			if prev[name].ServerAt(s.Addr) < 0 { // new here, not changed
				e.log.Info("+ server", "upstream", name, "server", s.Addr.String(), "instance", s.Instance, "weight", s.Weight)
				e.note(name, "+ server", fmt.Sprintf("%s weight=%d", s.Addr, s.Weight))
			}
		}
		if o, ok := prev[name]; ok && o.Keepalive != next[name].Keepalive {
			e.log.Info("~ keepalive", "upstream", name, "from", o.Keepalive, "to", next[name].Keepalive)
			e.note(name, "~ keepalive", fmt.Sprintf("from=%d to=%d", o.Keepalive, next[name].Keepalive))
		}
		if o, ok := prev[name]; ok && o.Balance != next[name].Balance {
			e.log.Info("~ balance", "upstream", name, "from", o.Balance.String(), "to", next[name].Balance.String())
			e.note(name, "~ balance", fmt.Sprintf("from=%q to=%q", o.Balance, next[name].Balance))
		}
		if _, ok := prev[name]; !ok {
			e.log.Info("+ upstream", "upstream", name, "servers", len(next[name].Servers))
			e.note(name, "+ upstream", fmt.Sprintf("%d servers", len(next[name].Servers)))
		}
		if o, ok := prev[name]; !ok || len(o.Servers) != len(next[name].Servers) {
			if !e.timeline.Has(name) {
				e.count(name, len(o.Servers)) // the count before this run's first change (0: new)
			}
			e.count(name, len(next[name].Servers))
		}
	}
	for _, name := range c.Removed {
		e.log.Info("- upstream", "upstream", name)
		e.note(name, "- upstream", "")
		if !e.timeline.Has(name) {
			e.count(name, len(prev[name].Servers))
		}
		e.count(name, 0)
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
	plans                       *prometheus.CounterVec
	upstreams, holds, lastApply prometheus.Gauge
	propagation                 prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applies: metric.Counter("swallowkeeper_engine_applies_total",
			"Changed states persisted and handed to the sinks."),
		storeErrors: metric.Counter("swallowkeeper_engine_persist_errors_total",
			"Failed attempts to persist the upstream file; nginx is left unchanged until one succeeds."),
		verifyFailures: metric.Counter("swallowkeeper_verify_failures_total",
			"Written upstream files the verify command refused; the previous file was put back and nothing pushed (also counted in swallowkeeper_engine_persist_errors_total)."),
		holdsStarted: metric.CounterVec("swallowkeeper_guard_holds_total",
			"Times a guard started holding back part of the registry's answer, by guard.", "guard"),
		plans: metric.CounterVec("swallowkeeper_engine_plans_total",
			"Plans of the next state, by kind: delta (only the upstreams the source's snapshots touched were looked at) or full (every upstream).", "kind"),
		upstreams: metric.Gauge("swallowkeeper_upstreams",
			"Upstreams in the applied state."),
		holds: metric.Gauge("swallowkeeper_guard_holds_active",
			"Guard holds in force now."),
		lastApply: metric.Gauge("swallowkeeper_engine_last_apply_timestamp_seconds",
			"When a changed state was last persisted and handed to the sinks."),
		propagation: metric.Histogram("swallowkeeper_propagation_seconds",
			"From a registry snapshot's arrival to every data plane acknowledging the resulting state (superseded states are not counted).",
			prometheus.ExponentialBuckets(0.0005, 2, 16)),
	}
	if reg != nil {
		// A configuration reload (SIGHUP) builds a new engine on the same
		// registry: it takes over the collectors already there, so that
		// counters go on instead of starting again from zero.
		m.applies = reuse(reg, m.applies)
		m.storeErrors = reuse(reg, m.storeErrors)
		m.verifyFailures = reuse(reg, m.verifyFailures)
		m.holdsStarted = reuse(reg, m.holdsStarted)
		m.plans = reuse(reg, m.plans)
		m.upstreams = reuse(reg, m.upstreams)
		m.holds = reuse(reg, m.holds)
		m.lastApply = reuse(reg, m.lastApply)
		m.propagation = reuse(reg, m.propagation)
	}
	return m
}

// reuse registers c, or returns the collector of the same kind registered
// before it.
func reuse[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(T); ok {
			return old
		}
	}
	panic(fmt.Errorf("engine metrics: %w", err))
}
