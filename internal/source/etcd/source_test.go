package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// newSource builds a source with short timings; opt says the rest, no
// periodic resync unless it asks for one, so that every test proves the
// watch itself.
func newSource(endpoints []string, opt Options, reg prometheus.Registerer) *Source {
	src := New(endpoints, opt, rules, testenv.Logger(), reg)
	src.retryBase, src.retryCap = 50*time.Millisecond, 500*time.Millisecond
	src.requestTimeout = 2 * time.Second
	return src
}

// upsyncOptions are the options of most tests: nginx-upsync's tree under
// /upstreams, a 2s dial timeout.
var upsyncOptions = Options{Layout: layout.Upsync, Prefix: "/upstreams", DialTimeout: 2 * time.Second}

func run(t *testing.T, src *Source) <-chan engine.Snapshot {
	t.Helper()
	return testenv.RunSource(t, src)
}

func startSource(t *testing.T, endpoints []string, opt Options, reg prometheus.Registerer) <-chan engine.Snapshot {
	t.Helper()
	return run(t, newSource(endpoints, opt, reg))
}

var (
	waitFor    = testenv.WaitSnapshot
	next       = testenv.NextSnapshot
	quiet      = testenv.NoSnapshot
	describe   = testenv.DescribeSnapshot
	hasServers = testenv.HasServers
	sample     = testenv.Metric
)

func all(conds ...func(engine.Snapshot) bool) func(engine.Snapshot) bool {
	return func(s engine.Snapshot) bool {
		for _, c := range conds {
			if !c(s) {
				return false
			}
		}
		return true
	}
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
	}
}

// app is an application client writing to etcd. Writes are retried for
// 10s, so that it rides out a restart.
type app struct {
	t   *testing.T
	cli *clientv3.Client
}

func newApp(t *testing.T, e *testenv.Etcd) *app { return &app{t, e.Client(t)} }

func (a *app) do(what string, f func(context.Context) error) {
	a.t.Helper()
	testenv.Retry(a.t, what, f)
}

func (a *app) put(key, value string, opts ...clientv3.OpOption) {
	a.t.Helper()
	a.do("put "+key, func(ctx context.Context) error {
		_, err := a.cli.Put(ctx, key, value, opts...)
		return err
	})
}

func (a *app) del(key string, opts ...clientv3.OpOption) {
	a.t.Helper()
	a.do("delete "+key, func(ctx context.Context) error {
		_, err := a.cli.Delete(ctx, key, opts...)
		return err
	})
}

func (a *app) rev() int64 {
	a.t.Helper()
	var rev int64
	a.do("get revision", func(ctx context.Context) error {
		resp, err := a.cli.Get(ctx, "x", clientv3.WithCountOnly())
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	return rev
}

// An nginx-upsync tree in etcd, as the module's users keep it, is followed
// key by key: servers come, change, go; upstreams come and go; a burst of
// writes makes few snapshots; keys beside the prefix are never read. The
// listing is read in pages of two keys.
func TestSourceFollowsUpsyncTree(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	a.put("/upstreams/test/127.0.0.1:9001", upsyncDefault)
	a.put("/upstreams/test/127.0.0.1:9002", "")
	a.put("/upstreams/api/127.0.0.1:9050", `{"weight":"2"}`)
	a.put("/upstreamsX/test/127.0.0.1:9999", "")
	a.put("/upstreams", "")
	a.put("/other/test/127.0.0.1:9998", "")
	reg := prometheus.NewRegistry()
	src := newSource(e.Endpoints(), upsyncOptions, reg)
	src.pageSize = 2
	snaps := run(t, src)

	s := next(t, snaps, "the first snapshot arrives")
	if !hasServers("test", "127.0.0.1:9001", "127.0.0.1:9002")(s) || !hasServers("api", "127.0.0.1:9050")(s) || s.Services != 2 || len(s.Upstreams) != 2 {
		t.Fatalf("first snapshot is not the tree under /upstreams/ (%d services):\n%s", s.Services, describe(s))
	}
	if body, want := s.Upstreams["test"].Body(), "server 127.0.0.1:9001 weight=1 max_fails=2 fail_timeout=10s;"; !strings.Contains(body, want) {
		t.Errorf("nginx-upsync's value not applied: %q, want %q", body, want)
	}
	if w := s.Upstreams["api"].Servers[0].Weight; w != 2 {
		t.Errorf("string weight not applied: %d", w)
	}
	if up := sample(t, reg, "swallowkeeper_etcd_watch_up"); up != 1 {
		eventually(t, "watch_up is 1", func() bool { return sample(t, reg, "swallowkeeper_etcd_watch_up") == 1 })
	}

	a.put("/upstreams/test/127.0.0.1:9003", `{"weight":5}`)
	s = waitFor(t, snaps, "a new server joins", hasServers("test", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"))
	if w := s.Upstreams["test"].Servers[2].Weight; w != 5 {
		t.Errorf("weight of the new server %d, want 5", w)
	}

	a.put("/upstreams/test/127.0.0.1:9001", `{"weight":1,"max_fails":2,"fail_timeout":10,"down":1}`)
	waitFor(t, snaps, "a changed value marks the server down", func(s engine.Snapshot) bool {
		u := s.Upstreams["test"]
		return len(u.Servers) == 3 && u.Servers[0].Down
	})

	a.del("/upstreams/test/127.0.0.1:9002")
	waitFor(t, snaps, "a deleted key takes its server out", hasServers("test", "127.0.0.1:9001", "127.0.0.1:9003"))

	a.put("/upstreams/bar/[::1]:9100", "")
	s = waitFor(t, snaps, "a new upstream appears", hasServers("bar", "[::1]:9100"))
	if s.Services != 3 {
		t.Errorf("services = %d, want 3", s.Services)
	}

	// A burst: 40 writes, each its own revision.
	before := sample(t, reg, "swallowkeeper_etcd_snapshots_sent_total")
	var want []string
	for i := range 40 {
		addr := fmt.Sprintf("127.0.0.1:%d", 9200+i)
		a.put("/upstreams/burst/"+addr, "")
		want = append(want, addr)
	}
	waitFor(t, snaps, "the whole burst arrives", hasServers("burst", want...))
	// Coalescing waits for 20 ms without events (at most 200 ms); on an
	// idle machine the burst makes 1-5 snapshots, on a loaded one the
	// writes themselves come slower. Without coalescing it makes 40.
	n := sample(t, reg, "swallowkeeper_etcd_snapshots_sent_total") - before
	t.Logf("40 writes in a burst made %v snapshots", n)
	if n > 20 {
		t.Errorf("40 writes in a burst made %v snapshots, want at most 20 (coalesced)", n)
	}

	a.del("/upstreams/bar/", clientv3.WithPrefix())
	s = waitFor(t, snaps, "an upstream whose keys are all deleted is gone", func(s engine.Snapshot) bool {
		_, ok := s.Upstreams["bar"]
		return !ok
	})
	if s.Services != 3 {
		t.Errorf("services = %d, want 3 (test, api, burst)", s.Services)
	}
	for _, name := range s.Upstreams.Names() {
		if !slices.Contains([]string{"test", "api", "burst"}, name) {
			t.Errorf("unexpected upstream %s", name)
		}
	}
	if n := sample(t, reg, "swallowkeeper_etcd_relists_total"); n != 0 {
		t.Errorf("%v relists while nothing went wrong", n)
	}
	if n := sample(t, reg, "swallowkeeper_etcd_invalid_keys_dropped_total"); n != 0 {
		t.Errorf("%v keys dropped, want none", n)
	}
}

// Service registrations with leases: an instance whose keepalive stops
// disappears when its lease expires; tags, meta and health apply.
func TestSourceFollowsServiceRegistrations(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// 5 s, not less: on a loaded 2-core CI machine a shorter lease can
	// lapse between keepalives and fail the "nothing changes" wait below.
	lease, err := a.cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	kaCtx, stopKeepAlive := context.WithCancel(context.Background())
	defer stopKeepAlive()
	ka, err := a.cli.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka { // drain, as an application does
		}
	}()
	a.put("/services/api/x", svc("127.0.0.1", 9100, ""), clientv3.WithLease(lease.ID))
	a.put("/services/api/y", svc("127.0.0.1", 9101, `,"healthy":false`))
	a.put("/services/web/a", svc("127.0.0.1", 9001, `,"meta":{"weight":"4"}`))

	snaps := startSource(t, e.Endpoints(), Options{Layout: layout.Service, Prefix: "/services", DialTimeout: 2 * time.Second}, nil)
	s := waitFor(t, snaps, "api/x and web/a are found", all(hasServers("api", "127.0.0.1:9100"), hasServers("web", "127.0.0.1:9001")))
	if w := s.Upstreams["web"].Servers[0].Weight; w != 4 {
		t.Errorf("weight meta not applied: %d", w)
	}
	if s.Services != 2 {
		t.Errorf("services = %d, want 2", s.Services)
	}

	a.put("/services/web/b", svc("127.0.0.1", 9002, `,"tags":["gray=canary"]`))
	waitFor(t, snaps, "tag gray=canary gets its own upstream", all(hasServers("web_canary", "127.0.0.1:9002"), hasServers("web", "127.0.0.1:9001")))

	a.put("/services/web/a", svc("127.0.0.1", 9011, ""))
	waitFor(t, snaps, "a's new port replaces the old", hasServers("web", "127.0.0.1:9011"))

	// The keepalive holds the lease past its TTL.
	quiet(t, snaps, 6*time.Second, "the keepalive holds api/x's lease and nothing else changes")

	stopKeepAlive()
	start := time.Now()
	waitFor(t, snaps, "api/x is gone with its lease; api stays known with no servers", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["api"]
		return ok && len(u.Servers) == 0
	})
	t.Logf("api/x gone %v after its keepalive stopped (TTL 5s)", time.Since(start).Round(time.Millisecond))

	a.del("/services/api/y")
	waitFor(t, snaps, "a service without keys is gone", func(s engine.Snapshot) bool {
		_, ok := s.Upstreams["api"]
		return !ok && s.Services == 1
	})
}

// Hostile keys and values, written for real, are dropped, logged and
// counted once each, and never reach the rendered file, while good
// instances keep flowing; a hostile key fixed in place is picked up.
func TestSourceDropsHostileValues(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	a.put("/upstreams/web/127.0.0.1:9001", upsyncDefault)
	hostile := map[string]string{
		"/upstreams/web/127.0.0.2:80;server 6.6.6.6:80":   "",
		"/upstreams/web/127.0.0.3\nserver 6.6.6.6:80":     "",
		"/upstreams/web/127.0.0.4}:80":                    "",
		"/upstreams/web/127.0.0.5#:80":                    "",
		`/upstreams/web/127.0.0.6":80`:                    "",
		"/upstreams/web/evil.example.com:80":              "",
		"/upstreams/web/１２７.0.0.7:80":                     "",
		"/upstreams/web/127.0.0.8:0":                      "",
		"/upstreams/web/127.0.0.9:70000":                  "",
		"/upstreams/web/127.0.0.10:80":                    `{"weight":"1 backup"}`,
		"/upstreams/web/127.0.0.11:80":                    `{"weight":123456789012345678901234567890}`,
		"/upstreams/web/127.0.0.12:80":                    `{"max_fails":1e400}`,
		"/upstreams/web/127.0.0.13:80":                    `{"down":"1;"}`,
		"/upstreams/web/127.0.0.14:80":                    `"weight=3"`,
		"/upstreams/web/127.0.0.15:80":                    `[1]`,
		"/upstreams/web/127.0.0.16:80":                    `{"weight":1,"weight":100}`,
		"/upstreams/web/127.0.0.17:80":                    "{\"x\":\"\xff\"}",
		"/upstreams/web/127.0.0.18:80":                    `{"fail_timeout":"10s;"}`,
		"/upstreams/web/127.0.0.19:80":                    `{"weight":1}` + "\n" + `}`,
		"/upstreams/web/127.0.0.20:80/deeper":             "",
		"/upstreams/we#b/127.0.0.21:80":                   "",
		"/upstreams/w\xffb/127.0.0.22:80":                 "",
		"/upstreams/web/127.0.0.23:80\n;{}#\"server x:80": "",
	}
	for k, v := range hostile {
		a.put(k, v)
	}
	snaps := startSource(t, e.Endpoints(), upsyncOptions, reg)
	want := float64(len(hostile))
	s := waitFor(t, snaps, "the good instance flows", hasServers("web", "127.0.0.1:9001"))
	if got := sample(t, reg, "swallowkeeper_etcd_invalid_keys_dropped_total"); got != want {
		t.Errorf("dropped counter %v, want %v", got, want)
	}
	file := strings.TrimPrefix(string(upstream.RenderFile(s.Upstreams)), upstream.FileHeader)
	for _, bad := range []string{"6.6.6.6", "evil", "backup", ":0;", "70000", "#", `"`, "}:", "127.0.0.1:80"} {
		if strings.Contains(file, bad) {
			t.Errorf("rendered file contains %q:\n%s", bad, file)
		}
	}
	if len(s.Upstreams) != 1 || s.Services != 3 {
		t.Errorf("upstreams %v with %d services, want only web of 3 (web, we#b, w\\xffb)", s.Upstreams.Names(), s.Services)
	}

	a.put("/upstreams/web/127.0.0.1:9020", "")
	waitFor(t, snaps, "another good instance flows", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9020"))
	if got := sample(t, reg, "swallowkeeper_etcd_invalid_keys_dropped_total"); got != want {
		t.Errorf("dropped counter %v after an unrelated change, want still %v", got, want)
	}
	a.put("/upstreams/web/127.0.0.10:80", `{"weight":3}`)
	s = waitFor(t, snaps, "a fixed value flows", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9020", "127.0.0.10:80"))
	if w := s.Upstreams["web"].Servers[2].Weight; w != 3 {
		t.Errorf("fixed weight %d, want 3", w)
	}
	a.put("/upstreams/web/127.0.0.10:80", `{"weight":"3;"}`)
	waitFor(t, snaps, "broken again, it is dropped again", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9020"))
	if got := sample(t, reg, "swallowkeeper_etcd_invalid_keys_dropped_total"); got != want+1 {
		t.Errorf("dropped counter %v, want %v: a key broken again is counted again", got, want+1)
	}
}

// The source is cut off from etcd (a proxy between them drops every
// connection) while the registry changes and the history is compacted: it
// sends nothing while cut off; when the connection is back its watch cannot
// resume (the revision it needs is compacted), so it lists again, and the
// first snapshot is already the complete new state. Watching works again.
func TestSourceRelistsAfterCompaction(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	p := testenv.StartProxy(t, e.Addr())
	a.put("/upstreams/web/127.0.0.1:9001", "")
	a.put("/upstreams/web/127.0.0.1:9002", "")
	a.put("/upstreams/api/127.0.0.1:9100", "")
	snaps := startSource(t, []string{"http://" + p.Addr()}, upsyncOptions, reg)
	waitFor(t, snaps, "the tree is found", all(hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"), hasServers("api", "127.0.0.1:9100")))
	eventually(t, "watch_up is 1", func() bool { return sample(t, reg, "swallowkeeper_etcd_watch_up") == 1 })

	p.Cut()
	a.del("/upstreams/web/127.0.0.1:9001")
	a.put("/upstreams/web/127.0.0.1:9003", "")
	a.put("/upstreams/api/127.0.0.1:9100", `{"weight":7}`)
	a.put("/upstreams/new/127.0.0.1:9200", "")
	rev := a.rev()
	a.do("compact", func(ctx context.Context) error {
		_, err := a.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
		return err
	})
	quiet(t, snaps, time.Second, "the source is cut off from etcd")
	if up := sample(t, reg, "swallowkeeper_etcd_watch_up"); up != 0 {
		t.Errorf("watch_up = %v while cut off", up)
	}

	p.Restore()
	s := next(t, snaps, "a snapshot after the partition")
	if !all(hasServers("web", "127.0.0.1:9002", "127.0.0.1:9003"), hasServers("api", "127.0.0.1:9100"), hasServers("new", "127.0.0.1:9200"))(s) ||
		s.Services != 3 || s.Upstreams["api"].Servers[0].Weight != 7 {
		t.Fatalf("the first snapshot after the compaction is not the complete new state (%d services):\n%s", s.Services, describe(s))
	}
	if n := sample(t, reg, "swallowkeeper_etcd_relists_total", "reason", "compacted"); n != 1 {
		t.Errorf("relists after compaction = %v, want 1", n)
	}
	if n := sample(t, reg, "swallowkeeper_etcd_revision"); n < float64(rev) {
		t.Errorf("revision gauge %v, want at least %d", n, rev)
	}

	a.put("/upstreams/web/127.0.0.1:9004", "")
	waitFor(t, snaps, "the new watch follows changes", hasServers("web", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"))
	eventually(t, "watch_up is 1 again", func() bool { return sample(t, reg, "swallowkeeper_etcd_watch_up") == 1 })
}

// An etcd crash: while it is down the source sends nothing at all (the
// engine keeps the last state); once it is back the source follows changes
// again, made before and after the restart.
func TestSourceSurvivesEtcdRestart(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	a.put("/upstreams/web/127.0.0.1:9001", "")
	snaps := startSource(t, e.Endpoints(), upsyncOptions, reg)
	waitFor(t, snaps, "web is found", hasServers("web", "127.0.0.1:9001"))
	eventually(t, "watch_up is 1", func() bool { return sample(t, reg, "swallowkeeper_etcd_watch_up") == 1 })

	e.Stop(t)
	quiet(t, snaps, 1500*time.Millisecond, "etcd is down")
	if up := sample(t, reg, "swallowkeeper_etcd_watch_up"); up != 0 {
		t.Errorf("watch_up = %v while etcd is down", up)
	}

	e.Start(t)
	a.put("/upstreams/web/127.0.0.1:9002", "")
	waitFor(t, snaps, "the source sees a write made after the restart", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	a.del("/upstreams/web/127.0.0.1:9001")
	waitFor(t, snaps, "and the next one", hasServers("web", "127.0.0.1:9002"))
	eventually(t, "watch_up is 1 again", func() bool { return sample(t, reg, "swallowkeeper_etcd_watch_up") == 1 })
	t.Logf("relists across the restart: compacted %v, canceled %v, gap %v",
		sample(t, reg, "swallowkeeper_etcd_relists_total", "reason", "compacted"),
		sample(t, reg, "swallowkeeper_etcd_relists_total", "reason", "canceled"),
		sample(t, reg, "swallowkeeper_etcd_relists_total", "reason", "gap"))
}

// etcd comes back rebuilt, its revision starting over, on the same address:
// the client would resume the watch at the old revision and wait for a
// revision the new cluster reaches much later. The source notices the
// revision went back, lists again and follows the new cluster.
func TestSourceFollowsARebuiltCluster(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	for i := range 30 {
		a.put("/upstreams/web/127.0.0.1:9001", fmt.Sprintf(`{"weight":%d}`, i+1))
	}
	snaps := startSource(t, e.Endpoints(), upsyncOptions, reg)
	waitFor(t, snaps, "web is found", hasServers("web", "127.0.0.1:9001"))

	e.Stop(t)
	e.Wipe(t)
	e.Start(t)
	a.put("/upstreams/api/127.0.0.1:9100", "")
	s := waitFor(t, snaps, "the rebuilt cluster's state arrives", hasServers("api", "127.0.0.1:9100"))
	if _, ok := s.Upstreams["web"]; ok || s.Services != 1 {
		t.Errorf("the old cluster's web survived (%d services):\n%s", s.Services, describe(s))
	}
	if n := sample(t, reg, "swallowkeeper_etcd_relists_total"); n < 1 {
		t.Errorf("relists = %v, want at least 1", n)
	}
	a.put("/upstreams/api/127.0.0.1:9101", "")
	waitFor(t, snaps, "the new cluster is watched", hasServers("api", "127.0.0.1:9100", "127.0.0.1:9101"))
}

// The periodic resync lists again and again; it sends nothing while
// nothing changed, and the watch keeps working.
func TestSourceResyncSendsOnlyChanges(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	a.put("/upstreams/web/127.0.0.1:9001", "")
	snaps := startSource(t, e.Endpoints(), Options{Layout: layout.Upsync, Prefix: "/upstreams", DialTimeout: 2 * time.Second, Resync: 150 * time.Millisecond}, reg)
	waitFor(t, snaps, "web is found", hasServers("web", "127.0.0.1:9001"))
	quiet(t, snaps, time.Second, "nothing changed across several resyncs")
	if n := sample(t, reg, "swallowkeeper_etcd_relists_total", "reason", "resync"); n < 3 {
		t.Errorf("%v resyncs in a second, want at least 3", n)
	}
	a.put("/upstreams/web/127.0.0.1:9002", "")
	waitFor(t, snaps, "a change still arrives", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	// The counter moves just after the send that the test received.
	eventually(t, "the second send is counted", func() bool {
		return sample(t, reg, "swallowkeeper_etcd_snapshots_sent_total") >= 2
	})
	if n := sample(t, reg, "swallowkeeper_etcd_snapshots_sent_total"); n != 2 {
		t.Errorf("%v snapshots sent, want 2", n)
	}
}

// With authentication on, the source logs in with its username and
// password; with a wrong password it sends nothing and counts the failure.
func TestSourceLogsIn(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	a.put("/upstreams/web/127.0.0.1:9001", "")
	a.do("enable auth", func(ctx context.Context) error {
		for _, step := range []func() error{
			func() error { _, err := a.cli.UserAdd(ctx, "root", "rootpw"); return err },
			func() error { _, err := a.cli.UserGrantRole(ctx, "root", "root"); return err },
			func() error { _, err := a.cli.RoleAdd(ctx, "reader"); return err },
			func() error {
				_, err := a.cli.RoleGrantPermission(ctx, "reader", "/upstreams/", clientv3.GetPrefixRangeEnd("/upstreams/"), clientv3.PermissionType(clientv3.PermRead))
				return err
			},
			func() error { _, err := a.cli.UserAdd(ctx, "swallowkeeper", "s3cret"); return err },
			func() error { _, err := a.cli.UserGrantRole(ctx, "swallowkeeper", "reader"); return err },
			func() error { _, err := a.cli.AuthEnable(ctx); return err },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})

	snaps := startSource(t, e.Endpoints(), Options{Layout: layout.Upsync, Prefix: "/upstreams", DialTimeout: 2 * time.Second, Username: "swallowkeeper", Password: "s3cret"}, nil)
	waitFor(t, snaps, "web is read with the reader's credentials", hasServers("web", "127.0.0.1:9001"))

	reg := prometheus.NewRegistry()
	bad := startSource(t, e.Endpoints(), Options{Layout: layout.Upsync, Prefix: "/upstreams", DialTimeout: 2 * time.Second, Username: "swallowkeeper", Password: "wrong"}, reg)
	quiet(t, bad, time.Second, "the password is wrong")
	if n := sample(t, reg, "swallowkeeper_etcd_errors_total", "op", "connect"); n < 1 {
		t.Errorf("connect errors %v, want at least 1", n)
	}
}

// With no etcd at all the source sends nothing, counts its failures,
// returns promptly when its context ends and leaves no goroutine behind
// (the client's included).
func TestSourceSendsNothingWithoutEtcd(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := newSource([]string{testenv.Addr(testenv.FreePort(t))}, upsyncOptions, reg)
	src.requestTimeout = 300 * time.Millisecond
	testenv.SourceSendsNothing(t, src, 1500*time.Millisecond, func() {
		if n := sample(t, reg, "swallowkeeper_etcd_errors_total", "op", "list"); n < 1 {
			t.Errorf("list errors %v, want at least 1", n)
		}
		if up := sample(t, reg, "swallowkeeper_etcd_watch_up"); up != 0 {
			t.Errorf("watch_up = %v without etcd", up)
		}
	})
}

// Options the source cannot run with are refused at start, with a message
// that names the problem; Run with them sends nothing. Nothing is
// defaulted here (config.EtcdOptions resolves the defaults): the zero
// Options are refused.
func TestOptions(t *testing.T) {
	src := New(nil, Options{Layout: layout.Service, Prefix: "/a/b/", DialTimeout: time.Second}, rules, testenv.Logger(), nil)
	if src.opt.Prefix != "/a/b" || src.opt.dir() != "/a/b/" || src.opt.Resync != 0 || src.requestTimeout != 10*time.Second ||
		src.retryBase != 250*time.Millisecond || src.retryCap != 30*time.Second {
		t.Errorf("prefix %q (dir %q), resync %v (want 0: off), request timeout %v, retry %v to %v", src.opt.Prefix, src.opt.dir(), src.opt.Resync, src.requestTimeout, src.retryBase, src.retryCap)
	}
	if got := (Options{Prefix: "/"}).dir(); got != "/" {
		t.Errorf("dir of / = %q", got)
	}
	with := func(f func(*Options)) Options { o := upsyncOptions; f(&o); return o }
	for _, p := range []string{"/", "/upstreams", "/v2/keys/upstreams", "/a/b-c/d.e", "/a/b/"} {
		if err := with(func(o *Options) { o.Prefix = p }).Validate(); err != nil {
			t.Errorf("prefix %q: %v", p, err)
		}
	}
	bad := []struct {
		opt Options
		err string
	}{
		{Options{}, `unknown layout ""`},
		{with(func(o *Options) { o.Layout = "curator" }), `unknown layout "curator"`},
		{with(func(o *Options) { o.Prefix = "" }), "want an absolute key path"},
		{with(func(o *Options) { o.Prefix = "upstreams" }), "want an absolute key path"},
		{with(func(o *Options) { o.Prefix = "/a//b" }), `empty, "." or ".." path element`},
		{with(func(o *Options) { o.Prefix = "/a/../b" }), `empty, "." or ".." path element`},
		{with(func(o *Options) { o.Prefix = "/a\nb" }), "control character"},
		{with(func(o *Options) { o.Prefix = "/a\xffb" }), "not valid UTF-8"},
		{with(func(o *Options) { o.DialTimeout = 0 }), "dial timeout 0s"},
		{with(func(o *Options) { o.Resync = -time.Second }), "resync -1s"},
		{with(func(o *Options) { o.Username = "u" }), "both username and password"},
		{with(func(o *Options) { o.Password = "p" }), "both username and password"},
		{with(func(o *Options) { o.CertFile = "c.pem" }), "both cert_file and key_file"},
	}
	for _, b := range bad {
		err := b.opt.Validate()
		if err == nil || !strings.Contains(err.Error(), b.err) || !strings.HasPrefix(err.Error(), "etcd: ") {
			t.Errorf("%v: error %v, want one containing %q", b.opt, err, b.err)
		}
	}
	if _, err := (Options{CAFile: "/nonexistent/ca.pem"}).tlsConfig(); err == nil {
		t.Error("a missing CA file was accepted")
	}
	empty := t.TempDir() + "/ca.pem"
	os.WriteFile(empty, []byte("not a certificate"), 0o600)
	if _, err := (Options{CAFile: empty}).tlsConfig(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}

	withPassword := with(func(o *Options) { o.Username, o.Password = "u", "hunter2" })
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "opt", withPassword)
	for _, printed := range []string{fmt.Sprint(withPassword), fmt.Sprintf("%+v", withPassword), fmt.Sprintf("%#v", withPassword), logged.String()} {
		if strings.Contains(printed, "hunter2") || !strings.Contains(printed, "<redacted>") {
			t.Errorf("the password prints: %s", printed)
		}
	}

	src = New([]string{"127.0.0.1:1"}, with(func(o *Options) { o.Prefix = "relative" }), rules, testenv.Logger(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	out := make(chan engine.Snapshot, 1)
	src.Run(ctx, out)
	if len(out) != 0 {
		t.Error("Run with unusable options sent a snapshot")
	}
}

func TestSourceMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	New([]string{"127.0.0.1:1"}, upsyncOptions, rules, testenv.Logger(), reg)
	// Every family but the shared swallowkeeper_registry_up{source} bears
	// the source's prefix.
	testenv.CheckMetricNames(t, reg, "swallowkeeper_", 8)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if name := mf.GetName(); name != "swallowkeeper_registry_up" && !strings.HasPrefix(name, "swallowkeeper_etcd_") {
			t.Errorf("metric %s lacks the swallowkeeper_etcd_ prefix", name)
		}
	}
}

// The address policy through a real etcd (issue 14): with the default
// policy, upsync keys on loopback, metadata, multicast or broadcast
// addresses are dropped and reported; the good one flows.
func TestSourceRefusesHostAddressesByDefault(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	for _, k := range testenv.RefusedAddresses {
		a.put("/upstreams/web/"+k, "")
	}
	a.put("/upstreams/web/10.1.2.3:8080", "")
	r := rules
	r.Addresses = upstream.AddressPolicy{}
	src := newSource(e.Endpoints(), upsyncOptions, nil)
	src.rules = r
	snaps := run(t, src)
	s := waitFor(t, snaps, "only the good server is in web", hasServers("web", "10.1.2.3:8080"))
	testenv.CheckRefusedByDefault(t, s)
}

// An outage is visible (issue 16): losing etcd logs a warning and sets
// swallowkeeper_registry_up{source="etcd"} to 0; its return logs at info
// and sets it to 1 again. The series exists, at 0, before the first
// connection.
func TestSourceReportsOutage(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := newApp(t, e)
	reg := prometheus.NewRegistry()
	var logs testenv.LogBuffer
	src := newSource(e.Endpoints(), upsyncOptions, reg)
	src.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a.put("/upstreams/web/127.0.0.1:9001", "")
	testenv.CheckOutageReported(t, reg, testenv.Outage{Source: "etcd", Stop: e.Stop, Start: e.Start, Logs: &logs,
		Lost: `level=WARN msg="connection to etcd lost`, Back: `level=INFO msg="connection to etcd back`}, func() {
		snaps := run(t, src)
		waitFor(t, snaps, "web is found", hasServers("web", "127.0.0.1:9001"))
	})
	if up := sample(t, reg, "swallowkeeper_etcd_watch_up"); up != 1 {
		t.Errorf("watch_up = %v after recovery, want it kept beside registry_up", up)
	}
}
