package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/reload"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

type memStore struct{}

func (memStore) Load() (upstream.State, error) { return upstream.State{}, nil }
func (memStore) Save(upstream.State) error     { return nil }

type quietSource struct{}

func (quietSource) Run(ctx context.Context, _ chan<- engine.Snapshot) { <-ctx.Done() }

// fakeSink reports whatever status the test sets.
type fakeSink struct {
	mu sync.Mutex
	st engine.SinkStatus
}

func (f *fakeSink) Update(engine.Change)          {}
func (f *fakeSink) Run(stop, _ context.Context)   { <-stop.Done() }
func (f *fakeSink) set(st engine.SinkStatus)      { f.mu.Lock(); f.st = st; f.mu.Unlock() }
func (f *fakeSink) SinkStatus() engine.SinkStatus { f.mu.Lock(); defer f.mu.Unlock(); return f.st }

// daemon runs an engine over the sinks and returns the listener's handler.
func daemon(t *testing.T, sinks ...engine.Sink) http.Handler {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := engine.New([]engine.Source{quietSource{}}, memStore{}, sinks, engine.Guards{MinServices: 1, Addresses: upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, engine.Wait{}, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); e.Status() == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the engine did not start")
		}
	}
	return Handler(&Daemon{Version: "test", File: "/f", Engine: e, Sources: []Source{{"consul x", quietSource{}}}, Metrics: prometheus.NewRegistry()})
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil))
	return rec.Code, rec.Body.String()
}

func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestStatusJSONKeepsItsKeys: /status built from the sinks' common status
// has the keys it had when the listener knew each kind of sink: a dyups
// target's entry with its drift fields, the reload sink's entry and its
// "reload" section.
func TestStatusJSONKeepsItsKeys(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tg, err := dyups.NewTarget("http://127.0.0.1:1", dyups.DefaultOptions(), log, dyups.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := reload.New(reload.Options{Command: []string{"nginx", "-s", "reload"}}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs.Persisted(engine.ErrVerifyFailed, time.Now().Add(time.Second)) // failing: every field of the section is set
	code, body := get(t, daemon(t, tg, rs), "/status")
	if code != 200 {
		t.Fatalf("/status answered %d: %s", code, body)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	top := keys(t, json.RawMessage(body))
	if want := []string{"drains", "dropped", "history", "holds", "registries", "reload", "sources", "sources_answered", "targets", "timeline", "upstreams", "version"}; !slices.Equal(top, want) {
		t.Errorf("top-level keys %v, want %v", top, want)
	}
	var targets []json.RawMessage
	json.Unmarshal(doc["targets"], &targets)
	if len(targets) != 2 {
		t.Fatalf("targets %s", doc["targets"])
	}
	// Neither has synced: no last_sync (not "0001-01-01T00:00:00Z").
	if strings.Contains(body, "0001-01-01") {
		t.Errorf("/status shows a zero time:\n%s", body)
	}
	if got, want := keys(t, targets[0]), []string{"drift_repairs", "in_sync", "kind", "upstreams", "url"}; !slices.Equal(got, want) {
		t.Errorf("dyups entry keys %v, want %v", got, want)
	}
	if got, want := keys(t, targets[1]), []string{"in_sync", "kind", "last_error", "last_error_at", "upstreams", "url"}; !slices.Equal(got, want) {
		t.Errorf("reload entry keys %v, want %v", got, want)
	}
	want := []string{"command", "failed_attempts", "failing", "failing_since", "in_sync", "last_error", "last_error_at", "next_retry"}
	if got := keys(t, doc["reload"]); !slices.Equal(got, want) {
		t.Errorf("reload section keys %v, want %v", got, want)
	}
	var r Reload
	json.Unmarshal(doc["reload"], &r)
	if !r.Failing || r.FailedAttempts != 1 || !strings.Contains(string(doc["reload"]), `"command": "nginx -s reload"`) || !strings.Contains(string(targets[1]), "reload: nginx -s reload") ||
		!strings.Contains(string(targets[1]), "nginx not reloaded for") {
		t.Errorf("reload section %+v, entry %s", r, targets[1])
	}
	// `swallowkeeper status` reads it back.
	var out strings.Builder
	if err := Print(&out, []byte(body)); err != nil || !strings.Contains(out.String(), "RELOAD FAILING") ||
		!strings.Contains(out.String(), "http://127.0.0.1:1") || !strings.Contains(out.String(), "NOT IN SYNC") {
		t.Errorf("Print (%v):\n%s", err, out.String())
	}
}

// TestStatusSaysWhatTheReloadSinkDid: `swallowkeeper status` shows the
// reload sink as when it reloaded nginx, not as a target holding "0
// upstreams" (it counts none: nginx reads them from the file); a dyups
// target still shows the upstreams it acknowledged.
func TestStatusSaysWhatTheReloadSinkDid(t *testing.T) {
	now := time.Now()
	dy, rs, idle := &fakeSink{}, &fakeSink{}, &fakeSink{}
	dy.set(engine.SinkStatus{Kind: "dyups", Name: "http://127.0.0.1:8081", InSync: true, LastSync: now, Upstreams: 2, Ready: true})
	rs.set(engine.SinkStatus{Kind: "reload", Name: "reload: nginx -s reload", InSync: true, LastSync: now.Add(-3 * time.Second), Ready: true})
	idle.set(engine.SinkStatus{Kind: "reload", Name: "reload: /usr/sbin/nginx -s reload", Ready: true})
	_, body := get(t, daemon(t, dy, rs, idle), "/status")
	var doc Doc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, tg := range doc.Targets {
		kinds = append(kinds, tg.Kind)
	}
	if want := []string{"dyups", "reload", "reload"}; !slices.Equal(kinds, want) {
		t.Errorf("/status targets' kinds %q, want %q", kinds, want)
	}
	var out strings.Builder
	if err := Print(&out, []byte(body)); err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for l := range strings.Lines(out.String()) {
		for _, name := range []string{"http://127.0.0.1:8081", "reload: nginx -s reload", "reload: /usr/sbin/nginx -s reload"} {
			if strings.HasPrefix(strings.TrimSpace(l), name+" ") {
				lines[name] = strings.Join(strings.Fields(l), " ")
			}
		}
	}
	for name, want := range map[string]string{
		"http://127.0.0.1:8081":             "http://127.0.0.1:8081 in sync 2 upstreams drift repairs 0",
		"reload: nginx -s reload":           "reload: nginx -s reload in sync nginx reloaded 3s ago",
		"reload: /usr/sbin/nginx -s reload": "reload: /usr/sbin/nginx -s reload NOT IN SYNC nginx not reloaded yet",
	} {
		if lines[name] != want {
			t.Errorf("status line of %s: %q, want %q\n%s", name, lines[name], want, out.String())
		}
	}
}

// TestReadyzAsksEveryKindOfSink: the daemon is ready when every kind of
// sink has a sink that is ready; otherwise /readyz answers with the reason
// of a sink of the kind that is not; then the persist error counts.
func TestReadyzAsksEveryKindOfSink(t *testing.T) {
	a1, a2, b := &fakeSink{}, &fakeSink{}, &fakeSink{}
	a1.set(engine.SinkStatus{Kind: "a", NotReady: "no a in sync yet"})
	a2.set(engine.SinkStatus{Kind: "a", NotReady: "no a in sync yet"})
	b.set(engine.SinkStatus{Kind: "b", Ready: true})
	h := daemon(t, a1, a2, b)
	if code, body := get(t, h, "/readyz"); code != 503 || body != "not ready: no a in sync yet\n" {
		t.Fatalf("/readyz with no a ready: %d %q", code, body)
	}
	a2.set(engine.SinkStatus{Kind: "a", Ready: true})
	if code, body := get(t, h, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz with one a ready: %d %q", code, body)
	}
	b.set(engine.SinkStatus{Kind: "b", NotReady: "b is failing: broken_by_operator"})
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "broken_by_operator") {
		t.Fatalf("/readyz with b failing: %d %q", code, body)
	}
	b.set(engine.SinkStatus{Kind: "b"})
	if code, body := get(t, h, "/readyz"); code != 503 || body != "not ready: no b sink ready yet\n" {
		t.Fatalf("/readyz with b not ready and no reason: %d %q", code, body)
	}
}
