package consul

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
	"github.com/swallowkeeper/swallowkeeper/internal/source/zookeeper"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// testClient is a source client of the agent c.
func testClient(t *testing.T, c *testenv.Consul) *Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = c.HTTPAddr()
	client, err := NewClient(cfg, WatchCatalog)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// startSource runs a Source against c and returns its snapshots.
func startSource(t *testing.T, c *testenv.Consul, reg prometheus.Registerer) <-chan engine.Snapshot {
	t.Helper()
	return runSource(t, testClient(t, c), WatchCatalog, reg)
}

// runSource runs a Source in watch mode w through client.
func runSource(t *testing.T, client *Client, w string, reg prometheus.Registerer) <-chan engine.Snapshot {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return testenv.RunSource(t, New(client, rules, Options{WaitTime: 30 * time.Second, RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond, Watch: w}, log, reg))
}

// waitFor reads snapshots until cond holds for one, or fails after 10s.
func waitFor(t *testing.T, snaps <-chan engine.Snapshot, what string, cond func(engine.Snapshot) bool) engine.Snapshot {
	t.Helper()
	return testenv.WaitSnapshot(t, snaps, what, cond)
}

func servers(s engine.Snapshot, name string) []string { return testenv.Servers(s, name) }

var hasServers = testenv.HasServers

// TestSourceFollowsRealConsul runs the same registrations, health changes
// and removals through both watch modes.
func TestSourceFollowsRealConsul(t *testing.T) {
	for _, w := range []string{WatchCatalog, WatchPerService} {
		t.Run(w, func(t *testing.T) { followsRealConsul(t, w) })
	}
}

func followsRealConsul(t *testing.T, w string) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	snaps := runSource(t, testClient(t, c), w, reg)
	// Every snapshot waited for must be trusted: a doubted one changes
	// nothing in nginx.
	waitFor := func(t *testing.T, snaps <-chan engine.Snapshot, what string, cond func(engine.Snapshot) bool) engine.Snapshot {
		t.Helper()
		return waitFor(t, snaps, what, func(s engine.Snapshot) bool { return s.Doubt == "" && cond(s) })
	}

	first := waitFor(t, snaps, "the first snapshot arrives", func(engine.Snapshot) bool { return true })
	if first.Services != 0 || len(first.Upstreams) != 0 {
		t.Fatalf("fresh Consul (consul service excluded) gave %d services: %v", first.Services, first.Upstreams)
	}
	// Up with no service to follow too (per_service: no long poll yet).
	if v := metricValue(t, reg, "swallowkeeper_registry_up"); v != 1 {
		t.Fatalf("registry_up = %v at the first snapshot, want 1", v)
	}

	c.Register(t, "web", "web-1", "127.0.0.1", 9001, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", 9002, nil, map[string]string{"weight": "3"})
	s := waitFor(t, snaps, "web has both instances", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	if s.Upstreams["web"].Servers[1].Weight != 3 {
		t.Errorf("weight meta not applied: %+v", s.Upstreams["web"].Servers[1])
	}

	c.SetHealth(t, "web-1", api.HealthCritical)
	waitFor(t, snaps, "a critical check takes web-1 out", hasServers("web", "127.0.0.1:9002"))

	c.SetHealth(t, "web-1", api.HealthPassing)
	waitFor(t, snaps, "web-1 is back when passing", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))

	c.Deregister(t, "web-2")
	waitFor(t, snaps, "deregistering removes web-2", hasServers("web", "127.0.0.1:9001"))

	c.Register(t, "web", "web-3", "127.0.0.1", 9003, []string{"gray=canary"}, nil)
	waitFor(t, snaps, "the canary gets its own upstream", hasServers("web_canary", "127.0.0.1:9003"))

	// An instance without any check moves neither the checks nor the name
	// and tag lists: only the catalog index tells, and the source must
	// still find it.
	if err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-4", Name: "web", Address: "127.0.0.1", Port: 9004}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, snaps, "a check-less instance is found", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9004"))

	// The last instance failing: the upstream stays known with no servers,
	// for the engine to keep its last servers.
	c.Deregister(t, "web-4")
	c.SetHealth(t, "web-1", api.HealthCritical)
	s = waitFor(t, snaps, "web is known with no healthy server", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["web"]
		return ok && len(u.Servers) == 0
	})
	if s.Services != 1 {
		t.Errorf("services = %d, want 1 (web; consul excluded)", s.Services)
	}

	c.Deregister(t, "web-1")
	c.Deregister(t, "web-3")
	waitFor(t, snaps, "a service gone from the catalog is gone", func(s engine.Snapshot) bool { return len(s.Upstreams) == 0 && s.Services == 0 })
}

// Hostile registrations pass through the real Consul API and must be
// dropped and counted, while good instances keep flowing.
func TestSourceDropsHostileRegistrations(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	snaps := startSource(t, c, reg)
	c.Register(t, "web", "good", "127.0.0.1", 9001, nil, nil)
	hostile := []struct {
		id, addr string
		port     int
		tags     []string
		meta     map[string]string
	}{
		{"semicolon", "127.0.0.1;server 6.6.6.6:80", 9002, nil, nil},
		{"newline", "127.0.0.1\nserver 6.6.6.6:80", 9003, nil, nil},
		{"brace", "127.0.0.1}", 9004, nil, nil},
		{"hostname", "evil.example.com", 9005, nil, nil},
		{"port0", "127.0.0.2", 0, nil, nil},
		{"port70000", "127.0.0.3", 70000, nil, nil},
		{"weight", "127.0.0.4", 9006, nil, map[string]string{"weight": "1 backup"}},
		{"gray", "127.0.0.5", 9007, []string{"gray=x;}"}, nil},
		{"unicode", "１２７.0.0.1", 9008, nil, nil},
		{"v4compat", "::1.2.3.4", 9010, nil, nil}, // nginx prints it [::1.2.3.4], Go [::102:304]: refused
	}
	for _, h := range hostile {
		c.Register(t, "web", h.id, h.addr, h.port, h.tags, h.meta)
	}
	// A service whose name cannot be an upstream name.
	c.Register(t, "we#b", "bad-name", "127.0.0.1", 9009, nil, nil)

	dropped := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "swallowkeeper_invalid_instances_dropped_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	want := float64(len(hostile) + 1)
	s := waitFor(t, snaps, "every hostile instance is dropped", func(s engine.Snapshot) bool {
		return dropped() == want && hasServers("web", "127.0.0.1:9001")(s)
	})
	file := string(upstream.RenderFile(s.Upstreams))
	for _, bad := range []string{"6.6.6.6", "evil", "backup", ":0;", "70000", "x;", "we#b", "::102:304", "1.2.3.4"} {
		if strings.Contains(file, bad) {
			t.Errorf("rendered file contains %q:\n%s", bad, file)
		}
	}
	if len(s.Upstreams) != 1 {
		t.Errorf("upstreams %v, want only web", s.Upstreams.Names())
	}
}

// Whatever the number of services, the source keeps a small fixed number of
// connections to the agent (Consul allows 200 per client IP by default).
func TestSourceConnectionsStayBounded(t *testing.T) {
	c := testenv.StartConsul(t)
	const services = 60
	for i := range services {
		c.Register(t, fmt.Sprintf("svc%02d", i), fmt.Sprintf("svc%02d-1", i), "127.0.0.1", 10000+i, nil, nil)
	}
	snaps := startSource(t, c, nil)
	waitFor(t, snaps, "all services are read", func(s engine.Snapshot) bool { return s.Services == services })
	// Churn: many health changes at once.
	for i := range services {
		c.SetHealth(t, fmt.Sprintf("svc%02d-1", i), api.HealthCritical)
	}
	waitFor(t, snaps, "every service lost its server", func(s engine.Snapshot) bool {
		for _, u := range s.Upstreams {
			if len(u.Servers) > 0 {
				return false
			}
		}
		return len(s.Upstreams) == services
	})
	// The test's own client (registrations, health changes) is idle now;
	// its connections are not the source's.
	c.CloseIdleConnections()
	port := c.HTTPAddr()[strings.LastIndex(c.HTTPAddr(), ":")+1:]
	n := establishedTo(t, port)
	t.Logf("established connections to the Consul HTTP port from the source: %d (limit %d)", n, MaxConns)
	if n > MaxConns || n == 0 {
		t.Fatalf("%d connections to Consul, want 1..%d", n, MaxConns)
	}
}

// establishedTo counts this process's established TCP connections to the
// local port, from /proc/self/net/tcp.
func establishedTo(t *testing.T, port string) int {
	p, _ := strconv.Atoi(port)
	hexPort := fmt.Sprintf(":%04X", p)
	f, err := os.Open("/proc/self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inodes := socketInodes(t)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "01" { // 01 = ESTABLISHED
			continue
		}
		if strings.HasSuffix(fields[2], hexPort) && inodes[fields[9]] {
			n++
		}
	}
	return n
}

// socketInodes lists the socket inodes this process holds, so connections
// of the Consul agent itself are not counted.
func socketInodes(t *testing.T) map[string]bool {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, e := range entries {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(l, "socket:[") {
			m[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	return m
}

// TestSourceDoubtsAnswersFilteredByACLs: a token that cannot see every
// service gets answers Consul marks as filtered; they would look like
// removals, so the snapshot carries a doubt (the engine then changes
// nothing) unless the operator said the token is scoped on purpose.
func TestSourceDoubtsAnswersFilteredByACLs(t *testing.T) {
	const root = "f0e1d2c3-0000-4000-8000-00000000cafe"
	c := testenv.StartConsulACL(t, root)
	c.Register(t, "web", "web-1", "10.1.0.1", 8080, nil, nil)
	c.Register(t, "api", "api-1", "10.1.0.2", 8080, nil, nil)
	scoped := scopedToken(t, c, "web-only", `service "web" { policy = "read" } node_prefix "" { policy = "read" }`)
	run := func(token string, opt Options, reg prometheus.Registerer) <-chan engine.Snapshot {
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Token = c.HTTPAddr(), token
		client, err := NewClient(cfg, WatchCatalog)
		if err != nil {
			t.Fatal(err)
		}
		opt.WaitTime, opt.RetryBase, opt.RetryCap = 30*time.Second, 50*time.Millisecond, 500*time.Millisecond
		src := New(client, rules, opt, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		out := make(chan engine.Snapshot, 100)
		go src.Run(ctx, out)
		return out
	}

	reg := prometheus.NewRegistry()
	s := waitFor(t, run(scoped, Options{}, reg), "the scoped token's answer arrives", func(engine.Snapshot) bool { return true })
	if !strings.Contains(s.Doubt, "filtered by ACLs") {
		t.Fatalf("scoped token: doubt %q, want one naming the ACL filtering", s.Doubt)
	}
	if _, ok := s.Upstreams["api"]; ok {
		t.Fatalf("scoped token saw api: %v", s.Upstreams.Names())
	}
	if n := metricValue(t, reg, "swallowkeeper_consul_doubted_answers_total"); n < 1 {
		t.Fatalf("doubted answers counted %v", n)
	}

	s = waitFor(t, run(scoped, Options{AllowACLFiltered: true}, nil), "web arrives", hasServers("web", "10.1.0.1:8080"))
	if s.Doubt != "" {
		t.Fatalf("allow_acl_filtered: doubt %q", s.Doubt)
	}

	s = waitFor(t, run(root, Options{}, nil), "both arrive", func(s engine.Snapshot) bool { return len(s.Upstreams) == 2 })
	if s.Doubt != "" {
		t.Fatalf("management token: doubt %q", s.Doubt)
	}
}

// scopedToken makes a policy of rules, named name, and returns the secret
// of a token that has only it (c runs with ACLs; its client is management).
func scopedToken(t *testing.T, c *testenv.Consul, name, rules string) string {
	t.Helper()
	pol, _, err := c.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Client.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// A watch answer that does not decode moves the watch's index like any
// other, and that watch may then sleep until the next registration: the
// tracker must read the endpoint again by itself. Here the broken answers
// are handed to the tracker directly, and the re-read goes to a real
// Consul.
func TestBrokenAnswersAreReadAgain(t *testing.T) {
	c := testenv.StartConsul(t)
	c.Register(t, "web", "web-1", "127.0.0.1", 9001, nil, nil)
	tr := newTestTracker()
	tr.src.client = testClient(t, c)
	tr.onCatalog(catalogEvent{index: 9, body: []byte(`{"web":[`)})
	tr.onChecks(checksEvent{index: 9, body: []byte(`[{"Node":`)})
	if !tr.rereadCatalog || !tr.rereadChecks || len(tr.doubts) != 2 {
		t.Fatalf("broken answers: reread catalog %v checks %v, doubts %v", tr.rereadCatalog, tr.rereadChecks, tr.doubts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.reread(ctx); err != nil {
		t.Fatal(err)
	}
	if tr.rereadCatalog || tr.rereadChecks || len(tr.doubts) != 0 {
		t.Fatalf("after the re-read: reread catalog %v checks %v, doubts %v", tr.rereadCatalog, tr.rereadChecks, tr.doubts)
	}
	if _, ok := tr.catalog["web"]; !ok || !tr.dirty["web"] {
		t.Fatalf("the re-read catalog lacks web: %v (dirty %v)", tr.catalog, tr.dirty)
	}
}

// An outage is visible (issue 16), as for etcd and ZooKeeper: losing the
// agent logs a warning and sets swallowkeeper_registry_up{source="consul"}
// to 0; its return logs at info and sets it to 1 again. The series exists,
// at 0, before the first answer, and is 1 only while both watches are.
func TestSourceReportsOutage(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	var logs testenv.LogBuffer
	src := New(testClient(t, c), rules, Options{WaitTime: 30 * time.Second, RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), reg)
	up := func() float64 { return testenv.Metric(t, reg, "swallowkeeper_registry_up", "source", "consul") }
	if n := len(gatherFamily(t, reg, "swallowkeeper_registry_up")); n != 1 {
		t.Fatalf("%d registry_up series before Run, want 1", n)
	}
	if v := up(); v != 0 {
		t.Fatalf("registry_up = %v before any answer", v)
	}
	snaps := testenv.RunSource(t, src)
	waitFor(t, snaps, "the first snapshot arrives", func(engine.Snapshot) bool { return true })
	eventuallyTrue(t, "registry_up is 1", func() bool { return up() == 1 })

	c.Stop(t)
	eventuallyTrue(t, "a warning says a watch failed", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="watch failed`)
	})
	eventuallyTrue(t, "registry_up is 0", func() bool { return up() == 0 })

	c.Start(t)
	defer func() {
		if t.Failed() {
			t.Logf("source log:\n%s", logs.String())
		}
	}()
	eventuallyTrue(t, "an info line says the watch recovered", func() bool {
		return strings.Contains(logs.String(), `level=INFO msg="watch recovered`)
	})
	eventuallyTrue(t, "registry_up is 1 again", func() bool { return up() == 1 })
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
	}
}

func gatherFamily(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				out = append(out, m.String())
			}
		}
	}
	return out
}

// One registry holds every source's swallowkeeper_registry_up, each with
// its source label (their help texts must agree, or registering panics),
// each 0 from the start: an alert on it fires for any source.
func TestRegistryUpIsOneMetricForAllSources(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	New(nil, rules, Options{}, log, reg)
	etcd.New([]string{"127.0.0.1:1"}, etcd.Options{}, rules, log, reg)
	zookeeper.New([]string{"127.0.0.1:1"}, zookeeper.Options{}, rules, log, reg)
	if n := len(gatherFamily(t, reg, "swallowkeeper_registry_up")); n != 3 {
		t.Fatalf("%d registry_up series, want 3", n)
	}
	for _, src := range []string{"consul", "etcd", "zookeeper"} {
		if v := testenv.Metric(t, reg, "swallowkeeper_registry_up", "source", src); v != 0 {
			t.Errorf("registry_up{source=%q} = %v before Run, want 0", src, v)
		}
	}
}
