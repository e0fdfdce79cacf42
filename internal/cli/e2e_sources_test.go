package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// writeSourceConfig writes a daemon configuration for a registry section.
func writeSourceConfig(t *testing.T, section string, ng *testenv.Nginx, file string) string {
	t.Helper()
	cfg := fmt.Sprintf(`%s
file: %s
targets:
  - url: %s
    timeout: 2s
guards:
  confirm_after: 1s
upstreams:
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
metrics:
  listen: ""
`, section, file, ng.APIURL())
	path := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestEndToEndEtcdUpsyncTree: an nginx-upsync style tree in a real etcd,
// written as its users already write it, reaches traffic through the real
// daemon and nginx; removals and a parameter change follow; an etcd
// restart changes nothing, and changes flow again after it.
func TestEndToEndEtcdUpsyncTree(t *testing.T) {
	e := testenv.StartEtcd(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeSourceConfig(t, fmt.Sprintf("source: etcd\netcd:\n  endpoints: [%s]\n  layout: upsync\n", e.Addr()), ng, file)
	b1, b2, b3 := startBackend(t, "web-1"), startBackend(t, "web-2"), startBackend(t, "web-3")
	cli := e.Client(t)
	put := func(key, val string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	const upsync = `{"weight":1,"max_fails":2,"fail_timeout":10,"down":0}`
	put("/upstreams/web/"+b1.Addr(), upsync)
	put("/upstreams/web/"+b2.Addr(), upsync)
	put("/upstreams/web/10.0.0.1;evil", upsync) // hostile: dropped, never rendered
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr)
	t.Logf("initial sync: %v", waitRoutes(t, ng, d, "web", "web-1", "web-2"))

	took := time.Now()
	put("/upstreams/web/"+b3.Addr(), upsync)
	waitRoutes(t, ng, d, "web", "web-1", "web-2", "web-3")
	t.Logf("add reached traffic in %v", time.Since(took))

	took = time.Now()
	put("/upstreams/web/"+b1.Addr(), `{"weight":1,"max_fails":2,"fail_timeout":10,"down":1}`)
	waitRoutes(t, ng, d, "web", "web-2", "web-3")
	t.Logf("down=1 reached traffic in %v", time.Since(took))

	took = time.Now()
	del("/upstreams/web/" + b3.Addr())
	waitRoutes(t, ng, d, "web", "web-2")
	t.Logf("delete reached traffic in %v", time.Since(took))

	registryDown(t, d, ng, metricsAddr, "swallowkeeper_etcd_snapshots_sent_total", "connection to etcd lost", e.Stop)
	e.Start(t)
	cli = e.Client(t)
	put("/upstreams/web/"+b3.Addr(), upsync)
	waitRoutes(t, ng, d, "web", "web-2", "web-3")

	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileServers(t, file, "web"); len(got) != 3 { // web-1 stays, down
		t.Fatalf("file servers %v:\n%s", got, b)
	}
	if bytesContain(b, "evil") {
		t.Fatalf("hostile key reached the file:\n%s", b)
	}
}

// TestEndToEndZooKeeperSpringCloud: instances registered the way Spring
// Cloud Zookeeper (Apache Curator service discovery) registers them, as
// ephemeral znodes, reach traffic; a closed session (the app stopped)
// takes its instance out; a ZooKeeper restart changes nothing.
func TestEndToEndZooKeeperSpringCloud(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeSourceConfig(t, fmt.Sprintf("source: zookeeper\nzookeeper:\n  servers: [%s]\n  session_timeout: 4s\n", z.Addr()), ng, file)
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")

	admin := z.Connect(t, 10*time.Second)
	for _, p := range []string{"/services", "/services/web"} {
		if _, err := admin.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
			t.Fatal(err)
		}
	}
	// Each app holds its own session, as a Spring Boot app does.
	register := func(id string, b *backend) *zk.Conn {
		t.Helper()
		conn := z.Connect(t, 4*time.Second)
		data := fmt.Sprintf(`{"name":"web","id":%q,"address":"127.0.0.1","port":%d,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web","name":"web","metadata":{"instance_status":"UP"}},"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":{"parts":[]}}`, id, b.Port)
		if _, err := conn.Create("/services/web/"+id, []byte(data), zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	app1 := register("0b7d1c6e-1111-4a5e-9c1e-000000000001", b1)
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr)
	waitRoutes(t, ng, d, "web", "web-1")
	took := time.Now()
	register("0b7d1c6e-2222-4a5e-9c1e-000000000002", b2)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	t.Logf("registration reached traffic in %v", time.Since(took))

	took = time.Now()
	app1.Close() // the app stops: its session ends, its ephemeral znode goes
	waitRoutes(t, ng, d, "web", "web-2")
	t.Logf("session close reached traffic in %v", time.Since(took))

	registryDown(t, d, ng, metricsAddr, "swallowkeeper_zookeeper_snapshots_sent_total", "connection to ZooKeeper lost", z.Stop)
	z.Start(t)
	register("0b7d1c6e-3333-4a5e-9c1e-000000000003", b1)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
}

func bytesContain(b []byte, s string) bool { return strings.Contains(string(b), s) }

// registryDown stops the registry and checks that nothing changes once
// the daemon has seen it go: it waits for the source's log line about the
// lost connection, routes traffic, and then wants the source's snapshot
// counter and the engine's apply counter where they were before the stop,
// and every request answered by the one backend that served before.
func registryDown(t *testing.T, d *daemon, ng *testenv.Nginx, metricsAddr, snapshotsMetric, lostLog string, stop func(testing.TB)) {
	t.Helper()
	const applies = "swallowkeeper_engine_applies_total"
	before := scrape(t, metricsAddr)
	wantSeen, _ := route(t, ng, "web", 4)
	stop(t)
	waitLog(t, d, lostLog)
	seen, failed := route(t, ng, "web", 10)
	after := scrape(t, metricsAddr)
	if failed > 0 || len(seen) != 1 || len(wantSeen) != 1 || seen[ids(wantSeen)[0]] != 10 {
		t.Fatalf("with the registry down traffic changed: before %v, now %v with %d failed", wantSeen, seen, failed)
	}
	sent, applied := after.sum(snapshotsMetric)-before.sum(snapshotsMetric), after.sum(applies)-before.sum(applies)
	if sent != 0 || applied != 0 || before.sum(snapshotsMetric) == 0 {
		t.Fatalf("after the daemon logged %q the source sent %v snapshots (of %v before) and the engine applied %v states; want none",
			lostLog, sent, before.sum(snapshotsMetric), applied)
	}
	t.Logf("registry down: the daemon logged %q; then %d requests all reached %v, the source sent 0 snapshots and the engine applied 0 states", lostLog, 10, ids(seen))
}
