package splits

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
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

// TestKVRulesNamesWithDots: a rule wrong only beside others is found by
// its upstream name, dots and all: of two names differing in case one is
// dropped (always the same one), a chain a.b → a.b_c → a.b_c_d loses its
// first link, and an unrelated rule of an upstream named like the first
// part of a dotted name stays.
func TestKVRulesNamesWithDots(t *testing.T) {
	pairs := api.KVPairs{
		{Key: "p/Web.v2", Value: []byte(`{"to":"Web.v2_canary","percent":10}`)},
		{Key: "p/web.v2", Value: []byte(`{"to":"web.v2_canary","percent":90}`)},
		{Key: "p/a.b", Value: []byte(`{"to":"a.b_c","percent":5}`)},
		{Key: "p/a.b_c", Value: []byte(`{"to":"a.b_c_d","percent":5}`)},
		{Key: "p/web", Value: []byte(`{"to":"web_canary","percent":1}`)},
		{Key: "p/a", Value: []byte(`{"to":"a_green","percent":2}`)},
	}
	for range 20 { // map order must not matter
		var bad []string
		got := KVRules("p", pairs, split.Table{"web.v2": {To: "web.v2_old", Percent: 1}}, func(key string, err error) { bad = append(bad, key) })
		if ps := split.CheckTable(got); len(ps) > 0 {
			t.Fatalf("KVRules returned a table with problems: %v", ps)
		}
		want := map[string]string{"Web.v2": "Web.v2_canary", "a.b_c": "a.b_c_d", "web": "web_canary", "a": "a_green"}
		if len(got) != len(want) {
			t.Fatalf("rules %v, want %v", got, want)
		}
		for name, to := range want {
			if got[name].To != to {
				t.Fatalf("rule %s: %+v, want to %s (all: %v)", name, got[name], to, got)
			}
		}
		if strings.Join(bad, " ") != "p/a.b p/web.v2" {
			t.Fatalf("reported %q, want the keys p/a.b and p/web.v2", bad)
		}
	}
}

// TestHostileKVSplitsNeverReachNginx: whoever can write the split prefix in
// Consul KV can move one service's traffic only to that service's own
// groups. Rules naming another service's upstream, an upstream named like
// a group but built from another service, or a reserved name are refused
// and reported; a legitimate rule put after them reaches nginx alone. A
// group that another service takes over later is withdrawn at once.
func TestHostileKVSplitsNeverReachNginx(t *testing.T) {
	t.Parallel()
	c := testenv.StartConsul(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	s := New([]Target{targetOf(t, ngx.APIURL(), "")}, nil, Options{Reserved: []string{"swallowkeeper_backend"}}, quiet())
	s.UseKV(client.KV(), "sk/splits", time.Minute, nil)
	state := stateOf("shop", "shop", "admin", "admin", "pay", "pay", "pay_admin", "admin",
		"swallowkeeper", "swallowkeeper", "web", "web", "web_canary", "web")
	s.Update(engine.Change{State: state})
	running(t, s)

	for _, kv := range [][2]string{
		{"shop", `{"to":"admin","percent":100}`},                          // another service's upstream
		{"pay", `{"to":"pay_admin","percent":100}`},                       // named like a group, built from admin
		{"swallowkeeper", `{"to":"swallowkeeper_backend","percent":100}`}, // nginx.conf's own upstream
		{"web", `{"to":"web_canary","percent":10}`},                       // legitimate, put last
	} {
		if _, err := client.KV().Put(&api.KVPair{Key: "sk/splits/" + kv[0], Value: []byte(kv[1])}, nil); err != nil {
			t.Fatal(err)
		}
	}
	want := "split web\nto web_canary\npercent 10\n\n"
	waitFor(t, "only the legitimate rule in nginx", func() (bool, string) {
		_, body := apiGet(t, ngx, "/split")
		return body == want, body
	})
	refused := map[string]string{}
	for _, r := range s.Status().Rules {
		refused[r.Upstream] = r.Refused
	}
	for name, why := range map[string]string{
		"pay":           `"pay_admin" is built from service "admin", not pay's service "pay"`,
		"swallowkeeper": `"swallowkeeper_backend" is a reserved name`,
	} {
		if !strings.Contains(refused[name], why) {
			t.Errorf("status of split %s: refused %q, want %q", name, refused[name], why)
		}
	}
	if _, ok := refused["shop"]; ok {
		t.Errorf("split shop → admin is in force: %v", refused)
	}

	// web_canary now built from another service: the rule goes. (A new
	// map: a state handed over is never changed in place.)
	state = maps.Clone(state)
	state["web_canary"] = upstream.Upstream{Name: "web_canary", Service: "billing"}
	s.Update(engine.Change{State: state})
	waitFor(t, "rule withdrawn once its group is another service's", func() (bool, string) {
		code, body := apiGet(t, ngx, "/split")
		return code == 204, fmt.Sprintf("%d %q", code, body)
	})
}

// TestKVSplitsDoubtACLFilteredAnswers: a token that cannot read every key
// under the prefix gets an answer filtered by ACLs, in which the other
// rules seem deleted: the sink keeps what nginx holds and says why in
// status, instead of deleting those rules from nginx.
func TestKVSplitsDoubtACLFilteredAnswers(t *testing.T) {
	t.Parallel()
	const root = "a1b2c3d4-0000-4000-8000-00000000cafe"
	c := testenv.StartConsulACL(t, root)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	for _, kv := range [][2]string{{"web", `{"to":"web_canary","percent":10}`}, {"api", `{"to":"api_canary","percent":20}`}} {
		if _, err := c.Client.KV().Put(&api.KVPair{Key: "sk/splits/" + kv[0], Value: []byte(kv[1])}, nil); err != nil {
			t.Fatal(err)
		}
	}
	pol, _, err := c.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-split", Rules: `key_prefix "sk/splits/web" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Client.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	state := stateOf("web", "web", "web_canary", "web", "api", "api", "api_canary", "api")
	both := "split api\nto api_canary\npercent 20\n\nsplit web\nto web_canary\npercent 10\n\n"
	sinkWith := func(token string, prev *Sink) *Sink {
		client, err := api.NewClient(&api.Config{Address: c.HTTPAddr(), Token: token})
		if err != nil {
			t.Fatal(err)
		}
		s := New([]Target{targetOf(t, ngx.APIURL(), "")}, nil, Options{RetryBase: 50 * time.Millisecond}, quiet())
		s.UseKV(client.KV(), "sk/splits", time.Minute, nil)
		s.Inherit(prev)
		s.Update(engine.Change{State: state})
		return s
	}

	full := sinkWith(root, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); full.Run(ctx, ctx) }()
	waitFor(t, "both rules in nginx", func() (bool, string) {
		_, body := apiGet(t, ngx, "/split")
		return body == both, body
	})
	cancel()
	<-done

	scoped := sinkWith(tok.SecretID, full)
	running(t, scoped)
	waitFor(t, "the filtered answer doubted in status", func() (bool, string) {
		e := scoped.Status().KVError
		return strings.Contains(e, "filtered by ACLs"), e
	})
	if err := scoped.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, body := apiGet(t, ngx, "/split"); body != both {
		t.Errorf("after an answer filtered by ACLs nginx holds %q, want both rules kept", body)
	}
}

// TestOneShotAcksOnlyOnceKVRulesAreInNginx: in a one-shot run (the once
// command ends on every sink's acknowledgement) the sink acknowledges the
// state only after Consul KV was read and nginx holds its rules.
func TestOneShotAcksOnlyOnceKVRulesAreInNginx(t *testing.T) {
	t.Parallel()
	c := testenv.StartConsul(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	if _, err := c.Client.KV().Put(&api.KVPair{Key: "sk/splits/web", Value: []byte(`{"to":"web_canary","percent":30}`)}, nil); err != nil {
		t.Fatal(err)
	}
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		s := New([]Target{targetOf(t, ngx.APIURL(), "")}, nil, Options{OneShot: true}, quiet())
		s.UseKV(client.KV(), "sk/splits", time.Minute, nil)
		acked := make(chan string, 1)
		s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web"), Done: func(err error) {
			_, body := apiDo(nil, ngx, "GET", "/split/web") // what nginx holds at the acknowledgement
			select {
			case acked <- fmt.Sprintf("err=%v nginx=%q", err, body):
			default:
			}
		}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx, ctx) }()
		var got string
		select {
		case got = <-acked:
		case <-time.After(10 * time.Second):
			t.Fatal("no acknowledgement within 10s")
		}
		cancel()
		<-done
		if want := `err=<nil> nginx="to web_canary\npercent 30\n"`; got != want {
			t.Fatalf("round %d: acknowledged with %s, want %s", round, got, want)
		}
		// The next round starts from an nginx without the rule.
		if code, _ := apiDo(t, ngx, "DELETE", "/split/web"); code != 200 {
			t.Fatalf("DELETE /split/web: %d", code)
		}
	}
}

// TestSplitsComeBackWithTheTargetsRepush: a restarted nginx (an emptied
// shared dict) gets its split rules back as soon as its dyups target
// pushes the upstreams again, not at the split sink's next resync (here
// none at all).
func TestSplitsComeBackWithTheTargetsRepush(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	opt := dyups.DefaultOptions()
	opt.NginxPID = filepath.Join(ngx.Prefix(), "nginx.pid")
	opt.WorkerPoll = 50 * time.Millisecond
	tg, err := dyups.NewTarget(ngx.APIURL(), opt, quiet(), dyups.NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	s := New([]Target{targetOf(t, ngx.APIURL(), "")}, split.Table{"web": {To: "web_canary", Percent: 40}}, Options{}, quiet())
	tg.OnRepush(s.Wake)
	state := upstream.State{}
	for _, name := range []string{"web", "web_canary"} {
		state[name] = upstream.Upstream{Name: name, Service: "web",
			Servers: []upstream.Server{{Addr: netip.MustParseAddrPort(testenv.StartBackend(t, name).Addr()), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { tg.Run(ctx, ctx); done <- struct{}{} }()
	go func() { s.Run(ctx, ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	tg.Update(engine.Change{State: state})
	s.Update(engine.Change{State: state})
	want := "to web_canary\npercent 40\n"
	waitFor(t, "rule in nginx", func() (bool, string) {
		_, body := apiGet(t, ngx, "/split/web")
		return body == want, body
	})

	ngx.Stop(t)
	ngx.Start(t)
	took := waitFor(t, "rule back after the restart", func() (bool, string) {
		code, body := apiGet(t, ngx, "/split/web")
		return body == want, fmt.Sprintf("%d %q", code, body)
	})
	fmt.Printf("FIGURE split rule back in a restarted nginx after %v (worker poll 50ms)\n", took.Round(time.Millisecond))
}

// apiDo sends a bodiless request to the nginx API; a transport error is
// answered as status 0 (t may be nil, off the test's goroutine).
func apiDo(t *testing.T, ngx *testenv.Nginx, method, path string) (int, string) {
	req, _ := http.NewRequest(method, "http://localhost"+path, nil)
	resp, err := ngx.APIClient().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunClosesItsConnections: when Run ends (a SIGHUP replaces the sink)
// its keep-alive connections to the targets are closed, and so are the
// Consul KV client's, instead of lingering until the other end drops them.
func TestRunClosesItsConnections(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNoContent) // the Lua module without rules
			return
		}
		_, _ = io.WriteString(w, "success")
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s := New([]Target{targetOf(t, srv.URL, "")}, split.Table{"web": {To: "web_canary", Percent: 10}}, Options{}, quiet())
	kvClosed := make(chan struct{})
	s.UseKV(emptyKV{}, "sk/splits", time.Minute, func() { close(kvClosed) })
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, ctx) }()
	waitFor(t, "the rule pushed", func() (bool, string) {
		st := s.Status().Targets[0]
		return st.InSync && st.Pushed, fmt.Sprintf("%+v", st)
	})
	cancel()
	<-done
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("the connection to the target is still open 5s after Run returned")
	}
	select {
	case <-kvClosed:
	default:
		t.Error("Run returned without closing the KV client's idle connections")
	}
}

// emptyKV is a Consul KV with no key under the prefix: one answer, then
// it blocks like a blocking query until its context ends.
type emptyKV struct{}

func (emptyKV) List(_ string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	if q.WaitIndex != 0 {
		<-q.Context().Done()
		return nil, nil, q.Context().Err()
	}
	return nil, &api.QueryMeta{LastIndex: 1, KnownLeader: true}, nil
}

// TestTakenOverGroupIsWithdrawnBeforePlannedReturns: the engine hands a
// planned state to Planned before it pushes that state's upstreams. When
// the state makes a pushed rule refused (its group now built from another
// service), the rule is gone from nginx by the time Planned returns, so no
// request can follow it to the new owner's servers once they are pushed.
func TestTakenOverGroupIsWithdrawnBeforePlannedReturns(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	s := New([]Target{targetOf(t, ngx.APIURL(), "")}, split.Table{"web": {To: "web_canary", Percent: 100}}, Options{}, quiet())
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web")})
	running(t, s)
	waitFor(t, "the rule in nginx", func() (bool, string) {
		code, body := apiGet(t, ngx, "/split/web")
		return code == 200, fmt.Sprintf("%d %q", code, body)
	})
	s.Planned(stateOf("web", "web", "web_canary", "billing"))
	if code, body := apiGet(t, ngx, "/split/web"); code != 404 {
		t.Fatalf("right after Planned, GET /split/web answers %d %q; want 404 (the rule withdrawn before the push)", code, body)
	}
}

// A sync that chose its rules before a new state refused one must not
// POST it after withdraw deleted it: here the sync's GET /split is held
// until Planned has returned, then the sync goes on with what it chose.
func TestSyncDoesNotPushBackAWithdrawnRule(t *testing.T) {
	getting, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var posts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			close(getting)
			<-release
			w.WriteHeader(http.StatusNoContent) // nginx holds no rule
		case http.MethodPost:
			mu.Lock()
			posts = append(posts, r.URL.Path)
			mu.Unlock()
		case http.MethodDelete:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	s := New([]Target{targetOf(t, srv.URL, "")}, split.Table{"web": {To: "web_canary", Percent: 100}}, Options{}, quiet())
	s.Update(engine.Change{State: stateOf("web", "web", "web_canary", "web")})
	type result struct {
		complete bool
		err      error
	}
	done := make(chan result, 1)
	go func() {
		complete, err := s.syncAll(context.Background())
		done <- result{complete, err}
	}()
	<-getting // the sync chose to push web → web_canary
	s.Planned(stateOf("web", "web", "web_canary", "billing"))
	close(release)
	if r := <-done; r.err != nil || r.complete {
		t.Fatalf("the sync cut short: complete %v, err %v; want incomplete and no error", r.complete, r.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 0 {
		t.Fatalf("the sync pushed %v after the rule was refused and withdrawn", posts)
	}
}
