package consul

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// fakeAgent answers the endpoints consul.watch: per_service reads, the
// way a Consul agent does, and lets a test break them on purpose, which
// a real agent cannot be made to do one endpoint at a time. Blocking
// queries wait for the next change of their endpoint, and the health
// endpoint's blocking answers come as streaming ones do: without
// X-Consul-KnownLeader.
type fakeAgent struct {
	mu       sync.Mutex
	changed  chan struct{} // closed at each change
	index    uint64
	catalog  string        // "ok", "fail" (500) or "broken" (a cut answer)
	services string        // the ok catalog answer
	web      string        // /v1/health/service/web's answer
	noLeader bool          // answers of the blocking-query backend say no leader
	broke    chan struct{} // closed once a broken catalog answer went out
}

func newFakeAgent(t *testing.T) (*fakeAgent, *Client) {
	f := &fakeAgent{changed: make(chan struct{}), broke: make(chan struct{}), index: 10, catalog: "ok", services: `{"web":[]}`, web: fakeEntries("10.1.0.1")}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(srv.URL, "http://")
	client, err := NewClient(cfg, WatchPerService)
	if err != nil {
		t.Fatal(err)
	}
	return f, client
}

func fakeEntries(addrs ...string) string {
	var es []string
	for i, a := range addrs {
		es = append(es, fmt.Sprintf(`{"Node":{"Node":"n%d","Address":%q,"ModifyIndex":1},"Service":{"ID":"web-%d","Service":"web","Address":%q,"Port":8080,"ModifyIndex":%d},"Checks":[]}`, i, a, i, a, 100+i+len(addrs)*7))
	}
	return "[" + strings.Join(es, ",") + "]"
}

// set changes the agent's state under its lock and wakes every blocking
// query.
func (f *fakeAgent) set(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/status/leader" {
		fmt.Fprint(w, `"127.0.0.1:8300"`)
		return
	}
	f.mu.Lock()
	if idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64); idx != 0 && idx >= f.index {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Second):
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	blocking := r.URL.Query().Get("index") != ""
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	w.Header().Set("X-Consul-LastContact", "0") // the api package reads nothing after it when absent
	switch r.URL.Path {
	case "/v1/catalog/services":
		w.Header().Set("X-Consul-KnownLeader", "true")
		switch f.catalog {
		case "fail":
			http.Error(w, "No cluster leader", http.StatusInternalServerError)
		case "broken":
			fmt.Fprint(w, `{"web":`)
			select {
			case <-f.broke:
			default:
				close(f.broke)
			}
		default:
			fmt.Fprint(w, f.services)
		}
	case "/v1/health/service/web":
		if blocking {
			w.Header().Set("X-Consul-Query-Backend", api.QueryBackendStreaming)
		} else {
			w.Header().Set("X-Consul-KnownLeader", strconv.FormatBool(!f.noLeader))
			w.Header().Set("X-Consul-Query-Backend", api.QueryBackendBlockingQuery)
		}
		fmt.Fprint(w, f.web)
	default:
		http.NotFound(w, r)
	}
}

// While the catalog watch fails, the followers' streaming answers (which
// say nothing of the servers' leader) change nothing; once it answers
// again, what they brought goes through.
func TestPerServiceHoldsWhileTheCatalogWatchFails(t *testing.T) {
	f, client := newFakeAgent(t)
	src := New(client, rules, Options{WaitTime: 30 * time.Second, RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond, Watch: WatchPerService},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	snaps := testenv.RunSource(t, src)
	waitFor(t, snaps, "web's first answer, trusted", func(s engine.Snapshot) bool {
		return s.Doubt == "" && hasServers("web", "10.1.0.1:8080")(s)
	})
	f.set(func() { f.catalog = "fail" })
	// The follower's next answer must come while the catalog watch is
	// known to fail (two goroutines: wait for the watch's outcome first).
	deadline := time.Now().Add(10 * time.Second)
	for src.m.isUp("catalog/services") {
		if time.Now().After(deadline) {
			t.Fatal("the catalog watch never failed")
		}
		time.Sleep(time.Millisecond)
	}
	f.set(func() { f.web = fakeEntries("10.1.0.1", "10.1.0.2") })
	s := waitFor(t, snaps, "the follower's answer while the catalog fails", hasServers("web", "10.1.0.1:8080", "10.1.0.2:8080"))
	if !strings.Contains(s.Doubt, "catalog watch is failing") {
		t.Fatalf("doubt %q, want the failing catalog watch named", s.Doubt)
	}
	f.set(func() { f.catalog = "ok" })
	waitFor(t, snaps, "trusted again once the catalog answers", func(s engine.Snapshot) bool {
		return s.Doubt == "" && hasServers("web", "10.1.0.1:8080", "10.1.0.2:8080")(s)
	})
}

// A catalog answer that does not decode is read again until one does,
// even though the catalog's index does not move: here the first answer is
// broken, and the source must still send its first snapshot.
func TestPerServiceReadsABrokenCatalogAgain(t *testing.T) {
	f, client := newFakeAgent(t)
	f.set(func() { f.catalog = "broken" })
	snaps := runSource(t, client, WatchPerService, nil)
	select {
	case <-f.broke:
	case <-time.After(10 * time.Second):
		t.Fatal("the source never read the catalog")
	}
	f.mu.Lock()
	f.catalog = "ok" // no index move: only a re-read sees it
	f.mu.Unlock()
	waitFor(t, snaps, "web arrives once the catalog decodes", func(s engine.Snapshot) bool {
		return s.Doubt == "" && hasServers("web", "10.1.0.1:8080")(s)
	})
}

// Followers in backoff share one status request a second while they wait
// for the agent, and all go on once it answers.
func TestFollowersShareTheAgentProbe(t *testing.T) {
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) <= 2 {
			http.Error(w, "No cluster leader", http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Consul-LastContact", "0")
		fmt.Fprint(w, `"127.0.0.1:8300"`)
	}))
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(srv.URL, "http://")
	client, err := NewClient(cfg, WatchPerService)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &agentProbe{ctx: ctx}
	const waiters = 100
	start := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		returned []time.Time
	)
	for range waiters {
		wg.Go(func() {
			if err := p.wait(ctx, client, time.Minute); err != nil {
				t.Error(err)
			}
			mu.Lock()
			returned = append(returned, time.Now())
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	// Woken together, they go on spread over catchUpSpread, not at once:
	// 100 draws over a second all falling within 100 ms has a chance of
	// about 10^-99.
	first, last := slices.MinFunc(returned, time.Time.Compare), slices.MaxFunc(returned, time.Time.Compare)
	if spread := last.Sub(first); spread < catchUpSpread/10 || spread > catchUpSpread+time.Second {
		t.Errorf("the waiters went on within %v of each other, want spread over about %v", spread, catchUpSpread)
	}
	if took > 30*time.Second {
		t.Fatalf("waiters went on after %v: they waited out their backoff, not the agent", took)
	}
	if n := asked.Load(); n != 3 {
		t.Fatalf("%d waiters asked the agent %d times, want 3 (two failed, one answered)", waiters, n)
	}
	t.Logf("%d waiters went on %v after the start, after %d status requests", waiters, took.Round(time.Millisecond), asked.Load())
}

// A streaming answer says nothing of the leader: it is only a cue, and
// the source trusts what a read without an index then says. Here the
// servers lost their leader while the agent's stream still brings a
// change: the change is doubted, not applied.
func TestPerServiceDoubtsWhatAStreamingAnswerCannotVouchFor(t *testing.T) {
	f, client := newFakeAgent(t)
	snaps := runSource(t, client, WatchPerService, nil)
	waitFor(t, snaps, "web's first answer, trusted", func(s engine.Snapshot) bool {
		return s.Doubt == "" && hasServers("web", "10.1.0.1:8080")(s)
	})
	f.set(func() {
		f.noLeader = true
		f.web = fakeEntries("10.1.0.2")
	})
	s := waitFor(t, snaps, "the change, read again", hasServers("web", "10.1.0.2:8080"))
	if !strings.Contains(s.Doubt, "without a known leader") {
		t.Fatalf("doubt %q, want the missing leader named", s.Doubt)
	}
	f.set(func() { f.noLeader = false })
	waitFor(t, snaps, "trusted once the leader is back", func(s engine.Snapshot) bool {
		return s.Doubt == "" && hasServers("web", "10.1.0.2:8080")(s)
	})
}
