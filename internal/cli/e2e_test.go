package cli_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// backend is a real HTTP server that answers its id.
type backend = testenv.Backend

func startBackend(t testing.TB, id string) *backend { return testenv.StartBackend(t, id) }

// syncBuffer collects a log that the test reads while it is written.
type syncBuffer = testenv.LogBuffer

// daemon runs `swallowkeeper run` in-process.
type daemon struct {
	cancel context.CancelFunc
	done   chan int
	log    *syncBuffer
}

func startDaemon(t testing.TB, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan int, 1), log: &syncBuffer{}}
	go func() {
		d.done <- cli.Run(ctx, append([]string{"run"}, args...), io.Discard, d.log, func(string) string { return "" })
	}()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) stop(t testing.TB) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case code := <-d.done:
		if code != 0 {
			t.Errorf("daemon exited %d; log:\n%s", code, d.log.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("daemon did not stop within 10s of SIGTERM; log:\n%s", d.log.String())
	}
}

func (d *daemon) running() bool {
	select {
	case code := <-d.done:
		d.done <- code
		return false
	default:
		return true
	}
}

// route sends n requests for host through nginx, each on a fresh
// connection (so they spread over nginx workers), and returns the ids that
// answered and the number of failures.
func route(t *testing.T, ng *testenv.Nginx, host string, n int) (map[string]int, int) {
	return testenv.Route(ng.ProxyURL(), host, n)
}

func ids(seen map[string]int) []string {
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// waitRoutes polls nginx until traffic for host reaches exactly want, and
// returns how long that took.
func waitRoutes(t *testing.T, ng *testenv.Nginx, d *daemon, host string, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	start := time.Now()
	var got []string
	for time.Since(start) < 15*time.Second {
		seen, failed := route(t, ng, host, 8)
		got = ids(seen)
		if failed == 0 && slices.Equal(got, want) {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("traffic for %s goes to %v, want %v; daemon log:\n%s", host, got, want, d.log.String())
	return 0
}

func fileServers(t *testing.T, path, name string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("persisted file: %v", err)
	}
	st, err := upstream.ParseFile(b)
	if err != nil {
		t.Fatalf("persisted file does not parse: %v\n%s", err, b)
	}
	var out []string
	for _, s := range st[name].Servers {
		out = append(out, s.Addr.String())
	}
	return out
}

func apiGet(t *testing.T, ng *testenv.Nginx, path string) string {
	t.Helper()
	resp, err := http.Get(ng.APIURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func writeConfig(t testing.TB, c *testenv.Consul, ng *testenv.Nginx, file string) string {
	t.Helper()
	return writeConfigConsul(t, fmt.Sprintf("  address: %s\n  wait_time: 30s\n", c.HTTPAddr()), ng, file)
}

// writeConfigConsul is writeConfig with consul, the lines of the consul
// block, written out.
func writeConfigConsul(t testing.TB, consul string, ng *testenv.Nginx, file string) string {
	t.Helper()
	cfg := fmt.Sprintf(`consul:
%sfile: %s
targets:
  - url: %s
    timeout: 2s
upstreams:
  max_fails: 2
  fail_timeout: 3s
  keepalive: 8
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
metrics:
  listen: ""
`, consul, file, ng.APIURL())
	path := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestEndToEnd drives the real daemon between a real Consul and a real
// nginx with the Lua dyups module, through the whole life of a service.
func TestEndToEnd(t *testing.T) {
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	cfg := writeConfig(t, c, ng, file)
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	b1, b2, b3 := startBackend(t, "web-1"), startBackend(t, "web-2"), startBackend(t, "web-3")
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr)
	m0 := scrape(t, metricsAddr)
	if got := m0.sum("swallowkeeper_build_info", `version="`); got != 1 {
		t.Errorf("swallowkeeper_build_info with a version label = %v, want 1", got)
	}

	var latencies []time.Duration
	measure := func(what string, do func(), want ...string) {
		t.Helper()
		start := time.Now()
		do()
		wrote := time.Since(start)
		took := waitRoutes(t, ng, d, "web", want...)
		latencies = append(latencies, took)
		t.Logf("%-44s Consul write %6v, then traffic changed within %v", what, wrote.Round(time.Microsecond), took.Round(time.Millisecond))
	}

	measure("register web-1, web-2", func() {
		c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
		c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	}, "web-1", "web-2")
	if got := fileServers(t, file, "web"); !slices.Equal(got, sorted(b1.Addr(), b2.Addr())) {
		t.Fatalf("persisted file has %v", got)
	}
	// Memory and file agree to the parameter: nginx holds exactly the body
	// the file has.
	detail := apiGet(t, ng, "/detail")
	for _, b := range []*backend{b1, b2} {
		want := "server " + b.Addr() + " weight=1 max_conns=0 max_fails=2 fail_timeout=3 backup=0 down=0"
		if !strings.Contains(detail, want) {
			t.Errorf("/detail lacks %q:\n%s", want, detail)
		}
	}

	// The metrics moved as the first sync says they must.
	m1 := scrape(t, metricsAddr)
	target := `target="` + ng.APIURL() + `"`
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"applies", m1.sum("swallowkeeper_engine_applies_total") - m0.sum("swallowkeeper_engine_applies_total"), 1},
		{"POSTs acknowledged", m1.sum("swallowkeeper_dyups_requests_total", target, `op="POST"`, `outcome="ok"`), 1},
		{"propagations observed", m1.sum("swallowkeeper_propagation_seconds_count"), 1},
		{"target in sync", m1.sum("swallowkeeper_dyups_in_sync", target), 1},
		{"last sync time set", m1.sum("swallowkeeper_dyups_last_sync_timestamp_seconds", target), float64(time.Now().Add(-time.Minute).Unix())},
		{"health watch wakes", m1.sum("swallowkeeper_consul_watch_wakes_total", `watch="health/state/any"`), 1},
		{"upstreams", m1.sum("swallowkeeper_upstreams"), 1},
	} {
		if c.got < c.want {
			t.Errorf("metric %s = %v, want at least %v", c.what, c.got, c.want)
		}
	}
	if ready := httpStatus(t, "http://"+metricsAddr+"/readyz"); ready != 200 {
		t.Errorf("/readyz answered %d with the target in sync", ready)
	}

	measure("web-1's check goes critical", func() { c.SetHealth(t, "web-1", api.HealthCritical) }, "web-2")
	if got := fileServers(t, file, "web"); !slices.Equal(got, []string{b2.Addr()}) {
		t.Fatalf("persisted file has %v after web-1 failed", got)
	}
	measure("register web-3", func() { c.Register(t, "web", "web-3", "127.0.0.1", b3.Port, nil, nil) }, "web-2", "web-3")
	measure("deregister web-3", func() { c.Deregister(t, "web-3") }, "web-2")

	// The last healthy instance fails: nginx keeps it rather than empty.
	c.SetHealth(t, "web-2", api.HealthCritical)
	waitLog(t, d, "no healthy instances; keeping 1 last known servers")
	if seen, failed := route(t, ng, "web", 20); failed > 0 || !slices.Equal(ids(seen), []string{"web-2"}) {
		t.Fatalf("after the last instance failed, traffic went to %v with %d failures", seen, failed)
	}
	if got := fileServers(t, file, "web"); !slices.Equal(got, []string{b2.Addr()}) {
		t.Fatalf("persisted file has %v after the last instance failed", got)
	}
	m2 := scrape(t, metricsAddr)
	if got := m2.sum("swallowkeeper_guard_holds_total", `guard="empty"`) - m1.sum("swallowkeeper_guard_holds_total", `guard="empty"`); got < 1 {
		t.Errorf("guard_holds_total{guard=empty} moved by %v, want at least 1", got)
	}
	if got := m2.sum("swallowkeeper_guard_holds_active"); got < 1 {
		t.Errorf("guard_holds_active = %v while the last instance is held", got)
	}
	measure("web-1 and web-2 recover", func() {
		c.SetHealth(t, "web-1", api.HealthPassing)
		c.SetHealth(t, "web-2", api.HealthPassing)
	}, "web-1", "web-2")

	// Hostile registrations go through the real Consul API; none of them
	// may reach the file or nginx, and the daemon keeps going.
	c.Register(t, "web", "evil-1", "127.0.0.1;server 10.6.6.6:80", 80, nil, nil)
	c.Register(t, "web", "evil-2", "evil.example.com", 80, nil, nil)
	c.Register(t, "web", "evil-3", "127.0.0.1", 70000, nil, nil)
	c.Register(t, "web", "evil-4", "127.0.0.1", 8080, []string{"gray=a}b"}, nil)
	c.Register(t, "web", "evil-5", "127.0.0.1", 8081, nil, map[string]string{"weight": "1 down"})
	c.Register(t, "we{b", "evil-6", "127.0.0.1", 8082, nil, nil)
	waitLog(t, d, "we{b") // a service name that cannot be an upstream: reported by name, never read
	for _, id := range []string{"evil-1", "evil-2", "evil-3", "evil-4", "evil-5"} {
		if !strings.Contains(d.log.String(), id) {
			t.Errorf("no log line names dropped instance %s", id)
		}
	}
	fileText, _ := os.ReadFile(file)
	detail = apiGet(t, ng, "/detail")
	for _, bad := range []string{"6.6.6", "evil", "70000", "a}b", "down=1", "we{b", ":8080", ":8081", ":8082"} {
		if strings.Contains(string(fileText), bad) || strings.Contains(detail, bad) {
			t.Errorf("%q reached the file or nginx:\nfile:\n%s\ndetail:\n%s", bad, fileText, detail)
		}
	}
	if got := scrape(t, metricsAddr).sum("swallowkeeper_invalid_instances_dropped_total") - m2.sum("swallowkeeper_invalid_instances_dropped_total"); got < 5 {
		t.Errorf("invalid_instances_dropped_total moved by %v for 6 hostile registrations", got)
	}
	// The status names what was dropped and why.
	if code, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr); code != 0 || !strings.Contains(out, "Registry entries dropped as invalid") || !strings.Contains(out, "evil-2") {
		t.Errorf("status does not list the dropped instances (exit %d):\n%s", code, out)
	}
	for _, id := range []string{"evil-1", "evil-2", "evil-3", "evil-4", "evil-5", "evil-6"} {
		c.Deregister(t, id)
	}

	// Consul dies for a while: nginx keeps serving the same set, the daemon
	// keeps running, and it catches up when Consul is back.
	before := apiGet(t, ng, "/detail")
	c.Stop(t)
	outageEnd := time.Now().Add(3 * time.Second)
	failedDuringOutage := 0
	for time.Now().Before(outageEnd) {
		seen, failed := route(t, ng, "web", 10)
		failedDuringOutage += failed
		if !slices.Equal(ids(seen), []string{"web-1", "web-2"}) {
			t.Fatalf("during the Consul outage traffic went to %v", seen)
		}
	}
	if failedDuringOutage > 0 {
		t.Errorf("%d requests failed during the Consul outage", failedDuringOutage)
	}
	if after := apiGet(t, ng, "/detail"); after != before {
		t.Errorf("nginx changed during the Consul outage:\n%s\nvs\n%s", before, after)
	}
	if !d.running() {
		t.Fatalf("daemon exited during the Consul outage; log:\n%s", d.log.String())
	}
	// The outage is visible: status says the registry is unreachable.
	code, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr)
	if code != 0 || !strings.Contains(out, "REGISTRY UNREACHABLE") || !strings.Contains(out, "consul "+c.HTTPAddr()) {
		t.Errorf("status during the Consul outage (exit %d):\n%s", code, out)
	}
	c.Start(t)
	// The agent restores its services from its data dir; their TTL checks
	// come back with their last status. Change something and watch it
	// arrive.
	measure("after Consul restart: deregister web-1", func() {
		c.SetHealth(t, "web-2", api.HealthPassing)
		c.Deregister(t, "web-1")
	}, "web-2")

	// The daemon restarts while Consul is down, against an nginx that lost
	// its memory: nginx gets the persisted state from the daemon.
	d.stop(t)
	c.Stop(t)
	ng2 := testenv.StartNginx(t, testenv.NginxOptions{}) // empty, and told nothing of the file
	if list := apiGet(t, ng2, "/list"); list != "" {
		t.Fatalf("fresh nginx already lists %q", list)
	}
	d2 := startDaemon(t, "-config", writeConfig(t, c, ng2, file))
	waitRoutes(t, ng2, d2, "web", "web-2")

	slices.Sort(latencies)
	t.Logf("propagation (Consul write returned → traffic on the new set), %d changes: min %v, median %v, max %v",
		len(latencies), latencies[0].Round(time.Millisecond), latencies[len(latencies)/2].Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
}

// sorted returns addresses in the file's order (as netip sorts them).
func sorted(addrs ...string) []string {
	st := upstream.Upstream{Name: "x"}
	for _, a := range addrs {
		st.Servers = append(st.Servers, upstream.Server{Addr: netip.MustParseAddrPort(a)})
	}
	st.Sort()
	out := make([]string, len(addrs))
	for i, s := range st.Servers {
		out[i] = s.Addr.String()
	}
	return out
}

func waitLog(t *testing.T, d *daemon, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(d.log.String(), substr) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("daemon never logged %q; log:\n%s", substr, d.log.String())
}

func apiDo(t *testing.T, ng *testenv.Nginx, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, ng.APIURL()+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDriftRepair: whatever happens to nginx behind the daemon's back, the
// reconcile loop puts the desired state back within one round.
func TestDriftRepair(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	cfgText, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(cfgText, []byte("reconcile:\n  interval: 300ms\n  reads: 3\n")...), 0o644)
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	d := startDaemon(t, "-config", cfg)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")

	cases := []struct {
		name   string
		damage func()
	}{
		{"someone deletes the upstream", func() {
			if code, _ := apiDo(t, ng, "DELETE", "/upstream/web", ""); code != 200 {
				t.Fatalf("manual DELETE: %d", code)
			}
		}},
		{"someone posts another server set", func() {
			if code, _ := apiDo(t, ng, "POST", "/upstream/web", "server "+b1.Addr()+";"); code != 200 {
				t.Fatalf("manual POST: %d", code)
			}
		}},
		{"someone changes a weight", func() {
			body := "server " + b1.Addr() + " weight=5 max_fails=2 fail_timeout=3s;server " + b2.Addr() + " max_fails=2 fail_timeout=3s;keepalive 8;"
			if code, _ := apiDo(t, ng, "POST", "/upstream/web", body); code != 200 {
				t.Fatalf("manual POST: %d", code)
			}
		}},
		{"nginx restarts and forgets everything", func() {
			ng.Stop(t)
			// This nginx has no persisted_file: its memory starts empty
			// (the daemon may already have repaired it when Start returns).
			ng.Start(t)
		}},
	}
	want := apiGet(t, ng, "/detail")
	for _, tc := range cases {
		start := time.Now()
		tc.damage()
		deadline := time.Now().Add(5 * time.Second)
		for apiGet(t, ng, "/detail") != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not repaired within 5s; /detail:\n%s\nwant:\n%s\nlog:\n%s", tc.name, apiGet(t, ng, "/detail"), want, d.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%-40s repaired in %v (reconcile interval 300ms)", tc.name, time.Since(start).Round(time.Millisecond))
		waitRoutes(t, ng, d, "web", "web-1", "web-2")
	}
	if !strings.Contains(d.log.String(), "drift: nginx does not hold what it should") {
		t.Errorf("repairs were not logged")
	}
}

// TestReloadModeEndToEnd: plain nginx with static upstreams from the
// persisted file, kept in step by test + reload.
func TestReloadModeEndToEnd(t *testing.T) {
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	os.WriteFile(file, []byte(upstream.FileHeader), 0o644) // nginx needs the include to exist
	port := testenv.FreePort(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{HTTP: fmt.Sprintf(`
    include %s;
    server {
        listen 127.0.0.1:%d;
        location / { proxy_pass http://$host; proxy_next_upstream error; }
    }`, file, port)})
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	ngArgs := fmt.Sprintf("[%s, -p, %s, -c, %s", bin, ng.Prefix(), filepath.Join(ng.Prefix(), "nginx.conf"))
	cfg := fmt.Sprintf(`consul: {address: %s}
file: %s
targets: []
reload:
  enabled: true
  test: %s, -t, -q]
  command: %s, -s, reload]
  min_wait: 100ms
  max_wait: 1s
upstreams: {allow_addresses: [127.0.0.0/8]}   # the test backends are on loopback
metrics: {listen: ""}
`, c.HTTPAddr(), file, ngArgs, ngArgs)
	path := filepath.Join(t.TempDir(), "sk.yml")
	os.WriteFile(path, []byte(cfg), 0o644)
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	d := startDaemon(t, "-config", path, "-metrics-listen", metricsAddr)

	proxy := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitStatic := func(want ...string) {
		t.Helper()
		slices.Sort(want)
		deadline := time.Now().Add(10 * time.Second)
		for {
			seen := map[string]bool{}
			for range 8 {
				req, _ := http.NewRequest("GET", proxy, nil)
				req.Host = "web"
				resp, err := (&http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						seen[string(b)] = true
					}
				}
			}
			got := make([]string, 0, len(seen))
			for id := range seen {
				got = append(got, id)
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("static nginx routes to %v, want %v; log:\n%s", got, want, d.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	waitStatic("web-1", "web-2")
	c.SetHealth(t, "web-1", api.HealthCritical)
	waitStatic("web-2")
	waitLog(t, d, "nginx reloaded")
	// The reload shows in status like a target, in sync.
	if code, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr); code != 0 || !strings.Contains(out, "reload: ") || strings.Contains(out, "NOT IN SYNC") {
		t.Errorf("status in reload mode (exit %d):\n%s", code, out)
	}
}

// hangingTarget accepts connections and never answers.
func hangingTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + ln.Addr().String()
}

// TestHangingTargetDoesNotDelayOthers: one target accepts and never
// answers; changes still reach the healthy nginx as fast as ever, and the
// nginx lifecycle (worker kill -9, reload) never loses the desired set.
func TestHangingTargetAndNginxLifecycle(t *testing.T) {
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := fmt.Sprintf(`consul: {address: %s, wait_time: 30s}
file: %s
targets:
  - url: %s
    timeout: 3s
  - url: %s
    timeout: 3s
reconcile: {interval: 500ms, reads: 3}
upstreams: {allow_addresses: [127.0.0.0/8]}   # the test backends are on loopback
metrics: {listen: "%s"}
`, c.HTTPAddr(), file, hangingTarget(t), ng.APIURL(), metricsAddr)
	path := filepath.Join(t.TempDir(), "sk.yml")
	os.WriteFile(path, []byte(cfg), 0o644)
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	d := startDaemon(t, "-config", path)

	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	took := waitRoutes(t, ng, d, "web", "web-1")
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	took = max(took, waitRoutes(t, ng, d, "web", "web-1", "web-2"))
	c.SetHealth(t, "web-1", api.HealthCritical)
	took = max(took, waitRoutes(t, ng, d, "web", "web-2"))
	t.Logf("slowest change to reach the healthy nginx beside a hanging one: %v (hanging target's timeout 3s)", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the healthy target was delayed %v by the hanging one", took)
	}
	c.SetHealth(t, "web-1", api.HealthPassing)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")

	// kill -9 every worker: the master starts new ones, which must route
	// to the desired set.
	for _, pid := range ng.WorkerPIDs() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	// A reload keeps the state too.
	ng.Reload(t)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	if seen, failed := route(t, ng, "web", 20); failed > 0 || len(seen) != 2 {
		t.Fatalf("after worker kills and a reload: %v, %d failed", seen, failed)
	}

	// Per-target status: the hanging target is reported out of sync, the
	// healthy one in sync, with the applied upstream and its instances.
	code, out, errs := runCLI(t, nil, "status", "-addr", metricsAddr)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	t.Logf("swallowkeeper status:\n%s", out)
	for _, want := range []string{ng.APIURL() + "  in sync", "NOT IN SYNC", "web (service web, keepalive 16)", "web-1@sk-test", "web-2@sk-test"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}

	// The same on the status page the daemon serves: red, because a target
	// is out of sync, with both targets and the instances.
	resp, err := http.Get("http://" + metricsAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status page: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"target out of sync", ng.APIURL(), "web-1@sk-test", "web-2@sk-test", "consul " + c.HTTPAddr()} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

// metricsText is one /metrics scrape.
type metricsText string

func scrape(t *testing.T, addr string) metricsText {
	t.Helper()
	var resp *http.Response
	var err error
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Get("http://" + addr + "/metrics"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return metricsText(b)
}

// sum adds the values of every series of the metric whose labels contain
// all of labels.
func (m metricsText) sum(name string, labels ...string) float64 {
	total := 0.0
	for _, line := range strings.Split(string(m), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metric, _, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil && match {
			total += v
		}
	}
	return total
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFlappingInstanceCostsBoundedPushes: an instance whose check flips
// every 100 ms for 5 s (50 transitions in Consul) costs a bounded number of
// pushes with the debounce window wait.min/wait.max, and nginx ends on the
// final state.
func TestFlappingInstanceCostsBoundedPushes(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, []byte("wait:\n  min: 500ms\n  max: 2s\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	posts := func() float64 {
		return scrape(t, metricsAddr).sum("swallowkeeper_dyups_requests_total", `op="POST"`)
	}
	before := posts()
	transitions := 0
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(100 * time.Millisecond) {
		status := api.HealthCritical
		if transitions%2 == 1 {
			status = api.HealthPassing
		}
		c.SetHealth(t, "web-2", status)
		transitions++
	}
	c.SetHealth(t, "web-2", api.HealthPassing)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	time.Sleep(2500 * time.Millisecond) // let a last window close
	pushes := posts() - before
	t.Logf("%d health transitions in 5s cost %v POSTs (wait.min 500ms, wait.max 2s)", transitions, pushes)
	fmt.Printf("FIGURE flapping: %d transitions in 5s -> %v pushes\n", transitions, pushes)
	if pushes > 6 {
		t.Errorf("%d transitions cost %v pushes; want at most 6 (one per wait.max window, plus the last)", transitions, pushes)
	}
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
}
