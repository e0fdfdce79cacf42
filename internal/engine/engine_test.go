package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// chanSource sends whatever the test puts on its channel.
type chanSource chan Snapshot

func (c chanSource) Run(ctx context.Context, out chan<- Snapshot) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-c:
			select {
			case out <- s:
			case <-ctx.Done():
				return
			}
		}
	}
}

// journal records the order of saves and pushes across the fakes.
type journal struct {
	mu      sync.Mutex
	events  []string
	states  []upstream.State
	failing int   // saves to fail before succeeding
	failErr error // what they fail with; nil: "disk full"
	stored  upstream.State
	changed chan struct{}
}

func newJournal(stored upstream.State) *journal {
	return &journal{stored: stored, changed: make(chan struct{}, 100)}
}

func (j *journal) record(ev string, s upstream.State) {
	j.mu.Lock()
	j.events = append(j.events, ev)
	j.states = append(j.states, s)
	j.mu.Unlock()
	j.changed <- struct{}{}
}

type memStore struct{ j *journal }

func (m memStore) Load() (upstream.State, error) { return m.j.stored.Clone(), nil }
func (m memStore) Save(s upstream.State) error {
	m.j.mu.Lock()
	fail := m.j.failing > 0
	if fail {
		m.j.failing--
	}
	err := m.j.failErr
	m.j.mu.Unlock()
	if fail {
		m.j.record("save-failed", s)
		if err == nil {
			err = errors.New("disk full")
		}
		return err
	}
	m.j.record("save", s)
	return nil
}

type recSink struct{ j *journal }

func (r recSink) Update(c Change)             { r.j.record("push", c.State); c.Ack() }
func (r recSink) Run(stop, _ context.Context) { <-stop.Done() }
func (r recSink) SinkStatus() SinkStatus      { return SinkStatus{Kind: "rec", Name: "rec", Ready: true} }

func (j *journal) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		j.mu.Lock()
		got := len(j.events)
		ev := append([]string(nil), j.events...)
		j.mu.Unlock()
		if got >= n {
			return ev
		}
		select {
		case <-j.changed:
		case <-deadline:
			t.Fatalf("waited for %d events, have %v", n, ev)
		}
	}
}

func (j *journal) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.events)
}

// handled waits until the engine has taken in n snapshots and published
// the status that follows the last one, and fails unless the journal then
// holds exactly want events. With no quiescence window the engine saves
// and pushes whatever a snapshot brings before it publishes that status,
// so the count is final for those snapshots: this is how a test observes
// that a snapshot changed nothing. Only for tests where no timer (retry,
// drop confirmation) can add events meanwhile. It returns that status.
func (j *journal) handled(t *testing.T, e *Engine, n, want int) *Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	st := e.Status()
	for st == nil || st.Snapshots < n {
		if time.Now().After(deadline) {
			t.Fatalf("the engine took in %v of %d snapshots within 5s", st, n)
		}
		time.Sleep(time.Millisecond)
		st = e.Status()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.events) != want {
		t.Fatalf("after the engine handled %d snapshots the journal holds %v, want %d events", st.Snapshots, j.events, want)
	}
	return st
}

func startEngine(t *testing.T, srcs []Source, j *journal, w Wait) *Engine {
	return startEngineGuarded(t, srcs, j, w, Guards{MinServices: 1})
}

func startEngineGuarded(t *testing.T, srcs []Source, j *journal, w Wait, g Guards) *Engine {
	t.Helper()
	return running(t, New(srcs, memStore{j}, []Sink{recSink{j}}, g, w, slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
}

// running runs e until the test ends, and returns it.
func running(t *testing.T, e *Engine) *Engine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

// TestEngineConfirmsABigDropOnItsOwn: with no further answer from the
// registry, the engine plans again when the confirmation time is up, and
// the status shows the hold meanwhile.
func TestEngineConfirmsABigDropOnItsOwn(t *testing.T) {
	four := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
	j := newJournal(state(four))
	src := make(chanSource)
	const confirm = time.Second // far beyond the few ms handled takes to look
	e := startEngineGuarded(t, []Source{src}, j, Wait{}, Guards{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.5, ConfirmAfter: confirm})
	j.wait(t, 1) // the start push
	sent := time.Now()
	src <- snap(1, up("web", "10.0.0.1:80"))
	st := j.handled(t, e, 1, 1) // held: no save, no push
	if len(st.Holds) == 0 || st.Holds[0].Guard != GuardDrop || st.Holds[0].Since.IsZero() {
		t.Fatalf("status holds %+v, want a drop hold with its start time", st.Holds)
	}
	ev := j.wait(t, 3)
	if took := time.Since(sent); took < confirm || took > confirm+2*time.Second {
		t.Errorf("the drop was applied after %v, want after the %v confirmation", took, confirm)
	}
	if ev[1] != "save" || ev[2] != "push" || !j.states[2].Equal(state(up("web", "10.0.0.1:80"))) {
		t.Fatalf("events %v, last state %v", ev, j.states[len(j.states)-1])
	}
	// The status is published right after the push.
	for deadline := time.Now().Add(time.Second); len(e.Status().Holds) != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("hold not released: %+v", e.Status().Holds)
		}
	}
}

func TestEnginePushesPersistedStateAtStart(t *testing.T) {
	j := newJournal(state(up("web", "10.0.0.1:80")))
	startEngine(t, []Source{make(chanSource)}, j, Wait{})
	ev := j.wait(t, 1)
	if ev[0] != "push" || !j.states[0].Equal(state(up("web", "10.0.0.1:80"))) {
		t.Fatalf("first event %v %v, want a push of the persisted state", ev, j.states)
	}
}

func TestEngineWaitsForEverySourceAndPersistsBeforePushing(t *testing.T) {
	j := newJournal(upstream.State{})
	a, b := make(chanSource), make(chanSource)
	e := startEngine(t, []Source{a, b}, j, Wait{})
	a <- snap(1, up("web", "10.0.0.1:80"))
	if st := j.handled(t, e, 1, 0); st.Answered != 1 || st.Sources != 2 { // b has not answered: apply nothing
		t.Fatalf("status shows %d of %d sources answered, want 1 of 2", st.Answered, st.Sources)
	}
	b <- snap(1, up("api", "10.0.1.1:80"))
	ev := j.wait(t, 2)
	if ev[0] != "save" || ev[1] != "push" {
		t.Fatalf("events %v, want save then push", ev)
	}
	if !j.states[1].Equal(state(up("web", "10.0.0.1:80"), up("api", "10.0.1.1:80"))) {
		t.Fatalf("pushed %v", j.states[1].Names())
	}
	// The same answer again changes nothing: no save, no push.
	a <- snap(1, up("web", "10.0.0.1:80"))
	j.handled(t, e, 3, 2)
}

func TestEngineRetriesPersistAndNeverPushesUnsavedState(t *testing.T) {
	j := newJournal(upstream.State{})
	j.failing = 2
	src := make(chanSource)
	startEngine(t, []Source{src}, j, Wait{})
	src <- snap(1, up("web", "10.0.0.1:80"))
	ev := j.wait(t, 4)
	want := []string{"save-failed", "save-failed", "save", "push"}
	for i := range want {
		if ev[i] != want[i] {
			t.Fatalf("events %v, want %v", ev, want)
		}
	}
}

func TestEngineHoldsAnEmptyRegistryAnswer(t *testing.T) {
	j := newJournal(state(up("web", "10.0.0.1:80")))
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{})
	j.wait(t, 1) // the start push
	src <- snap(0)
	st := j.handled(t, e, 1, 1) // only the start push
	if len(st.Holds) != 1 || st.Holds[0].Guard != GuardNoServices || !st.Applied.Equal(state(up("web", "10.0.0.1:80"))) {
		t.Fatalf("status holds %+v, applied %v; want a no_services hold over the persisted state", st.Holds, st.Applied.Names())
	}
}

// TestEngineWaitCoalescesBursts: five different answers in a burst give
// one save and one push, of the last. Each answer differs from the others,
// so the first save shows which one the engine applied first; once the
// last is applied, later plans equal it and save nothing.
func TestEngineWaitCoalescesBursts(t *testing.T) {
	j := newJournal(upstream.State{})
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{Min: 500 * time.Millisecond, Max: 10 * time.Second})
	var last upstream.Upstream
	for i := range 5 {
		last = up("web", fmt.Sprintf("10.0.0.%d:80", i+1))
		src <- snap(1, last)
	}
	ev := j.wait(t, 2)
	j.mu.Lock()
	first := j.states[0]
	j.mu.Unlock()
	if ev[0] != "save" || ev[1] != "push" || !first.Equal(state(last)) {
		t.Fatalf("burst of 5 gave events %v, first saving %v; want one save+push of the last (%v)", ev, first["web"].Servers, last.Servers)
	}
	if st := e.Status(); st.Snapshots != 5 {
		t.Fatalf("the engine applied after taking in %d of the 5 answers", st.Snapshots)
	}
}

// TestEngineWaitMaxBoundsTheDelay: under answers that never stop coming,
// the engine applies wait.max after the first one: not sooner, and not
// much later. wait.min is longer than the test, so only wait.max can end
// the wait; a pause in the stream (a loaded machine) cannot let min apply
// early. The delay is measured from just before the first answer is sent
// to the engine's own apply time (Status.LastApply), so the lower bound
// holds exactly (a timer never fires early) and only the upper bound
// needs slack for a slow machine; the slack is below wait.max, so a wait
// of twice the bound fails too.
func TestEngineWaitMaxBoundsTheDelay(t *testing.T) {
	const maxWait, slack = 600 * time.Millisecond, 550 * time.Millisecond
	j := newJournal(upstream.State{})
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{Min: time.Hour, Max: maxWait})
	answer := func(i int) Snapshot {
		return snap(1, up("web", "10.0.0.1:80"), up("n", fmt.Sprintf("10.9.0.1:%d", 1000+i)))
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	giveUp := time.After(5 * time.Second)
	first := time.Now()
	src <- answer(0)
	sent := 1
	for j.count() < 2 { // save, push
		select {
		case <-j.changed:
		case <-tick.C:
			src <- answer(sent)
			sent++
		case <-giveUp:
			t.Fatalf("no apply within 5s of constant churn (%d answers); wait.max %v is not honoured", sent, maxWait)
		}
	}
	st := e.Status() // published right after the push
	for deadline := time.Now().Add(5 * time.Second); st.LastApply.IsZero(); st = e.Status() {
		if time.Now().After(deadline) {
			t.Fatal("no status published after the push")
		}
		time.Sleep(time.Millisecond)
	}
	took := st.LastApply.Sub(first)
	t.Logf("applied %v after the first of %d answers (%d taken in by then)", took, sent, st.Snapshots)
	if took < maxWait {
		t.Fatalf("applied %v after the first answer, sooner than wait.max %v under churn", took, maxWait)
	}
	if took > maxWait+slack {
		t.Fatalf("applied %v after the first answer; wait.max is %v (allowing %v for a slow machine)", took, maxWait, slack)
	}
}

// TestEngineRetriesAFileTheVerifierRefused: a file the store's verify
// command refuses is not pushed; the status and a counter say why; the
// engine retries the same, newest state with its backoff, with no new
// answer from the registry, and pushes it once the command accepts.
func TestEngineRetriesAFileTheVerifierRefused(t *testing.T) {
	j := newJournal(state(up("api", "10.0.1.1:80")))
	j.failing = 2
	j.failErr = fmt.Errorf("store: upstreams.conf: %w: nginx: [emerg] duplicate upstream \"web\"; the previous file was put back", ErrVerifyFailed)
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{})
	j.wait(t, 1) // the start push
	want := state(up("api", "10.0.1.1:80"), up("web", "10.0.0.1:80"))
	src <- snap(2, want["api"], want["web"])
	st := waitStatus(t, e, func(st *Status) bool { return st.PersistError != "" })
	if !strings.Contains(st.PersistError, `duplicate upstream "web"`) || !st.Applied.Equal(state(up("api", "10.0.1.1:80"))) {
		t.Fatalf("after a refusal the status shows persist error %q and applied %v; want the refusal and the old state", st.PersistError, st.Applied.Names())
	}
	ev := j.wait(t, 5)
	if got, w := strings.Join(ev, " "), "push save-failed save-failed save push"; got != w {
		t.Fatalf("events %q, want %q", got, w)
	}
	if !j.states[4].Equal(want) {
		t.Fatalf("pushed %v after the retries, want %v", j.states[4].Names(), want.Names())
	}
	if n := testutil.ToFloat64(e.m.verifyFailures); n != 2 {
		t.Fatalf("swallowkeeper_verify_failures_total = %v, want 2", n)
	}
	waitStatus(t, e, func(st *Status) bool { return st.PersistError == "" && st.Applied.Equal(want) })
}

// waitStatus polls the engine's published status until ok holds.
func waitStatus(t *testing.T, e *Engine, ok func(*Status) bool) *Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.Status()
		if st != nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never got there; last %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestEngineClearsAPersistErrorWhenNothingIsLeftToPersist: when the
// registry goes back to the applied state while a save is failing, there
// is nothing left to write: the status stops showing the error.
func TestEngineClearsAPersistErrorWhenNothingIsLeftToPersist(t *testing.T) {
	applied := state(up("api", "10.0.1.1:80"))
	j := newJournal(applied)
	j.failing = 1000
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{})
	j.wait(t, 1) // the start push
	src <- snap(2, up("api", "10.0.1.1:80"), up("web", "10.0.0.1:80"))
	waitStatus(t, e, func(st *Status) bool { return st.PersistError != "" })
	src <- snap(1, applied["api"])
	waitStatus(t, e, func(st *Status) bool { return st.Snapshots == 2 && st.PersistError == "" && st.Applied.Equal(applied) })
}
