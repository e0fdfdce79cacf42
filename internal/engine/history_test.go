package engine

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/history"
)

// changes renders the history as "upstream change detail (cause)" lines.
func changes(st *Status) []string {
	var out []string
	for _, ev := range st.History {
		if ev.At.IsZero() {
			out = append(out, "zero time: "+ev.Change)
		}
		out = append(out, ev.Upstream+" "+ev.Change+" "+ev.Detail+" ("+ev.Cause+")")
	}
	return out
}

// TestEngineRecordsAppliedChangesWithTheirCause: server changes, a new
// upstream, a guard hold and its release reach the status history, each
// with its cause, and the timeline has the server counts that changed.
func TestEngineRecordsAppliedChangesWithTheirCause(t *testing.T) {
	j := newJournal(state(up("web", "10.0.0.1:80", "10.0.0.2:80")))
	src := make(chanSource)
	e := startEngine(t, []Source{src}, j, Wait{})
	j.wait(t, 1) // the start push
	src <- snap(2, up("web", "10.0.0.1:80", "10.0.0.3:80"), up("api", "10.0.1.1:80"))
	j.handled(t, e, 1, 3)
	src <- snap(0) // held: no services
	j.handled(t, e, 2, 3)
	src <- snap(2, up("web", "10.0.0.1:80", "10.0.0.3:80"), up("api", "10.0.1.1:80", "10.0.1.2:80"))
	st := j.handled(t, e, 3, 5)

	want := []string{
		"api + server 10.0.1.1:80 weight=1 (registry)",
		"api + upstream 1 servers (registry)",
		"web - server 10.0.0.2:80 (registry)",
		"web + server 10.0.0.3:80 weight=1 (registry)",
		" hold no_services: " + holdReason(t, st, e),
		" release no_services: " + holdReason(t, st, e),
		"api + server 10.0.1.2:80 weight=1 (registry)",
	}
	got := changes(st)
	if len(got) != len(want) {
		t.Fatalf("history\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("history[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	if pts, _ := st.Timeline.Get("api"); len(pts) != 3 || pts[0].Servers != 0 || pts[1].Servers != 1 || pts[2].Servers != 2 {
		t.Errorf("api timeline %+v, want 0, 1, 2 servers", pts)
	}
	if pts, ok := st.Timeline.Get("web"); ok {
		t.Errorf("web kept 2 servers, its timeline has %+v, want none", pts)
	}
}

// holdReason is the reason of the no_services hold, as the history
// records it (the cause is the registry's answer).
func holdReason(t *testing.T, st *Status, _ *Engine) string {
	t.Helper()
	for _, ev := range st.History {
		if ev.Change == "hold" {
			return ev.Detail[len("no_services: "):] + " (" + ev.Cause + ")"
		}
	}
	t.Fatalf("no hold in the history: %q", changes(st))
	return ""
}

// TestEngineHistoryNamesAConfirmedDrop: a big drop held and then applied
// when the confirmation time is up is recorded with cause "guard confirm",
// and the timeline shows the count fall.
func TestEngineHistoryNamesAConfirmedDrop(t *testing.T) {
	four := up("web", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
	j := newJournal(state(four))
	src := make(chanSource)
	e := startEngineGuarded(t, []Source{src}, j, Wait{}, Guards{MinServices: 1, MaxDrop: 0.5, MaxTotalDrop: 0.5, ConfirmAfter: 100 * time.Millisecond})
	j.wait(t, 1)
	src <- snap(1, up("web", "10.0.0.1:80"))
	st := waitStatus(t, e, func(st *Status) bool { return len(st.Applied["web"].Servers) == 1 })
	var removed []string
	for _, ev := range st.History {
		if ev.Change == "- server" {
			if ev.Cause != history.CauseConfirm {
				t.Errorf("%+v: cause %q, want %q", ev, ev.Cause, history.CauseConfirm)
			}
			removed = append(removed, ev.Detail)
		}
	}
	if !slices.Equal(removed, []string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"}) {
		t.Errorf("removed %v, want the three servers; history %q", removed, changes(st))
	}
	if got := changes(st); len(got) == 0 || !slices.ContainsFunc(got, func(s string) bool { return len(s) > 12 && s[:12] == "web hold dro" }) {
		t.Errorf("history %q lacks the drop hold", got)
	}
	if pts, _ := st.Timeline.Get("web"); len(pts) != 2 || pts[0].Servers != 4 || pts[1].Servers != 1 {
		t.Errorf("web timeline %+v, want 4 then 1 servers", pts)
	}
}

// driftSink is a recSink that reports drift repairs as the test says.
type driftSink struct {
	recSink
	report chan func(string, []string)
}

func (d driftSink) ReportDriftTo(f func(string, []string)) { d.report <- f }

// TestEngineRecordsDriftRepairs: a repair a sink reports shows in the
// history with cause "drift", one row per upstream.
func TestEngineRecordsDriftRepairs(t *testing.T) {
	j := newJournal(state(up("web", "10.0.0.1:80")))
	ds := driftSink{recSink{j}, make(chan func(string, []string), 1)}
	e := New([]Source{make(chanSource)}, memStore{j}, []Sink{ds}, Guards{MinServices: 1}, Wait{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var report func(string, []string)
	select {
	case report = <-ds.report:
	case <-time.After(5 * time.Second):
		t.Fatal("Run never handed the sink a drift report function")
	}
	report("http://127.0.0.1:8081", []string{"api", "web"})
	st := waitStatus(t, e, func(st *Status) bool { return len(st.History) == 2 })
	want := []string{
		"api drift repair pushed again to http://127.0.0.1:8081 (drift)",
		"web drift repair pushed again to http://127.0.0.1:8081 (drift)",
	}
	if got := changes(st); !slices.Equal(got, want) {
		t.Errorf("history %q, want %q", got, want)
	}
}
