package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

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
	failing int // saves to fail before succeeding
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
	m.j.mu.Unlock()
	if fail {
		m.j.record("save-failed", s)
		return errors.New("disk full")
	}
	m.j.record("save", s)
	return nil
}

type recSink struct{ j *journal }

func (r recSink) Update(c Change) { r.j.record("push", c.State); c.Ack() }

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

// quiet fails if any event is recorded within d from now.
func (j *journal) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	j.mu.Lock()
	before := len(j.events)
	j.mu.Unlock()
	time.Sleep(d)
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.events) != before {
		t.Fatalf("unexpected events after %d: %v", before, j.events)
	}
}

func startEngine(t *testing.T, srcs []Source, j *journal, w Wait) *Engine {
	return startEngineGuarded(t, srcs, j, w, Guards{MinServices: 1})
}

func startEngineGuarded(t *testing.T, srcs []Source, j *journal, w Wait, g Guards) *Engine {
	t.Helper()
	e := New(srcs, memStore{j}, []Sink{recSink{j}}, g, w, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
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
	e := startEngineGuarded(t, []Source{src}, j, Wait{}, Guards{MinServices: 1, ConfirmAfter: 300 * time.Millisecond})
	j.wait(t, 1) // the start push
	sent := time.Now()
	src <- snap(1, up("web", "10.0.0.1:80"))
	j.quiet(t, 150*time.Millisecond)
	st := e.Status()
	if len(st.Holds) == 0 || st.Holds[0].Guard != GuardDrop || st.Holds[0].Since.IsZero() {
		t.Fatalf("status holds %+v, want a drop hold with its start time", st.Holds)
	}
	ev := j.wait(t, 3)
	if took := time.Since(sent); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("the drop was applied after %v, want after the 300ms confirmation", took)
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
	startEngine(t, []Source{a, b}, j, Wait{})
	a <- snap(1, up("web", "10.0.0.1:80"))
	j.quiet(t, 100*time.Millisecond) // b has not answered: apply nothing
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
	j.quiet(t, 100*time.Millisecond)
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
	startEngine(t, []Source{src}, j, Wait{})
	j.wait(t, 1) // the start push
	src <- snap(0)
	j.quiet(t, 150*time.Millisecond)
}

func TestEngineWaitCoalescesBursts(t *testing.T) {
	j := newJournal(upstream.State{})
	src := make(chanSource)
	startEngine(t, []Source{src}, j, Wait{Min: 80 * time.Millisecond, Max: time.Second})
	for i := range 5 {
		addrs := []string{"10.0.0.1:80"}
		if i%2 == 1 {
			addrs = append(addrs, "10.0.0.2:80")
		}
		src <- snap(1, up("web", addrs...))
		time.Sleep(10 * time.Millisecond)
	}
	ev := j.wait(t, 2)
	j.quiet(t, 200*time.Millisecond)
	if len(ev) != 2 || !j.states[1].Equal(state(up("web", "10.0.0.1:80"))) {
		t.Fatalf("burst of 5 gave events %v, last state %v; want one save+push of the last", ev, j.states)
	}
}

func TestEngineWaitMaxBoundsTheDelay(t *testing.T) {
	j := newJournal(upstream.State{})
	src := make(chanSource)
	startEngine(t, []Source{src}, j, Wait{Min: 100 * time.Millisecond, Max: 250 * time.Millisecond})
	start := time.Now()
	stop := time.After(600 * time.Millisecond)
	i := 0
loop:
	for { // a change every 50ms never lets Min pass; Max must force it
		select {
		case <-stop:
			break loop
		case <-time.After(50 * time.Millisecond):
			i++
			src <- snap(1, up("web", "10.0.0.1:80"), up("n", "10.9.0.1:"+string(rune('1'+i%9))+"0"))
		}
	}
	j.mu.Lock()
	n := len(j.events)
	j.mu.Unlock()
	if n == 0 {
		t.Fatalf("no apply within %v of constant churn; Max is not honoured", time.Since(start))
	}
}
