package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Sink brings one data plane (an nginx) to the desired state. The engine
// owns its sinks: it hands them each persisted state (Update), runs them
// while it runs (Run) and reports on them (SinkStatus), so that the
// daemon's wiring, readiness and status need no knowledge of any kind.
type Sink interface {
	// Update hands over the newest desired state. It never blocks: a sink
	// still busy with an older change keeps only the newest one.
	Update(Change)
	// Run applies the states handed over until stop ends. Requests to the
	// data plane run under work, which ends some time after stop, so that
	// one in flight at shutdown can finish instead of leaving nginx
	// half-updated.
	Run(stop, work context.Context)
	// SinkStatus says how the data plane stands, in the shape common to
	// every kind of sink. Safe from any goroutine.
	SinkStatus() SinkStatus
}

// Change is a desired state handed to the sinks.
type Change struct {
	// State is never changed in place once handed over, nor are its
	// server lists: a sink may tell it from the last one by identity.
	State upstream.State
	// Prior is what the data plane may hold already without this sink
	// having sent it (the persisted state, in a one-shot run): a sink that
	// deletes the upstreams no longer wanted deletes these names too.
	Prior upstream.State
	// From and Touched, when Touched is not nil, say how State differs
	// from the state handed over before it: in the Touched names only, in
	// any field (the service too). A sink whose data plane holds From
	// exactly can bring it to State by looking at those alone; any other
	// sink compares every upstream.
	From    upstream.State
	Touched []string
	// Done reports on the change: nil once the data plane holds State, an
	// error when an attempt to bring it there failed (a sink that retries
	// may report again, and nil once it succeeds). It is not called for a
	// change superseded by a newer one. Safe from any goroutine; sinks
	// call it through Ack and Fail, which allow a nil Done.
	Done func(error)
}

// Ack reports that the data plane holds the change's state.
func (c Change) Ack() {
	if c.Done != nil {
		c.Done(nil)
	}
}

// Fail reports a failed attempt to apply the change.
func (c Change) Fail(err error) {
	if c.Done != nil {
		c.Done(err)
	}
}

// SinkStatus is what a sink says about itself: the part every kind has,
// which /readyz, /status, the status page and `swallowkeeper status` show
// the same way for all, and a Detail of its own.
type SinkStatus struct {
	// Kind names the kind of sink ("dyups", "reload"). Sinks of one kind
	// stand in for each other: the daemon is ready when every kind has a
	// Ready sink.
	Kind string
	// Name names this sink for people: a dyups interface's URL, or
	// "reload: nginx -s reload".
	Name        string
	InSync      bool      // the data plane held the desired state at the last attempt
	LastSync    time.Time // end of the last attempt that succeeded
	LastError   string    // the last failure, for people
	LastErrorAt time.Time
	Upstreams   int // upstreams the data plane acknowledged; 0 when the kind does not count them
	// Ready says whether this sink lets the daemon answer ready: a dyups
	// target in sync, a reload sink that is not failing. NotReady says why
	// not, in the words /readyz answers with when no sink of the kind is
	// Ready.
	Ready    bool
	NotReady string
	// Detail is the kind's own status (drift repairs, failed attempts),
	// marshalled into JSON after the common fields of the sink's /status
	// entry; nil when the kind has none.
	Detail any
	// Section, when set, is the top-level /status key that shows Detail
	// instead (reload mode's "reload", where clients have always read it).
	Section string
}

// PersistObserver is implemented by a sink whose data plane reads the
// persisted file itself (reload mode): the store's verify command is its
// nginx -t, so a state the engine cannot persist is that sink's failure.
// The engine calls Persisted after each failed attempt to persist a state,
// with the error and when it tries again, and once with a nil error when
// the failures end: just before the state is handed over with Update, or
// when nothing is left to persist.
type PersistObserver interface {
	Persisted(err error, retryAt time.Time)
}

// Checker is implemented by a Store that verifies what it saves
// (store.File with a verify command). The engine calls Check before it
// pushes the state it loaded at start, which no Save of this run has
// verified: reload mode then reloads nginx at start only with a file its
// test accepts. An error wraps ErrVerifyFailed.
type Checker interface {
	Check() error
}

// ShutdownGrace is how long the sinks may finish a push in flight after
// the engine's context ends.
const ShutdownGrace = 5 * time.Second

// SinkStatuses returns every sink's status, in the order they were given.
func (e *Engine) SinkStatuses() []SinkStatus {
	out := make([]SinkStatus, len(e.sinks))
	for i, s := range e.sinks {
		out[i] = s.SinkStatus()
	}
	return out
}

// runSinks starts every sink's Run. They stop when ctx ends; their
// requests are cut ShutdownGrace later at the latest. The returned
// function waits until every sink has returned.
func (e *Engine) runSinks(ctx context.Context) (wait func()) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(ShutdownGrace, cancel) })
	var wg sync.WaitGroup
	for _, s := range e.sinks {
		wg.Go(func() { s.Run(ctx, work) })
	}
	return func() {
		wg.Wait()
		stop()
		cancel()
	}
}

// push hands the state to every sink, and observes the propagation time
// (registry change seen → every sink acknowledged) when the last one acks.
func (e *Engine) push(s, from upstream.State, touched []string, seen time.Time) {
	remaining := atomic.Int64{}
	remaining.Store(int64(len(e.sinks)))
	done := func() {
		if remaining.Add(-1) == 0 && !seen.IsZero() {
			e.m.propagation.Observe(time.Since(seen).Seconds())
		}
	}
	for _, sink := range e.sinks {
		var once sync.Once
		sink.Update(Change{State: s, From: from, Touched: touched, Done: func(err error) {
			if err == nil {
				once.Do(done)
			}
		}})
	}
}

// PlanObserver is a sink that hears of every planned state, also one
// Equal to the state delivered (which then is not handed over again):
// the split sink needs the registry service of each upstream, which
// Equal ignores and a state loaded from the persisted file lacks.
type PlanObserver interface {
	Planned(upstream.State)
}

// tellPlanned passes a planned state to the sinks that watch plans.
// DeltaPlanObserver is a PlanObserver that can be told how a planned
// state differs from the one planned before: from, in the touched names
// only. It must compare every upstream when from is not the state it was
// told last.
type DeltaPlanObserver interface {
	PlannedFrom(s, from upstream.State, touched []string)
}

// tellPlanned tells the observers of s, which differs from from in the
// touched names only (nil: not known).
func (e *Engine) tellPlanned(s, from upstream.State, touched []string) {
	for _, sink := range e.sinks {
		if d, ok := sink.(DeltaPlanObserver); ok && touched != nil {
			d.PlannedFrom(s, from, touched)
		} else if o, ok := sink.(PlanObserver); ok {
			o.Planned(s)
		}
	}
}

// tellPersisted passes the outcome of persisting to the sinks that watch it.
func (e *Engine) tellPersisted(err error, retryAt time.Time) {
	for _, s := range e.sinks {
		if o, ok := s.(PersistObserver); ok {
			o.Persisted(err, retryAt)
		}
	}
}

// Once is the one-shot sync (the once command): it plans as Desired does,
// saves the state through the store (its verify command included), hands
// it to every sink, with the loaded state as Prior, and waits until each
// has acknowledged it or failed. The sinks run only for the call. It
// returns the state it synced and every sink's failure, joined.
func (e *Engine) Once(ctx context.Context) (upstream.State, error) {
	prev, next, _, err := e.Desired(ctx)
	if err != nil {
		return nil, err
	}
	if err := e.store.Save(next); err != nil {
		return nil, err
	}
	stop, cancel := context.WithCancel(ctx)
	reports := make(chan error, len(e.sinks))
	var wg sync.WaitGroup
	for _, s := range e.sinks {
		var once sync.Once
		s.Update(Change{State: next, Prior: prev, Done: func(err error) {
			once.Do(func() { reports <- err })
		}})
		wg.Go(func() { s.Run(stop, stop) })
	}
	var errs []error
	for n := 0; n < len(e.sinks); n++ {
		select {
		case err := <-reports:
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%d of %d sinks did not answer: %w", len(e.sinks)-n, len(e.sinks), context.Cause(ctx)))
			n = len(e.sinks)
		}
	}
	cancel()
	wg.Wait()
	return next, errors.Join(errs...)
}
