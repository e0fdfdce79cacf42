package engine

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Drain is a server an operator took out by hand (`swallowkeeper drain`):
// it stays in its upstream, marked down, whatever the registry says, until
// it is undrained.
type Drain struct {
	Upstream string
	Addr     netip.AddrPort
	Since    time.Time
}

// DrainStore holds the drain marks. The file it reads is the truth: the
// engine lays the marks over every state it plans, so the persisted file
// and every sink see `down` for a drained server.
type DrainStore interface {
	// Load returns every mark. An absent file is no marks; a file that
	// cannot be read or parsed is an error, never "no marks" (that would
	// put drained servers back in service).
	Load() ([]Drain, error)
	// Watch sends on changed whenever the marks may have changed, until
	// ctx ends; a send is only a cue to Load again. It never closes
	// changed.
	Watch(ctx context.Context, changed chan<- struct{})
}

// DrainState is a mark and what it does now, for status.
type DrainState struct {
	Drain
	// Active is true when the server is in its upstream, marked down.
	Active bool
	// Note says why a mark is not active: its server is not in the
	// applied state (kept, it applies again when the server comes back),
	// or the guard refused it.
	Note string
}

// GuardDrain holds a drain mark that would leave an upstream with no
// usable primary server, or every change while the drain file cannot be
// read.
const GuardDrain = "drain"

// causeDrain is the history cause of a change made by a drain mark.
const causeDrain = "drain"

// ApplyDrains returns s with every marked server down: a pure overlay,
// planned after the registry's state and its guards. A mark whose
// upstream or server is not in s is kept but inactive. A mark that would
// leave its upstream without a usable primary server (neither backup nor
// down), which nginx would then fail every request of, is refused and
// held; marks apply oldest first, so the newest one is refused. Upstream
// names match as dyups matches them, case-insensitively.
//
// s is not modified; an upstream that changes gets a new server list
// (lists are never changed in place: Upstream.Equal relies on it).
func ApplyDrains(s upstream.State, marks []Drain) (upstream.State, []DrainState, []Hold) {
	if len(marks) == 0 {
		return s, nil, nil
	}
	ordered := slices.Clone(marks)
	slices.SortFunc(ordered, func(a, b Drain) int {
		return cmp.Or(a.Since.Compare(b.Since), strings.Compare(a.Upstream, b.Upstream), a.Addr.Compare(b.Addr))
	})
	byKey := foldIndex(s)
	out := s
	copied := map[string]bool{} // upstreams whose server list is out's own
	states := make([]DrainState, 0, len(ordered))
	var holds []Hold
	for _, m := range ordered {
		st := DrainState{Drain: m}
		name, ok := byKey[upstream.FoldKey(m.Upstream)]
		if !ok {
			st.Note = fmt.Sprintf("upstream %s is not in the applied state; the mark applies when it comes back", m.Upstream)
			states = append(states, st)
			continue
		}
		u := out[name]
		i := u.ServerAt(m.Addr)
		switch {
		case i < 0:
			st.Note = fmt.Sprintf("%s is not a server of %s now; the mark applies when it comes back", m.Addr, name)
		case u.Servers[i].Down:
			st.Active = true // down already: by an older mark, or by the registry
		case !u.Servers[i].Backup && usablePrimaries(u) == 1:
			st.Note = "refused: it is the last usable primary server of its upstream"
			holds = append(holds, Hold{Upstream: name, Guard: GuardDrain,
				Reason: fmt.Sprintf("drain of %s refused: it is the last usable primary server of %s (nginx would fail every request); the server stays in service", m.Addr, name)})
		default:
			if len(copied) == 0 {
				out = maps.Clone(s)
			}
			if !copied[name] {
				u.Servers = slices.Clone(u.Servers)
				copied[name] = true
			}
			u.Servers[i].Down = true
			out[name] = u
			st.Active = true
		}
		states = append(states, st)
	}
	slices.SortFunc(states, func(a, b DrainState) int {
		return cmp.Or(strings.Compare(a.Upstream, b.Upstream), a.Addr.Compare(b.Addr))
	})
	return out, states, holds
}

// usablePrimaries counts the servers of u that take traffic in normal
// operation: neither backup nor down.
func usablePrimaries(u upstream.Upstream) int {
	n := 0
	for _, s := range u.Servers {
		if !s.Backup && !s.Down {
			n++
		}
	}
	return n
}

// drainUnreadable is the hold while the drain file cannot be read: known
// reports whether marks were read before (they still apply) or not (the
// servers down in the applied state stay down, see marksFromDown).
func drainUnreadable(err error, known bool) Hold {
	if known {
		return Hold{Guard: GuardDrain, Reason: fmt.Sprintf("the drain marks cannot be read (%v); the marks read last still apply", err)}
	}
	return Hold{Guard: GuardDrain, Reason: fmt.Sprintf("the drain marks cannot be read (%v); every server down in the applied state is taken as drained and stays down until they can be", err)}
}

// marksFromDown stands in for marks never read: a mark for every server
// down in s, the applied state, whose file holds the marks applied last
// (and the registry's own down flags, kept down too: the safe side).
func marksFromDown(s upstream.State) []Drain {
	var marks []Drain
	for name, u := range s {
		for _, srv := range u.Servers {
			if srv.Down {
				marks = append(marks, Drain{Upstream: name, Addr: srv.Addr})
			}
		}
	}
	return marks
}

// UseDrains makes the engine lay the marks d holds over every state it
// plans (Run and Desired), and follow their changes while it runs. Call
// it before Run or Desired.
func (e *Engine) UseDrains(d DrainStore) { e.drains = d }

// drainMarks is the loop's copy of the marks; Run's goroutine only.
type drainMarks struct {
	marks []Drain
	known bool  // read at least once
	err   error // the last Load's, until one succeeds
}

// loadDrains reads the marks again and reports whether what the plan
// depends on changed. A failed read keeps the marks read last.
func (l *loop) loadDrains() bool {
	marks, err := l.e.drains.Load()
	if err != nil {
		changed := l.dm.err == nil || l.dm.err.Error() != err.Error()
		if changed {
			l.e.log.Error("drain marks cannot be read; the marks read last still apply", "err", err)
		}
		l.dm.err = err
		return changed
	}
	changed := l.dm.err != nil || !l.dm.known || !slices.Equal(marks, l.dm.marks)
	l.dm = drainMarks{marks: marks, known: true}
	return changed
}

// overlay lays the marks over base, the state planned from the
// registry, and returns the state to apply with the drain guard's holds
// added. While no marks could ever be read it lays over base a mark for
// every server down in the state nginx has (marksFromDown): the rest of
// the plan -- new servers, refused ones leaving -- goes on.
func (l *loop) overlay(base upstream.State, holds []Hold) (upstream.State, []Hold) {
	if l.e.drains == nil {
		return base, holds
	}
	if !l.dm.known {
		l.e.drainStates = nil
		if l.dm.err == nil {
			return l.prev, holds // no Load yet: Run loads before it plans
		}
		next, _, dh := ApplyDrains(base, marksFromDown(l.prev))
		return next, append(append(holds, dh...), drainUnreadable(l.dm.err, false))
	}
	next, states, dh := ApplyDrains(base, l.dm.marks)
	l.e.drainStates = states
	holds = append(holds, dh...)
	if l.dm.err != nil {
		holds = append(holds, drainUnreadable(l.dm.err, true))
	}
	return next, holds
}

// drainsOnly plans with the marks alone, before every source has
// answered: a drain is the operator's, it need not wait for the registry.
func (l *loop) drainsOnly() upstream.State {
	next, holds := l.overlay(l.base, nil)
	l.planned = l.base
	l.e.reportHolds(l.holds, holds)
	l.holds = holds
	return next
}

// desiredDrains lays the marks over a one-shot plan (render, once): a
// one-shot run that ignored them would put drained servers back.
func (e *Engine) desiredDrains(next upstream.State, holds []Hold) (upstream.State, []Hold, error) {
	if e.drains == nil {
		return next, holds, nil
	}
	marks, err := e.drains.Load()
	if err != nil {
		return nil, nil, fmt.Errorf("drain marks: %w", err)
	}
	next, _, dh := ApplyDrains(next, marks)
	for _, h := range dh {
		e.log.Warn("guard holds a change", "upstream", h.Upstream, "guard", h.Guard, "reason", h.Reason)
	}
	return next, append(holds, dh...), nil
}

// followDrains starts the store's watch, counted in wg until it returns;
// nil without a store.
func (e *Engine) followDrains(ctx context.Context, wg *sync.WaitGroup) <-chan struct{} {
	if e.drains == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.drains.Watch(ctx, ch)
	}()
	return ch
}
