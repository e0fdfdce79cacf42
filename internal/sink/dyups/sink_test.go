package dyups

import (
	"context"
	"encoding/json"
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
