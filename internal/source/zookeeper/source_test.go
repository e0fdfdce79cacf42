package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// startSource runs a Source against servers, with short retries, and
// returns its snapshots. The source must return within 5s of the end of
// the test.
func startSource(t *testing.T, servers []string, opt Options, reg prometheus.Registerer) <-chan engine.Snapshot {
	t.Helper()
	src := New(servers, opt, rules, testenv.Logger(), reg)
	src.retryBase, src.retryCap = 50*time.Millisecond, 500*time.Millisecond
	return testenv.RunSource(t, src)
}

// curatorOptions are the options of most tests: Spring Cloud Zookeeper's
// Curator registrations under /services, a 2s session.
var curatorOptions = Options{Root: "/services", Layout: layout.Curator, SessionTimeout: 2 * time.Second}

var (
	waitFor    = testenv.WaitSnapshot
	next       = testenv.NextSnapshot
	quiet      = testenv.NoSnapshot
	describe   = testenv.DescribeSnapshot
	hasServers = testenv.HasServers
	sample     = testenv.Metric
)

// watchesHeld checks that every watch is armed and none twice: ZooKeeper
// holds data watches on exactly the instance znodes (wchs reports data
// watches only; applications set none), and the source's gauge counts
// those and the child watches on the root and each directory.
func watchesHeld(t *testing.T, z *testenv.ZooKeeper, reg *prometheus.Registry, znodes, dirs int) {
	t.Helper()
	var out string
	for deadline := time.Now().Add(2 * time.Second); ; {
		out = z.FourLetter(t, "wchs")
		if strings.Contains(out, fmt.Sprintf("Total watches:%d\n", znodes)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ZooKeeper holds other than %d data watches:\n%s%s", znodes, out, z.FourLetter(t, "wchc"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The gauge follows the source's own bookkeeping, a moment after the
	// server registered the watch.
	want := float64(1 + dirs + znodes)
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := sample(t, reg, "swallowkeeper_zookeeper_watches")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("watches gauge %v, want %v", got, want)
			return
		}
	}
}

// app is a separate ZooKeeper client acting as the registering
// application. Writes are retried for 10s, so that an app can ride out a
// server restart as Curator does.
type app struct {
	t    *testing.T
	conn *zk.Conn
}

func newApp(t *testing.T, z *testenv.ZooKeeper) *app {
	return &app{t, z.Connect(t, 4*time.Second)}
}

func (a *app) retry(what string, f func() error) {
	a.t.Helper()
	testenv.Retry(a.t, what, func(context.Context) error { return f() })
}

// mkdirs creates path and its parents as persistent znodes.
func (a *app) mkdirs(path string) {
	a.t.Helper()
	p := ""
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		p += "/" + part
		a.retry("create "+p, func() error {
			_, err := a.conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll))
			if errors.Is(err, zk.ErrNodeExists) {
				return nil
			}
			return err
		})
	}
}

// register creates an ephemeral instance znode, as Curator does.
func (a *app) register(path, data string) {
	a.t.Helper()
	a.registerACL(path, data, zk.WorldACL(zk.PermAll))
}

func (a *app) registerACL(path, data string, acl []zk.ACL) {
	a.t.Helper()
	a.mkdirs(path[:strings.LastIndexByte(path, '/')])
	a.retry("register "+path, func() error {
		_, err := a.conn.Create(path, []byte(data), zk.FlagEphemeral, acl)
		return err
	})
}

func (a *app) set(path, data string) {
	a.t.Helper()
	a.retry("set "+path, func() error {
		_, err := a.conn.Set(path, []byte(data), -1)
		return err
	})
}

func (a *app) remove(path string) {
	a.t.Helper()
	a.retry("delete "+path, func() error { return a.conn.Delete(path, -1) })
}

// instance is a Spring Cloud Zookeeper registration, shaped like
// springCloudUp.
func instance(service, id, addr string, port int, metadata string) string {
	return fmt.Sprintf(`{"name":%q,"id":%q,"address":%q,"port":%d,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"%s-1","name":%q,"metadata":%s},"registrationTimeUTC":1658569595889,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`,
		service, id, addr, port, service, service, metadata)
}

// The Curator layout through a real ZooKeeper: the root appearing late,
// instances coming, changing, going out of service and going away, the
// canary rule, an application's session ending, and directories emptied and
// removed.
func TestSourceFollowsCuratorRegistrations(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	snaps := startSource(t, []string{z.Addr()}, curatorOptions, nil)

	first := next(t, snaps, "the first snapshot arrives")
	if first.Services != 0 || len(first.Upstreams) != 0 {
		t.Fatalf("no /services yet, but the first snapshot has %d services:\n%s", first.Services, describe(first))
	}

	a := newApp(t, z)
	a.register("/services/web/a", instance("web", "a", "127.0.0.1", 9001, `{"instance_status":"UP"}`))
	waitFor(t, snaps, "the root appears and web/a is found", hasServers("web", "127.0.0.1:9001"))

	a.register("/services/web/b", instance("web", "b", "127.0.0.1", 9002, `{"weight":"3"}`))
	s := waitFor(t, snaps, "web/b joins", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	if w := s.Upstreams["web"].Servers[1].Weight; w != 3 {
		t.Errorf("metadata weight not applied: %d", w)
	}

	a.set("/services/web/a", instance("web", "a", "127.0.0.1", 9011, `{"instance_status":"UP"}`))
	waitFor(t, snaps, "a's new port replaces the old", hasServers("web", "127.0.0.1:9002", "127.0.0.1:9011"))

	a.set("/services/web/a", instance("web", "a", "127.0.0.1", 9011, `{"instance_status":"OUT_OF_SERVICE"}`))
	waitFor(t, snaps, "OUT_OF_SERVICE takes a out", hasServers("web", "127.0.0.1:9002"))

	a.register("/services/web/c", instance("web", "c", "127.0.0.1", 9003, `{"gray":"canary"}`))
	waitFor(t, snaps, "metadata gray=canary gets its own upstream", hasServers("web_canary", "127.0.0.1:9003"))

	// An application whose session ends loses its ephemeral znode.
	other := newApp(t, z)
	other.register("/services/api/x", instance("api", "x", "127.0.0.1", 9100, `{}`))
	waitFor(t, snaps, "api/x is found", hasServers("api", "127.0.0.1:9100"))
	other.conn.Close()
	s = waitFor(t, snaps, "api/x is gone with its session; api stays known with no servers", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["api"]
		return ok && len(u.Servers) == 0
	})
	if s.Services != 2 {
		t.Errorf("services = %d, want 2 (web, api)", s.Services)
	}

	for _, id := range []string{"a", "b", "c"} {
		a.remove("/services/web/" + id)
	}
	waitFor(t, snaps, "an emptied web is known with no servers and its canary is gone", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["web"]
		_, canary := s.Upstreams["web_canary"]
		return ok && len(u.Servers) == 0 && !canary
	})

	a.remove("/services/web")
	a.remove("/services/api")
	waitFor(t, snaps, "removed directories are no services", func(s engine.Snapshot) bool {
		return s.Services == 0 && len(s.Upstreams) == 0
	})
}

// The plain layout under another root: the znode name is the address and
// the data holds nginx-upsync parameters.
func TestSourceFollowsPlainRegistrations(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	a := newApp(t, z)
	a.mkdirs("/upstreams/web")
	reg := prometheus.NewRegistry()
	snaps := startSource(t, []string{z.Addr()}, Options{Root: "/upstreams", Layout: layout.Plain, SessionTimeout: 2 * time.Second}, reg)

	first := next(t, snaps, "the first snapshot arrives")
	if u, ok := first.Upstreams["web"]; !ok || len(u.Servers) != 0 || first.Services != 1 {
		t.Fatalf("an empty web directory should be one service known with no servers; got %d services:\n%s", first.Services, describe(first))
	}

	a.register("/upstreams/web/127.0.0.1:9001", "")
	a.register("/upstreams/web/127.0.0.1:9002", `{"weight":3}`)
	s := waitFor(t, snaps, "both znodes are servers", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	if w := s.Upstreams["web"].Servers[1].Weight; w != 3 {
		t.Errorf("weight from the data not applied: %d", w)
	}

	a.set("/upstreams/web/127.0.0.1:9002", `{"weight":5,"down":1}`)
	s = waitFor(t, snaps, "changed parameters arrive", func(s engine.Snapshot) bool {
		u := s.Upstreams["web"]
		return len(u.Servers) == 2 && u.Servers[1].Weight == 5 && u.Servers[1].Down
	})

	a.register("/upstreams/api/[::1]:9100", "")
	waitFor(t, snaps, "a new service directory is followed", hasServers("api", "[::1]:9100"))

	a.remove("/upstreams/web/127.0.0.1:9001")
	waitFor(t, snaps, "a deleted znode is gone", hasServers("web", "127.0.0.1:9002"))
	// The data of 127.0.0.1:9002 and [::1]:9100; the web and api listings.
	watchesHeld(t, z, reg, 2, 2)
}

// Hostile registrations, written for real, are dropped, logged and counted
// once each, while good instances keep flowing: one bad or unreadable znode
// never stalls the source.
func TestSourceDropsHostileRegistrations(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	reg := prometheus.NewRegistry()
	a := newApp(t, z)
	a.register("/services/web/good", instance("web", "good", "127.0.0.1", 9001, `{}`))
	hostile := map[string]string{
		"badjson":   `{"address":"127.0.0.1","port":9002`,
		"semicolon": instance("web", "x", "127.0.0.1;server 6.6.6.6:80", 9003, `{}`),
		"newline":   instance("web", "x", "127.0.0.1\nserver 6.6.6.6:80", 9004, `{}`),
		"brace":     instance("web", "x", "127.0.0.1}", 9005, `{}`),
		"hostname":  instance("web", "x", "evil.example.com", 9006, `{}`),
		"port0":     instance("web", "x", "127.0.0.2", 0, `{}`),
		"port70000": instance("web", "x", "127.0.0.3", 70000, `{}`),
		"hugeport":  `{"address":"127.0.0.4","port":123456789012345678901234567890}`,
		"strport":   `{"address":"127.0.0.5","port":"9007"}`,
		"unicode":   instance("web", "x", "１２７.0.0.1", 9008, `{}`),
		"duplicate": `{"address":"127.0.0.6","port":9009,"address":"6.6.6.6"}`,
		"sslonly":   `{"address":"127.0.0.7","port":null,"sslPort":9443}`,
		"weight":    instance("web", "x", "127.0.0.8", 9010, `{"weight":"1 backup"}`),
		"gray":      instance("web", "x", "127.0.0.9", 9011, `{"gray":"x;}"}`),
	}
	for id, data := range hostile {
		a.register("/services/web/"+id, data)
	}
	// A znode the source may not read, and a service name nginx cannot take.
	a.registerACL("/services/web/secret", instance("web", "secret", "127.0.0.10", 9012, `{}`), zk.WorldACL(zk.PermAll&^zk.PermRead))
	a.register("/services/we#b/x", instance("we#b", "x", "127.0.0.11", 9013, `{}`))

	snaps := startSource(t, []string{z.Addr()}, curatorOptions, reg)
	want := float64(len(hostile) + 2)
	s := waitFor(t, snaps, "the good instance flows", hasServers("web", "127.0.0.1:9001"))
	if got := sample(t, reg, "swallowkeeper_zookeeper_invalid_znodes_dropped_total"); got != want {
		t.Errorf("dropped counter %v, want %v", got, want)
	}
	file := string(upstream.RenderFile(s.Upstreams))
	for _, bad := range []string{"6.6.6.6", "evil", "backup", ":0;", "70000", "x;", "we#b", "127.0.0.10"} {
		if strings.Contains(file, bad) {
			t.Errorf("rendered file contains %q:\n%s", bad, file)
		}
	}
	if len(s.Upstreams) != 1 || s.Services != 2 {
		t.Errorf("upstreams %v with %d services, want only web of 2", s.Upstreams.Names(), s.Services)
	}

	// Good changes still flow, and the invalid ones are not counted again.
	a.register("/services/web/good2", instance("web", "good2", "127.0.0.1", 9020, `{}`))
	waitFor(t, snaps, "another good instance flows", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9020"))
	if got := sample(t, reg, "swallowkeeper_zookeeper_invalid_znodes_dropped_total"); got != want {
		t.Errorf("dropped counter %v after an unrelated change, want still %v", got, want)
	}
	// A hostile znode fixed in place is picked up.
	a.set("/services/web/hostname", instance("web", "hostname", "127.0.0.1", 9006, `{}`))
	waitFor(t, snaps, "a fixed znode flows", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9006", "127.0.0.1:9020"))
}

// A ZooKeeper crash: while it is down the source sends nothing at all (the
// engine keeps the last state); once it is back the source recovers on its
// own and follows changes again.
func TestSourceSurvivesZooKeeperRestart(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	reg := prometheus.NewRegistry()
	a := newApp(t, z)
	a.register("/services/web/a", instance("web", "a", "127.0.0.1", 9001, `{}`))
	snaps := startSource(t, []string{z.Addr()}, curatorOptions, reg)
	waitFor(t, snaps, "web/a is found", hasServers("web", "127.0.0.1:9001"))
	if up := sample(t, reg, "swallowkeeper_zookeeper_session_up"); up != 1 {
		t.Fatalf("session_up = %v with a session", up)
	}

	z.Stop(t)
	quiet(t, snaps, 3*time.Second, "ZooKeeper is down for longer than the session timeout")
	if up := sample(t, reg, "swallowkeeper_zookeeper_session_up"); up != 0 {
		t.Errorf("session_up = %v while ZooKeeper is down", up)
	}

	z.Start(t)
	a.register("/services/web/b", instance("web", "b", "127.0.0.1", 9002, `{}`))
	waitFor(t, snaps, "the source recovers and sees web/b", hasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	if up := sample(t, reg, "swallowkeeper_zookeeper_session_up"); up != 1 {
		t.Errorf("session_up = %v after recovery", up)
	}
	// Watches are not persisted: the client set them again on the server.
	watchesHeld(t, z, reg, 2, 1)
	t.Logf("source session expirations across the restart: %v", sample(t, reg, "swallowkeeper_zookeeper_session_expirations_total"))
}

// The source's own session expires (a partition longer than the session
// timeout, made with a proxy between the source and ZooKeeper) while the
// registry changes: every watch is gone, so the source must re-list
// everything, and the first snapshot after the partition must already be
// the new, complete state. Watches work again afterwards.
func TestSourceReReadsEverythingAfterSessionExpiry(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	reg := prometheus.NewRegistry()
	p := testenv.StartProxy(t, z.Addr())
	a := newApp(t, z)
	a.register("/services/web/a", instance("web", "a", "127.0.0.1", 9001, `{}`))
	a.register("/services/api/x", instance("api", "x", "127.0.0.1", 9100, `{}`))
	snaps := startSource(t, []string{p.Addr()}, Options{Root: "/services", Layout: layout.Curator, SessionTimeout: time.Second}, reg)
	waitFor(t, snaps, "web/a and api/x are found", func(s engine.Snapshot) bool {
		return hasServers("web", "127.0.0.1:9001")(s) && hasServers("api", "127.0.0.1:9100")(s)
	})

	p.Cut()
	a.remove("/services/web/a")
	a.register("/services/web/b", instance("web", "b", "127.0.0.1", 9002, `{}`))
	a.set("/services/api/x", instance("api", "x", "127.0.0.1", 9101, `{}`))
	quiet(t, snaps, 3*time.Second, "the source is cut off from ZooKeeper")

	p.Restore()
	s := next(t, snaps, "a snapshot after the partition")
	if !hasServers("web", "127.0.0.1:9002")(s) || !hasServers("api", "127.0.0.1:9101")(s) || s.Services != 2 {
		t.Fatalf("the first snapshot after the expiry is not the complete new state (%d services):\n%s", s.Services, describe(s))
	}
	if n := sample(t, reg, "swallowkeeper_zookeeper_session_expirations_total"); n != 1 {
		t.Errorf("session expirations = %v, want 1", n)
	}

	a.register("/services/web/c", instance("web", "c", "127.0.0.1", 9003, `{}`))
	a.set("/services/api/x", instance("api", "x", "127.0.0.1", 9102, `{}`))
	waitFor(t, snaps, "watches are armed again in the new session", func(s engine.Snapshot) bool {
		return hasServers("web", "127.0.0.1:9002", "127.0.0.1:9003")(s) && hasServers("api", "127.0.0.1:9102")(s)
	})
	// The data of b, c and x; the web and api listings. The dead
	// session's watches are gone.
	watchesHeld(t, z, reg, 3, 2)
}

// With no ZooKeeper at all the source sends nothing, returns promptly when
// its context ends and leaves no goroutine behind (the zk client's
// included).
func TestSourceSendsNothingWithoutZooKeeper(t *testing.T) {
	dead := testenv.Addr(testenv.FreePort(t))
	src := New([]string{dead}, Options{Root: "/services", Layout: layout.Curator, SessionTimeout: 10 * time.Second}, rules, testenv.Logger(), nil)
	src.retryBase = 50 * time.Millisecond
	testenv.SourceSendsNothing(t, src, 1500*time.Millisecond, nil)
}

// A server that accepts connections and never answers the session
// handshake, as a starting ZooKeeper can: the source gives up on the
// connection after the session timeout and tries again, where the client
// alone would wait ten receive timeouts (6.7s here).
func TestSourceBoundsTheSessionHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan time.Time, 10)
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // never answered
			accepted <- time.Now()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	snaps := startSource(t, []string{l.Addr().String()}, Options{Root: "/services", Layout: layout.Curator, SessionTimeout: time.Second}, nil)
	var at []time.Time
	for len(at) < 2 {
		select {
		case a := <-accepted:
			at = append(at, a)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d connection attempts in 10s, want 2", len(at))
		}
	}
	if gap := at[1].Sub(at[0]); gap > 5*time.Second {
		t.Errorf("second attempt %v after the first, want about 2s (1s handshake bound + the client's 1s pause)", gap)
	}
	// Any snapshot the source sent during the two attempts is waiting in
	// the channel: none may be there, since no session was established.
	select {
	case s := <-snaps:
		t.Fatalf("a snapshot arrived although no session was ever established:\n%s", describe(s))
	default:
	}
}

func TestSourceMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New([]string{"127.0.0.1:1"}, curatorOptions, rules, testenv.Logger(), reg)
	s.m.errors.WithLabelValues("children")
	s.m.reads.WithLabelValues("children")
	// Every family but the shared swallowkeeper_registry_up{source} bears
	// the source's prefix.
	testenv.CheckMetricNames(t, reg, "swallowkeeper_", 9)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if name := mf.GetName(); name != "swallowkeeper_registry_up" && !strings.HasPrefix(name, "swallowkeeper_zookeeper_") {
			t.Errorf("metric %s lacks the swallowkeeper_zookeeper_ prefix", name)
		}
	}
}

// The address policy through a real ZooKeeper (issue 14): with the default
// policy, znodes on loopback, metadata, multicast or broadcast addresses
// are dropped and reported; the good one flows.
func TestSourceRefusesHostAddressesByDefault(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	a := newApp(t, z)
	a.mkdirs("/upstreams/web")
	for _, k := range testenv.RefusedAddresses {
		a.register("/upstreams/web/"+k, "")
	}
	a.register("/upstreams/web/10.1.2.3:8080", "")
	r := rules
	r.Addresses = upstream.AddressPolicy{}
	src := New([]string{z.Addr()}, Options{Root: "/upstreams", Layout: layout.Plain, SessionTimeout: 2 * time.Second}, r, testenv.Logger(), nil)
	src.retryBase, src.retryCap = 50*time.Millisecond, 500*time.Millisecond
	snaps := testenv.RunSource(t, src)
	s := waitFor(t, snaps, "only the good server is in web", hasServers("web", "10.1.2.3:8080"))
	testenv.CheckRefusedByDefault(t, s)
}

// An outage is visible (issue 16): losing ZooKeeper logs a warning and sets
// swallowkeeper_registry_up{source="zookeeper"} to 0; its return logs at
// info and sets it to 1 again. The series exists, at 0, before the first
// session.
func TestSourceReportsOutage(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	reg := prometheus.NewRegistry()
	var logs testenv.LogBuffer
	src := New([]string{z.Addr()}, curatorOptions, rules,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), reg)
	src.retryBase, src.retryCap = 50*time.Millisecond, 500*time.Millisecond
	a := newApp(t, z)
	a.register("/services/web/a", instance("web", "a", "127.0.0.1", 9001, `{}`))
	testenv.CheckOutageReported(t, reg, testenv.Outage{Source: "zookeeper", Stop: z.Stop, Start: z.Start, Logs: &logs,
		Lost: `level=WARN msg="connection to ZooKeeper lost`, Back: `level=INFO msg="ZooKeeper session up again`}, func() {
		snaps := testenv.RunSource(t, src)
		waitFor(t, snaps, "web/a is found", hasServers("web", "127.0.0.1:9001"))
	})
	if up := sample(t, reg, "swallowkeeper_zookeeper_session_up"); up != 1 {
		t.Errorf("session_up = %v after recovery, want it kept beside registry_up", up)
	}
}

// eventually polls cond for up to 15s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
	}
}
