package splits

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// stateOf is a state of upstreams with no servers, given as name,
// service, name, service...: what the split sink looks at.
func stateOf(pairs ...string) upstream.State {
	st := upstream.State{}
	for i := 0; i+1 < len(pairs); i += 2 {
		st[pairs[i]] = upstream.Upstream{Name: pairs[i], Service: pairs[i+1]}
	}
	return st
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func targetOf(t *testing.T, raw, secret string) Target {
	t.Helper()
	u, err := dyups.ParseBaseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	return Target{URL: u, Secret: secret}
}

// apiGet reads path of the nginx API.
func apiGet(t *testing.T, ngx *testenv.Nginx, path string) (int, string) {
	t.Helper()
	resp, err := ngx.APIClient().Get("http://localhost" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// running starts s.Run until the test ends.
func running(t *testing.T, s *Sink) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond every 20ms up to 10s and fails with what it last saw.
func waitFor(t *testing.T, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < 10*time.Second {
		var ok bool
		if ok, last = cond(); ok {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s; last seen: %s", what, last)
	return 0
}

// TestSinkPushesToLuaTarget: the configured rules reach a real nginx with
// the Lua module, exactly as split.Body renders them; a KV rule replaces
// the configured one and its removal brings the configured one back; an
// emptied shared dict (nginx restarted) is repaired by the resync; a rule
// no longer wanted is deleted.
func TestSinkPushesToLuaTarget(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{APISocket: true, Init: `secret_file = "` + secretFile(t) + `",`})
	web := split.Rule{To: "web_canary", Percent: 10, Sticky: "cookie:sid", Match: split.Match{Header: split.Values{"X-Canary": "1"}}}
	s := New([]Target{targetOf(t, ngx.APIURL(), "s3cret")}, split.Table{"web": web}, Options{Resync: 200 * time.Millisecond}, quiet())
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web", "web_green", "web", "api", "api", "api_canary", "api")})
	running(t, s)

	holds := func(want string) func() (bool, string) {
		return func() (bool, string) {
			_, body := apiGetSecret(t, ngx, "/split")
			return body == want, body
		}
	}
	waitFor(t, "configured rule pushed", holds("split web\n"+split.Body(web)+"\n"))
	st := s.Status()
	if len(st.Targets) != 1 || !st.Targets[0].Pushed || !st.Targets[0].InSync || st.Targets[0].Note != "" {
		t.Errorf("status after the push: %+v", st.Targets)
	}
	if len(st.Rules) != 1 || st.Rules[0].From != FromConfig || st.Rules[0].Match[0] != "header X-Canary=1" {
		t.Errorf("rules in status: %+v", st.Rules)
	}

	kv := split.Rule{To: "web_green", Percent: 50}
	s.SetKV(split.Table{"WEB": kv, "api": {To: "api_canary", Percent: 1.5}}, "")
	waitFor(t, "KV rules pushed", holds("split api\nto api_canary\npercent 1.5\n\nsplit WEB\n"+split.Body(kv)+"\n"))
	s.SetKV(split.Table{}, "")
	waitFor(t, "KV rules gone, configured rule back", holds("split web\n"+split.Body(web)+"\n"))

	ngx.Stop(t)
	ngx.Start(t) // a fresh shared dict: no rule
	waitFor(t, "rule pushed again after an nginx restart", holds("split web\n"+split.Body(web)+"\n"))

	s.mu.Lock()
	s.config = nil
	s.mu.Unlock()
	s.Wake()
	waitFor(t, "rule no longer wanted deleted", func() (bool, string) {
		code, body := apiGetSecret(t, ngx, "/split")
		return code == 204, fmt.Sprintf("%d %q", code, body)
	})
}

func secretFile(t *testing.T) string {
	t.Helper()
	path := t.TempDir() + "/secret"
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func apiGetSecret(t *testing.T, ngx *testenv.Nginx, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://localhost"+path, nil)
	req.Header.Set("X-SwallowKeeper-Secret", "s3cret")
	resp, err := ngx.APIClient().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fakeDyups answers like real dyups: GET /split is an unknown path (404);
// it records every request.
type fakeDyups struct {
	mu   sync.Mutex
	reqs []string
}

func (f *fakeDyups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	w.WriteHeader(http.StatusNotFound)
}

func (f *fakeDyups) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs...)
}

// TestSinkLeavesRealDyupsAlone: a target answering GET /split with 404
// (real dyups) gets no write, and status says the rules are not pushed
// there, while the sink stays in sync and ready.
func TestSinkLeavesRealDyupsAlone(t *testing.T) {
	t.Parallel()
	f := &fakeDyups{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s := New([]Target{targetOf(t, srv.URL, "")}, split.Table{"web": {To: "web_canary", Percent: 10}}, Options{}, quiet())
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web")})
	if err := s.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.requests(); len(got) != 1 || got[0] != "GET /split" {
		t.Errorf("requests to real dyups: %q, want only GET /split", got)
	}
	st := s.Status()
	if ts := st.Targets[0]; ts.Pushed || !ts.InSync || ts.Note != NoSplitAPI {
		t.Errorf("status of a real dyups target: %+v", ts)
	}
	if ss := s.SinkStatus(); !ss.Ready || !ss.InSync || ss.Name != "" || ss.Section != "splits" {
		t.Errorf("sink status: %+v", ss)
	}
}

// TestSinkWithoutRulesSendsNothing: a daemon with no split rule sends its
// targets no request of the split API at all, and acknowledges every state.
func TestSinkWithoutRulesSendsNothing(t *testing.T) {
	t.Parallel()
	f := &fakeDyups{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	s := New([]Target{targetOf(t, srv.URL, "")}, nil, Options{}, quiet())
	acked := false
	s.Update(engine.Change{Done: func(err error) { acked = err == nil }})
	if err := s.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.requests(); len(got) != 0 {
		t.Errorf("requests without rules: %q", got)
	}
	if !acked {
		t.Error("the change was not acknowledged")
	}
	if ts := s.Status().Targets[0]; !ts.InSync {
		t.Errorf("status without rules: %+v", ts)
	}
}

// TestKVRules: keys under the prefix become rules; invalid ones are
// reported and left out.
func TestKVRules(t *testing.T) {
	pairs := api.KVPairs{
		{Key: "sk/splits/", Value: nil},
		{Key: "sk/splits/web", Value: []byte(`{"to":"web_canary","percent":10}`)},
		{Key: "sk/splits/api", Value: []byte(`{"to":"api_canary","percent":101}`)},
		{Key: "sk/splits/a/b", Value: []byte(`{"to":"x"}`)},
		{Key: "sk/splits/web_canary", Value: []byte(`{"to":"web_canary_x","percent":1}`)},
		{Key: "sk/splitsx", Value: []byte(`{"to":"x"}`)},
	}
	var bad []string
	prev := split.Table{"api": {To: "api_canary", Percent: 5}}
	got := KVRules("/sk/splits/", pairs, prev, func(key string, err error) { bad = append(bad, key+": "+err.Error()) })
	// api keeps its previous rule; web, refused, had none.
	if len(got) != 2 || got["web_canary"].To != "web_canary_x" || got["api"].Percent != 5 {
		t.Errorf("rules %v", got)
	}
	want := []string{"sk/splits/api: split api: percent: 101", "sk/splits/a/b: want <prefix>/<upstream>", `sk/splits/web: web.to: "web_canary" has a split of its own`}
	if len(bad) != len(want) {
		t.Fatalf("reported %q, want %q", bad, want)
	}
	for i := range want {
		if !strings.HasPrefix(bad[i], want[i]) {
			t.Errorf("reported %q, want prefix %q", bad[i], want[i])
		}
	}
}

// TestKVRulesReachNginx: a rule put in Consul KV reaches nginx's split API
// through the blocking query, a new share replaces it, and deleting the
// key removes it; the time from each put to nginx holding it is printed.
func TestKVRulesReachNginx(t *testing.T) {
	t.Parallel()
	c := testenv.StartConsul(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	s := New([]Target{targetOf(t, ngx.APIURL(), "")}, nil, Options{}, quiet())
	s.UseKV(client.KV(), "swallowkeeper/splits", time.Minute, nil)
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web", "api", "api", "api_canary", "api")})
	running(t, s)

	for _, p := range []string{"10", "50", "100"} {
		start := time.Now()
		if _, err := client.KV().Put(&api.KVPair{Key: "swallowkeeper/splits/web", Value: []byte(`{"to":"web_canary","percent":` + p + `}`)}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "KV "+p+"% in nginx", func() (bool, string) {
			_, body := apiGet(t, ngx, "/split/web")
			return body == "to web_canary\npercent "+p+"\n", body
		})
		fmt.Printf("FIGURE split KV put (percent %s) -> rule in nginx after %v\n", p, time.Since(start).Round(time.Millisecond))
	}
	if _, err := client.KV().Put(&api.KVPair{Key: "swallowkeeper/splits/web", Value: []byte(`{"to":"web_canary","percent":"x"}`)}, nil); err != nil {
		t.Fatal(err)
	}
	// An invalid value is ignored: the last valid rule stays. The put of
	// a second, valid key shows that the watch went past it.
	if _, err := client.KV().Put(&api.KVPair{Key: "swallowkeeper/splits/api", Value: []byte(`{"to":"api_canary","percent":5}`)}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second key in nginx", func() (bool, string) {
		_, body := apiGet(t, ngx, "/split/api")
		return body == "to api_canary\npercent 5\n", body
	})
	if _, body := apiGet(t, ngx, "/split/web"); body != "to web_canary\npercent 100\n" {
		t.Errorf("after an invalid KV value, nginx holds %q, want the last valid rule", body)
	}
	if _, err := client.KV().Delete("swallowkeeper/splits/web", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted key gone from nginx", func() (bool, string) {
		code, body := apiGet(t, ngx, "/split/web")
		return code == 404, fmt.Sprintf("%d %q", code, body)
	})
}

// blockedKV is a Consul KV that never answers until its context ends.
type blockedKV struct{}

func (blockedKV) List(_ string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	<-q.Context().Done()
	return nil, nil, q.Context().Err()
}

// TestSinkWaitsForKV: with a KV prefix, nothing is pushed before Consul KV
// has answered once, since a KV rule may replace the configured one: a
// restarted daemon must not flip nginx's share back to the configured one
// for the moment it takes to read KV.
func TestSinkWaitsForKV(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	s := New([]Target{targetOf(t, ngx.APIURL(), "")}, split.Table{"web": {To: "web_canary", Percent: 0}}, Options{}, quiet())
	s.UseKV(blockedKV{}, "swallowkeeper/splits", time.Minute, nil)
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web")})
	if err := s.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := apiGet(t, ngx, "/split"); code != 204 {
		t.Errorf("before KV answered, nginx holds %d %q; want nothing pushed", code, body)
	}
	s.SetKV(split.Table{}, "")
	if err := s.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, body := apiGet(t, ngx, "/split/web"); body != "to web_canary\npercent 0\n" {
		t.Errorf("after KV answered (no KV rule), nginx holds %q; want the configured rule", body)
	}
}
