package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/history"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

func mark(upstreamName, addr string, at int) Drain {
	return Drain{Upstream: upstreamName, Addr: netip.MustParseAddrPort(addr), Since: time.Unix(int64(1000+at), 0)}
}

func downed(u upstream.Upstream, addrs ...string) upstream.Upstream {
	u.Servers = slices.Clone(u.Servers)
	for _, a := range addrs {
		u.Servers[u.ServerAt(netip.MustParseAddrPort(a))].Down = true
	}
	return u
}

// downList renders what the overlay decided: every server marked down.
func downList(s upstream.State) []string {
	var out []string
	for _, name := range s.Names() {
		for _, srv := range s[name].Servers {
			if srv.Down {
				out = append(out, name+" "+srv.Addr.String())
			}
		}
	}
	return out
}

func TestApplyDrains(t *testing.T) {
	web := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
	for _, tc := range []struct {
		name       string
		in         upstream.State
		marks      []Drain
		wantDown   []string
		wantActive []bool // per mark, in the order of the returned states (upstream, address)
		wantHold   string // a substring of the one hold, "" for none
	}{
		{
			name:       "a marked server is down, its neighbours are not",
			in:         state(web),
			marks:      []Drain{mark("web", "10.0.0.2:80", 0)},
			wantDown:   []string{"web 10.0.0.2:80"},
			wantActive: []bool{true},
		},
		{
			name:       "two of three may go: one usable primary is left",
			in:         state(web),
			marks:      []Drain{mark("web", "10.0.0.1:80", 0), mark("web", "10.0.0.3:80", 1)},
			wantDown:   []string{"web 10.0.0.1:80", "web 10.0.0.3:80"},
			wantActive: []bool{true, true},
		},
		{
			name:       "the newest mark that would take the last usable primary is refused and held",
			in:         state(up("api", "10.0.1.1:80", "10.0.1.2:80")),
			marks:      []Drain{mark("api", "10.0.1.2:80", 5), mark("api", "10.0.1.1:80", 1)},
			wantDown:   []string{"api 10.0.1.1:80"},
			wantActive: []bool{true, false},
			wantHold:   "drain of 10.0.1.2:80 refused: it is the last usable primary server of api",
		},
		{
			name:       "a single server is never drained",
			in:         state(up("solo", "10.0.2.1:80")),
			marks:      []Drain{mark("solo", "10.0.2.1:80", 0)},
			wantActive: []bool{false},
			wantHold:   "last usable primary server of solo",
		},
		{
			name:       "a backup does not count as a usable primary",
			in:         state(withBackup(up("b", "10.0.3.1:80"), "10.0.3.9:80")),
			marks:      []Drain{mark("b", "10.0.3.1:80", 0)},
			wantActive: []bool{false},
			wantHold:   "last usable primary server of b",
		},
		{
			name:       "a server the registry marks down does not count either",
			in:         state(downed(up("d", "10.0.4.1:80", "10.0.4.2:80"), "10.0.4.2:80")),
			marks:      []Drain{mark("d", "10.0.4.1:80", 0)},
			wantDown:   []string{"d 10.0.4.2:80"},
			wantActive: []bool{false},
			wantHold:   "last usable primary server of d",
		},
		{
			name:       "a backup may be drained while a primary serves",
			in:         state(withBackup(up("b", "10.0.3.1:80"), "10.0.3.9:80")),
			marks:      []Drain{mark("b", "10.0.3.9:80", 0)},
			wantDown:   []string{"b 10.0.3.9:80"},
			wantActive: []bool{true},
		},
		{
			name:       "a mark whose server left the registry is kept, inactive",
			in:         state(web),
			marks:      []Drain{mark("web", "10.0.0.7:80", 0), mark("gone", "10.0.9.1:80", 0)},
			wantActive: []bool{false, false},
		},
		{
			name:       "names match case-insensitively, as dyups matches them",
			in:         state(web),
			marks:      []Drain{mark("WEB", "10.0.0.1:80", 0)},
			wantDown:   []string{"web 10.0.0.1:80"},
			wantActive: []bool{true},
		},
		{
			name:       "a server down in the registry already is an active mark",
			in:         state(downed(web, "10.0.0.1:80")),
			marks:      []Drain{mark("web", "10.0.0.1:80", 0)},
			wantDown:   []string{"web 10.0.0.1:80"},
			wantActive: []bool{true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.in.Clone()
			got, states, holds := ApplyDrains(tc.in, tc.marks)
			if !tc.in.Equal(before) || !slices.Equal(downList(tc.in), downList(before)) {
				t.Fatalf("ApplyDrains changed its input: %v", downList(tc.in))
			}
			if d := downList(got); !slices.Equal(d, tc.wantDown) {
				t.Errorf("down = %v, want %v", d, tc.wantDown)
			}
			var active []bool
			for _, s := range states {
				active = append(active, s.Active)
				if !s.Active && s.Note == "" {
					t.Errorf("inactive mark %v has no note", s.Drain)
				}
			}
			if !slices.Equal(active, tc.wantActive) {
				t.Errorf("active = %v, want %v (states %+v)", active, tc.wantActive, states)
			}
			switch {
			case tc.wantHold == "" && len(holds) > 0:
				t.Errorf("holds = %v, want none", holds)
			case tc.wantHold != "" && (len(holds) != 1 || !strings.Contains(holds[0].Reason, tc.wantHold) || holds[0].Guard != GuardDrain):
				t.Errorf("holds = %v, want one %s hold saying %q", holds, GuardDrain, tc.wantHold)
			}
			if err := got.CheckNames(); err != nil {
				t.Errorf("overlay breaks the state: %v", err)
			}
		})
	}
}

func TestApplyDrainsWithoutMarksIsTheSameState(t *testing.T) {
	s := state(up("web", "10.0.0.1:80"))
	got, states, holds := ApplyDrains(s, nil)
	if &got["web"].Servers[0] != &s["web"].Servers[0] || states != nil || holds != nil {
		t.Fatalf("no marks: got a new state %v, states %v, holds %v", got, states, holds)
	}
}

// memDrains is a DrainStore in memory; set replaces the marks and cues
// the engine.
type memDrains struct {
	mu    sync.Mutex
	marks []Drain
	err   error
	cue   chan struct{}
}

func (m *memDrains) Load() ([]Drain, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.marks), m.err
}

func (m *memDrains) Watch(ctx context.Context, changed chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.cue:
			select {
			case changed <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (m *memDrains) set(err error, marks ...Drain) {
	m.mu.Lock()
	m.marks, m.err = marks, err
	m.mu.Unlock()
	m.cue <- struct{}{}
}

func startDrainEngine(t *testing.T, src Source, j *journal, d *memDrains) *Engine {
	t.Helper()
	e := New([]Source{src}, memStore{j}, []Sink{recSink{j}}, Guards{MinServices: 1, MaxDrop: 1, MaxTotalDrop: 1}, Wait{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	e.UseDrains(d)
	return running(t, e)
}

// lastState is the state of the journal's newest event.
func (j *journal) lastState() upstream.State {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.states[len(j.states)-1]
}

// TestEngineAppliesDrainMarks follows marks through the loop: a drain is
// saved then pushed with the server down, whatever the registry says; an
// undrain brings it back as the registry has it; a mark on the last
// server is held and shown; marks apply before the registry answers.
func TestEngineAppliesDrainMarks(t *testing.T) {
	web := up("web", "10.0.0.1:80", "10.0.0.2:80")
	j := newJournal(state(web))
	d := &memDrains{cue: make(chan struct{}), marks: []Drain{mark("web", "10.0.0.1:80", 0)}}
	src := make(chanSource)
	e := startDrainEngine(t, src, j, d)

	// At start, before the registry answers: the mark is laid over the
	// loaded state, saved first, then pushed.
	if ev := j.wait(t, 2); !slices.Equal(ev[:2], []string{"save", "push"}) {
		t.Fatalf("events at start = %v, want save, push", ev)
	}
	if got := downList(j.lastState()); !slices.Equal(got, []string{"web 10.0.0.1:80"}) {
		t.Fatalf("pushed at start with down = %v", got)
	}

	// The registry says both are up: the mark still holds.
	src <- snap(1, web)
	st := j.handled(t, e, 1, 2)
	if got := downList(st.Applied); !slices.Equal(got, []string{"web 10.0.0.1:80"}) {
		t.Fatalf("after the registry answered, down = %v", got)
	}
	if len(st.Drains) != 1 || !st.Drains[0].Active {
		t.Fatalf("status drains = %+v, want one active", st.Drains)
	}

	// Undrain: the server comes back as the registry has it.
	d.set(nil)
	j.wait(t, 4)
	if got := downList(j.lastState()); len(got) != 0 {
		t.Fatalf("after undrain, down = %v", got)
	}
	waitStatus(t, e, func(s *Status) bool {
		return slices.ContainsFunc(s.History, func(h history.Event) bool {
			return h.Cause == causeDrain && h.Change == "~ server" && h.Detail == "10.0.0.1:80 down true→false"
		})
	})

	// Drain both: the older mark applies, the newer is held and shown.
	d.set(nil, mark("web", "10.0.0.2:80", 1), mark("web", "10.0.0.1:80", 2))
	j.wait(t, 6)
	st = waitStatus(t, e, func(s *Status) bool { return len(s.Holds) == 1 })
	if got := downList(st.Applied); !slices.Equal(got, []string{"web 10.0.0.2:80"}) {
		t.Fatalf("two marks on two servers: down = %v", got)
	}
	if h := st.Holds[0]; h.Guard != GuardDrain || !strings.Contains(h.Reason, "10.0.0.1:80") || !strings.Contains(h.Reason, "web") {
		t.Fatalf("hold = %+v, want the drain guard naming web 10.0.0.1:80", h)
	}

	// An unreadable file keeps the marks read last, and says so.
	d.set(errors.New("bad json"), nil...)
	st = waitStatus(t, e, func(s *Status) bool {
		return slices.ContainsFunc(s.Holds, func(h Hold) bool { return strings.Contains(h.Reason, "bad json") })
	})
	if got := downList(st.Applied); !slices.Equal(got, []string{"web 10.0.0.2:80"}) {
		t.Fatalf("unreadable marks: down = %v, want the marks read last", got)
	}
	if n := j.count(); n != 6 {
		t.Fatalf("an unreadable marks file changed nginx: %d events", n)
	}
}

// TestEngineKeepsDownServersWhenTheMarksCannotBeReadAtStart: without any
// marks read, planning from the registry alone would put drained servers
// back. The engine takes every server down in the state nginx has as
// drained until the file can be read, and plans the rest as usual: the
// registry's new server is added, and a server on a refused address
// (loopback) leaves, as it does with a readable file.
func TestEngineKeepsDownServersWhenTheMarksCannotBeReadAtStart(t *testing.T) {
	stored := state(downed(up("web", "10.0.0.1:80", "10.0.0.2:80", "127.0.0.1:80"), "10.0.0.1:80"))
	j := newJournal(stored)
	d := &memDrains{cue: make(chan struct{}), err: errors.New("permission denied")}
	src := make(chanSource)
	e := startDrainEngine(t, src, j, d)
	src <- snap(1, up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
	st := j.handled(t, e, 1, 3) // the start's push, then save and push
	want := state(downed(up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), "10.0.0.1:80"))
	if !st.Applied.Equal(want) {
		t.Fatalf("applied %v, want %v: the down server kept down, the new one added, the refused one gone", st.Applied, want)
	}
	var drainHold, refused bool
	for _, h := range st.Holds {
		drainHold = drainHold || h.Guard == GuardDrain && strings.Contains(h.Reason, "permission denied") && strings.Contains(h.Reason, "stays down")
		refused = refused || h.Guard == GuardRefused && strings.Contains(h.Reason, "loopback")
	}
	if !drainHold || !refused {
		t.Fatalf("holds = %+v, want the drain guard naming the error and the refusal of 127.0.0.1:80", st.Holds)
	}

	// Once readable, the marks are the truth: no mark, no down server.
	d.set(nil)
	j.wait(t, 5)
	if got := downList(j.lastState()); len(got) != 0 {
		t.Fatalf("after the file became readable with no mark, down = %v", got)
	}
}

// lingering is a source, and a drain store, that take a while to return
// once ctx ends, and record that they did.
type lingering struct{ sourceDone, watchDone atomic.Bool }

func (l *lingering) Run(ctx context.Context, out chan<- Snapshot) {
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond) // a source finishing its request
	l.sourceDone.Store(true)
}

func (l *lingering) Load() ([]Drain, error) { return nil, nil }

func (l *lingering) Watch(ctx context.Context, changed chan<- struct{}) {
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	l.watchDone.Store(true)
}

// TestRunWaitsForItsSourcesAndDrainWatch: a SIGHUP runs a kept source again
// under the next engine; the old Run must not return while the source's
// previous Run (or the drain watch) still works, or the two overlap (a
// late registry_up=0 after the new Run's 1).
func TestRunWaitsForItsSourcesAndDrainWatch(t *testing.T) {
	j := newJournal(upstream.State{})
	l := &lingering{}
	e := New([]Source{l}, memStore{j}, []Sink{recSink{j}}, Guards{MinServices: 1}, Wait{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	e.UseDrains(l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	waitStatus(t, e, func(*Status) bool { return true })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !l.sourceDone.Load() || !l.watchDone.Load() {
		t.Fatalf("Run returned before its source (done %v) and drain watch (done %v)", l.sourceDone.Load(), l.watchDone.Load())
	}
}
