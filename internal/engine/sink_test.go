package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// runSink applies changes in its Run goroutine, as real sinks do: it
// records each change (and its Prior) in the journal and acknowledges it,
// or fails it with fail when that is set. It also records how it stopped.
type runSink struct {
	j       *journal
	name    string
	fail    error
	changes chan Change
	prior   chan upstream.State
}

func newRunSink(j *journal, name string, fail error) *runSink {
	return &runSink{j: j, name: name, fail: fail, changes: make(chan Change, 10), prior: make(chan upstream.State, 10)}
}

func (s *runSink) Update(c Change) { s.changes <- c }

func (s *runSink) Run(stop, work context.Context) {
	for {
		select {
		case <-stop.Done():
			ev := s.name + " stopped, work live"
			if work.Err() != nil {
				ev = s.name + " stopped, work ended"
			}
			s.j.record(ev, nil)
			return
		case c := <-s.changes:
			s.prior <- c.Prior
			if s.fail != nil {
				s.j.record(s.name+" failed", c.State)
				c.Fail(s.fail)
				continue
			}
			s.j.record(s.name+" applied", c.State)
			c.Ack()
		}
	}
}

func (s *runSink) SinkStatus() SinkStatus { return SinkStatus{Kind: "test", Name: s.name} }

// sentSource answers once with a fixed snapshot.
type sentSource Snapshot

func (s sentSource) Run(ctx context.Context, out chan<- Snapshot) {
	select {
	case out <- Snapshot(s):
	case <-ctx.Done():
	}
	<-ctx.Done()
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestOnceSavesThenWaitsForEverySink: the one-shot path saves first, hands
// the state to every sink with the loaded state as Prior, waits until each
// has answered (acknowledged or failed) and stops them before it returns
// the state and the failures.
func TestOnceSavesThenWaitsForEverySink(t *testing.T) {
	loaded := state(up("old", "10.0.0.9:80"))
	j := newJournal(loaded)
	good, bad := newRunSink(j, "good", nil), newRunSink(j, "bad", errors.New("nginx down"))
	want := state(up("web", "10.0.0.1:80"))
	e := New([]Source{sentSource(snap(1, want["web"]))}, memStore{j}, []Sink{good, bad}, Guards{MinServices: 1}, Wait{}, discardLog(), nil)
	got, err := e.Once(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nginx down") {
		t.Fatalf("Once = %v, want the failing sink's error", err)
	}
	if !got.Equal(want) {
		t.Fatalf("Once synced %v, want %v", got.Names(), want.Names())
	}
	j.mu.Lock()
	ev := strings.Join(j.events, ", ")
	j.mu.Unlock()
	// Both sinks answered and stopped before Once returned.
	for _, w := range []string{"good applied", "bad failed", "good stopped", "bad stopped"} {
		if !strings.Contains(ev, w) {
			t.Fatalf("events %q lack %q", ev, w)
		}
	}
	if !strings.HasPrefix(ev, "save, ") {
		t.Fatalf("events %q, want the save first", ev)
	}
	for _, s := range []*runSink{good, bad} {
		if p := <-s.prior; !p.Equal(loaded) {
			t.Fatalf("%s got Prior %v, want the loaded state %v", s.name, p.Names(), loaded.Names())
		}
	}
}

// TestOnceRefusesToPushAStateItCannotSave: a failed save (a refused verify)
// ends the one-shot sync before any sink sees the state.
func TestOnceRefusesToPushAStateItCannotSave(t *testing.T) {
	j := newJournal(upstream.State{})
	j.failing = 1
	j.failErr = fmt.Errorf("store: f: %w: nginx -t said no", ErrVerifyFailed)
	s := newRunSink(j, "s", nil)
	e := New([]Source{sentSource(snap(1, up("web", "10.0.0.1:80")))}, memStore{j}, []Sink{s}, Guards{MinServices: 1}, Wait{}, discardLog(), nil)
	if _, err := e.Once(context.Background()); !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("Once = %v, want the refusal", err)
	}
	if ev := j.wait(t, 1); len(ev) != 1 || ev[0] != "save-failed" {
		t.Fatalf("events %v, want only the failed save", ev)
	}
}

// TestRunStopsSinksWithWorkStillLive: when Run's context ends the sinks
// stop, but the context their requests run under is still live (the grace
// period), and Run returns only once every sink has returned.
func TestRunStopsSinksWithWorkStillLive(t *testing.T) {
	j := newJournal(upstream.State{})
	s := newRunSink(j, "s", nil)
	e := New([]Source{make(chanSource)}, memStore{j}, []Sink{s}, Guards{MinServices: 1}, Wait{}, discardLog(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	for e.Status() == nil { // started
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if strings.Join(j.events, ",") != "s stopped, work live" {
		t.Fatalf("events when Run returned: %v, want the sink stopped within the grace period", j.events)
	}
}

// observerSink records what the engine tells it about persisting, in the
// journal, beside the pushes.
type observerSink struct {
	recSink
	retryAt chan time.Time
}

func (o observerSink) Persisted(err error, retryAt time.Time) {
	if err != nil {
		o.j.record("told failed", nil)
		o.retryAt <- retryAt
		return
	}
	o.j.record("told ok", nil)
}

// TestEngineTellsPersistObserversAboutFailures: a sink that watches the
// persist step hears of each failure with the time of the next try, and of
// the end of the failures just before the state is handed over.
func TestEngineTellsPersistObserversAboutFailures(t *testing.T) {
	j := newJournal(upstream.State{})
	j.failing = 2
	obs := observerSink{recSink{j}, make(chan time.Time, 10)}
	e := New([]Source{sentSource(snap(1, up("web", "10.0.0.1:80")))}, memStore{j}, []Sink{obs}, Guards{MinServices: 1}, Wait{}, discardLog(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	ev := j.wait(t, 7)
	if got, want := strings.Join(ev, ", "), "save-failed, told failed, save-failed, told failed, save, told ok, push"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	for range 2 {
		if at := <-obs.retryAt; time.Until(at) < -5*time.Second || time.Until(at) > 10*time.Second {
			t.Fatalf("told to expect the retry at %v, %v from now", at, time.Until(at))
		}
	}
}

// checkStore is a memStore whose Check fails the first failing times.
type checkStore struct {
	memStore
	failing *int
}

func (c checkStore) Check() error {
	c.j.mu.Lock()
	fail := *c.failing > 0
	if fail {
		*c.failing--
	}
	c.j.mu.Unlock()
	if fail {
		c.j.record("check-failed", nil)
		return fmt.Errorf("store: f: %w: nginx: [emerg] broken_by_operator", ErrVerifyFailed)
	}
	c.j.record("check", nil)
	return nil
}

// TestEngineChecksTheLoadedStateBeforeTheStartPush: a store that verifies
// what it saves checks the file it loaded before the engine pushes it at
// start; while the check fails nothing is pushed, the status shows why,
// and the check is retried with no snapshot from the registry.
func TestEngineChecksTheLoadedStateBeforeTheStartPush(t *testing.T) {
	loaded := state(up("web", "10.0.0.1:80"))
	j := newJournal(loaded)
	failing := 2
	e := New([]Source{make(chanSource)}, checkStore{memStore{j}, &failing}, []Sink{recSink{j}}, Guards{MinServices: 1}, Wait{}, discardLog(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	st := waitStatus(t, e, func(st *Status) bool { return st.PersistError != "" })
	if !strings.Contains(st.PersistError, "broken_by_operator") {
		t.Fatalf("status persist error %q", st.PersistError)
	}
	ev := j.wait(t, 4)
	if got, want := strings.Join(ev, " "), "check-failed check-failed check push"; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if !j.states[3].Equal(loaded) {
		t.Fatalf("pushed %v, want the loaded state", j.states[3].Names())
	}
	waitStatus(t, e, func(st *Status) bool { return st.PersistError == "" })
}
