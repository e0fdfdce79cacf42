package dyups

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestRunReportsEveryChangeAndDeletesItsPrior: a change's Prior is owned
// before it is synced (the upstreams it no longer wants are deleted); a
// change that fails is reported with its error, one that succeeds is
// acknowledged, and the sink status says which.
func TestRunReportsEveryChangeAndDeletesItsPrior(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{"old": "server 10.0.0.9:80;"}, refuse: "bad"}
	tg := newTarget(t, f)
	tg.opt.MaxAttempts = 1
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	defer func() { cancel(); <-done }()

	reports := make(chan error, 10)
	report := func(err error) { reports <- err }
	tg.Update(engine.Change{State: upstream.State{"a": named("a", "10.0.0.1:80")},
		Prior: upstream.State{"old": named("old", "10.0.0.9:80")}, Done: report})
	if err := <-reports; err != nil {
		t.Fatalf("the first change was reported as %v", err)
	}
	if _, ok := f.ups["old"]; ok {
		t.Fatalf("the Prior upstream was not deleted: %v", f.calls)
	}
	st := tg.SinkStatus()
	if st.Kind != "dyups" || st.Name != tg.URL() || !st.InSync || !st.Ready || st.Upstreams != 1 {
		t.Fatalf("sink status in sync: %+v", st)
	}

	tg.Update(engine.Change{State: upstream.State{"bad": named("bad", "10.0.0.2:80")}, Done: report})
	if err := <-reports; err == nil || !strings.Contains(err.Error(), "POST /upstream/bad: 500") {
		t.Fatalf("the refused change was reported as %v", err)
	}
	st = tg.SinkStatus()
	if st.InSync || st.Ready || st.NotReady == "" || !strings.Contains(st.LastError, "500") {
		t.Fatalf("sink status after a refusal: %+v", st)
	}
	// The detail is the dyups part of the /status entry, as before.
	b, err := json.Marshal(st.Detail)
	if err != nil || !strings.Contains(string(b), `"drift_repairs":0`) || strings.Contains(string(b), `"url"`) {
		t.Fatalf("detail %s (%v)", b, err)
	}
	whole, _ := json.Marshal(tg.Status())
	for _, key := range []string{`"url"`, `"in_sync"`, `"last_sync"`, `"upstreams"`, `"drift_repairs"`} {
		if !strings.Contains(string(whole), key) {
			t.Errorf("status JSON %s lacks %s", whole, key)
		}
	}
}

// TestChangeFromTheSyncedStateLooksOnlyAtItsTouchedNames: a change whose
// From is the state synced last is synced from its Touched names alone
// (an upstream it leaves out is not looked at, which is how this test
// sees the path taken); from any other state, or after a failed sync,
// every upstream is compared. A case-only rename within the touched
// names is one POST, no DELETE.
func TestChangeFromTheSyncedStateLooksOnlyAtItsTouchedNames(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}}
	tg := newTarget(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	defer func() { cancel(); <-done }()
	reports := make(chan error, 10)
	report := func(err error) { reports <- err }
	send := func(c engine.Change) []string {
		t.Helper()
		f.mu.Lock()
		before := len(f.calls)
		f.mu.Unlock()
		c.Done = report
		tg.Update(c)
		if err := <-reports; err != nil {
			t.Fatalf("change reported as %v", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Clone(f.calls[before:])
	}

	s1 := upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.2:80"), "rn": named("rn", "10.0.0.3:80")}
	if calls := send(engine.Change{State: s1}); len(calls) != 3 {
		t.Fatalf("first sync made %v, want 3 POSTs", calls)
	}
	// a changes (touched); b differs too, left out of Touched.
	s2 := upstream.State{"a": named("a", "10.0.0.9:80"), "b": named("b", "10.0.0.8:80"), "rn": s1["rn"]}
	if calls := send(engine.Change{State: s2, From: s1, Touched: []string{"a"}}); !slices.Equal(calls, []string{"POST a"}) {
		t.Fatalf("a change from the synced state made %v, want only POST a", calls)
	}
	// rn → Rn, from the synced state: one POST replaces it in place.
	s3 := upstream.State{"a": s2["a"], "b": s2["b"], "Rn": named("Rn", "10.0.0.3:80")}
	if calls := send(engine.Change{State: s3, From: s2, Touched: []string{"Rn", "rn"}}); !slices.Equal(calls, []string{"POST Rn"}) {
		t.Fatalf("a case-only rename made %v, want only POST Rn", calls)
	}
	// From a state that is not the one synced: every upstream compared,
	// b's difference found.
	s4 := upstream.State{"a": s3["a"], "b": s3["b"], "Rn": s3["Rn"], "c": named("c", "10.0.0.4:80")}
	calls := send(engine.Change{State: s4, From: s2, Touched: []string{"c"}})
	slices.Sort(calls)
	if !slices.Equal(calls, []string{"POST b", "POST c"}) {
		t.Fatalf("a change from another state made %v, want POSTs of b and c", calls)
	}
	// A removal from the synced state is one DELETE.
	s5 := upstream.State{"a": s4["a"], "b": s4["b"], "Rn": s4["Rn"]}
	if calls := send(engine.Change{State: s5, From: s4, Touched: []string{"c"}}); !slices.Equal(calls, []string{"DELETE c"}) {
		t.Fatalf("a removal made %v, want only DELETE c", calls)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ups) != 3 || f.ups["b"] == "" || f.ups["Rn"] == "" {
		t.Fatalf("the fake holds %v", f.ups)
	}
}
