package drain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// counted is a backend on loopback that counts the requests it answers.
type counted struct {
	id   string
	port int
	hits atomic.Int64
}

func startCounted(t *testing.T, id string) *counted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &counted{id: id, port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.WriteString(w, id)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *counted) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// daemon is `swallowkeeper run` in-process.
type daemon struct {
	cancel context.CancelFunc
	done   chan int
	log    *testenv.LogBuffer
}

func startDaemon(t *testing.T, cfg string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan int, 1), log: &testenv.LogBuffer{}}
	go func() {
		d.done <- cli.Run(ctx, []string{"run", "-config", cfg}, io.Discard, d.log, func(string) string { return "" })
	}()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) stop(t *testing.T) {
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
		t.Errorf("daemon did not stop within 10s; log:\n%s", d.log.String())
	}
}

// command runs a swallowkeeper command in-process.
func command(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = cli.Run(context.Background(), args, &o, &e, func(string) string { return "" })
	return code, o.String(), e.String()
}

// waitUntil polls cond until it holds or timeout passes; it returns how
// long that took and whether it held.
func waitUntil(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fileDown is the server's `down` in the persisted file; ok is false when
// the file does not have it.
func fileDown(t *testing.T, file, name, addr string) (down, ok bool) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		return false, false
	}
	st, err := upstream.ParseFile(b)
	if err != nil {
		t.Fatalf("persisted file does not parse: %v\n%s", err, b)
	}
	for _, s := range st[name].Servers {
		if s.Addr.String() == addr {
			return s.Down, true
		}
	}
	return false, false
}

// nginxDown is the server's `down` as an nginx worker holds it.
func nginxDown(ng *testenv.Nginx, name, addr string) (down, ok bool) {
	resp, err := http.Get(ng.APIURL() + "/detail")
	if err != nil {
		return false, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	d, err := dyups.ParseDetail(string(body))
	if err != nil {
		return false, false
	}
	servers, _ := d.Lookup(name)
	for _, s := range servers {
		if s.Addr == addr {
			return s.Down, true
		}
	}
	return false, false
}

func status(t *testing.T, metrics string) httpapi.Doc {
	t.Helper()
	body, err := httpapi.Fetch(context.Background(), metrics)
	if err != nil {
		t.Fatalf("/status: %v", err)
	}
	var doc httpapi.Doc
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("/status: %v", err)
	}
	return doc
}

// hits sends n requests for web through nginx and returns how many each
// backend answered, counted by the backends themselves.
func hits(t *testing.T, ng *testenv.Nginx, n int, bs ...*counted) []int64 {
	t.Helper()
	before := make([]int64, len(bs))
	for i, b := range bs {
		before[i] = b.hits.Load()
	}
	if _, failed := testenv.Route(ng.ProxyURL(), "web", n); failed > 0 {
		t.Fatalf("%d of %d requests through nginx failed", failed, n)
	}
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.hits.Load() - before[i]
	}
	return out
}

// TestDrainEndToEnd drains a server by hand between a real Consul and a
// real nginx with the Lua module: the file and nginx get `down` and the
// server gets no traffic, across a restart of the daemon and of nginx,
// until it is undrained; draining the last server is refused.
func TestDrainEndToEnd(t *testing.T) {
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	metrics := testenv.Addr(testenv.FreePort(t))
	cfg := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`consul:
  address: %s
  wait_time: 30s
file: %s
targets:
  - url: %s
    timeout: 2s
upstreams:
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
metrics:
  listen: %s
`, c.HTTPAddr(), file, ng.APIURL(), metrics)), 0o644); err != nil {
		t.Fatal(err)
	}
	b1, b2 := startCounted(t, "web-1"), startCounted(t, "web-2")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.port, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", b2.port, nil, nil)
	d := startDaemon(t, cfg)
	if _, ok := waitUntil(20*time.Second, func() bool {
		seen, failed := testenv.Route(ng.ProxyURL(), "web", 20)
		return failed == 0 && seen["web-1"] > 0 && seen["web-2"] > 0
	}); !ok {
		t.Fatalf("traffic never reached both backends; log:\n%s", d.log.String())
	}

	// Drain web-1: the file, then nginx, mark it down; it gets no request.
	start := time.Now()
	if code, out, errOut := command("drain", "-config", cfg, "web", b1.addr()); code != 0 {
		t.Fatalf("drain exited %d: %s%s", code, out, errOut)
	}
	took, ok := waitUntil(10*time.Second, func() bool {
		fd, _ := fileDown(t, file, "web", b1.addr())
		nd, _ := nginxDown(ng, "web", b1.addr())
		return fd && nd
	})
	if !ok {
		t.Fatalf("after drain the file and nginx do not both hold %s down; log:\n%s", b1.addr(), d.log.String())
	}
	t.Logf("FIGURE drain command started → file and nginx hold the server down: %v (the command itself %v)", time.Since(start).Round(time.Millisecond), (time.Since(start) - took).Round(time.Millisecond))
	if h := hits(t, ng, 200, b1, b2); h[0] != 0 || h[1] != 200 {
		t.Fatalf("after the drain was applied, 200 requests reached web-1 %d times and web-2 %d times; want 0 and 200", h[0], h[1])
	}
	doc := status(t, metrics)
	if len(doc.Drains) != 1 || doc.Drains[0].Upstream != "web" || doc.Drains[0].Address != b1.addr() || !doc.Drains[0].Active {
		t.Fatalf("/status drains = %+v, want web %s active", doc.Drains, b1.addr())
	}
	if code, out, _ := command("status", "-addr", metrics); code != 0 || !strings.Contains(out, "Drained by hand") || !strings.Contains(out, b1.addr()) {
		t.Errorf("swallowkeeper status exited %d and says:\n%s\nwant the drained server listed", code, out)
	}

	// The last usable server of web is refused, by name and address; the
	// registry and nginx are left alone.
	code, _, errOut := command("drain", "-config", cfg, "web", b2.addr())
	if code != 1 || !strings.Contains(errOut, "upstream web") || !strings.Contains(errOut, b2.addr()) || !strings.Contains(errOut, "last usable primary server") {
		t.Fatalf("drain of the last server exited %d saying %q; want 1 naming upstream web and %s as its last usable primary server", code, errOut, b2.addr())
	}
	if code, _, errOut := command("undrain", "-config", cfg, "web", b2.addr()); code != 1 || !strings.Contains(errOut, "not drained") {
		t.Fatalf("undrain of a server that is not drained exited %d saying %q; want 1, not drained", code, errOut)
	}

	// The daemon stops, nginx restarts from the file alone: still drained.
	d.stop(t)
	ng.Stop(t)
	ng.Start(t)
	if h := hits(t, ng, 100, b1, b2); h[0] != 0 || h[1] != 100 {
		t.Fatalf("nginx restarted from the file (no daemon): web-1 got %d and web-2 %d of 100 requests; want 0 and 100", h[0], h[1])
	}
	// The daemon starts again: the mark is read back, nothing undrains it.
	d = startDaemon(t, cfg)
	if _, ok := waitUntil(15*time.Second, func() bool {
		body, err := httpapi.Fetch(context.Background(), metrics)
		if err != nil {
			return false
		}
		var doc httpapi.Doc
		return json.Unmarshal(body, &doc) == nil && doc.Answered == 1 && len(doc.Targets) == 1 && doc.Targets[0].InSync &&
			len(doc.Drains) == 1 && doc.Drains[0].Active
	}); !ok {
		t.Fatalf("the restarted daemon did not come in sync with the drain active; log:\n%s", d.log.String())
	}
	if fd, _ := fileDown(t, file, "web", b1.addr()); !fd {
		t.Fatalf("after the daemon restarted the file no longer holds %s down", b1.addr())
	}
	if h := hits(t, ng, 100, b1, b2); h[0] != 0 || h[1] != 100 {
		t.Fatalf("after the daemon restarted, web-1 got %d and web-2 %d of 100 requests; want 0 and 100", h[0], h[1])
	}

	// web-2 leaves the registry: the daemon's guard refuses to leave web
	// with no usable server, shows why, and web-1 serves meanwhile.
	c.Deregister(t, "web-2")
	if _, ok := waitUntil(10*time.Second, func() bool {
		doc := status(t, metrics)
		for _, h := range doc.Holds {
			if h.Guard == "drain" && h.Upstream == "web" && strings.Contains(h.Reason, b1.addr()) && len(doc.Drains) == 1 && !doc.Drains[0].Active {
				return true
			}
		}
		return false
	}); !ok {
		t.Fatalf("with web-2 gone, /status shows no drain hold for web %s: %+v; log:\n%s", b1.addr(), status(t, metrics), d.log.String())
	}
	if _, ok := waitUntil(10*time.Second, func() bool {
		seen, failed := testenv.Route(ng.ProxyURL(), "web", 20)
		return failed == 0 && seen["web-1"] == 20
	}); !ok {
		t.Fatalf("with web-2 gone and the drain of web-1 refused, traffic does not all reach web-1; log:\n%s", d.log.String())
	}
	// web-2 comes back: the mark applies again.
	c.Register(t, "web", "web-2", "127.0.0.1", b2.port, nil, nil)
	if _, ok := waitUntil(10*time.Second, func() bool { nd, _ := nginxDown(ng, "web", b1.addr()); return nd }); !ok {
		t.Fatalf("with web-2 back, nginx does not hold web-1 down again; log:\n%s", d.log.String())
	}
	if h := hits(t, ng, 100, b1, b2); h[0] != 0 || h[1] != 100 {
		t.Fatalf("with web-2 back, web-1 got %d and web-2 %d of 100 requests; want 0 and 100", h[0], h[1])
	}

	// Undrain: web-1 serves again, and the file says so.
	if code, out, errOut := command("undrain", "-config", cfg, "web", b1.addr()); code != 0 {
		t.Fatalf("undrain exited %d: %s%s", code, out, errOut)
	}
	took, ok = waitUntil(10*time.Second, func() bool { return hits(t, ng, 20, b1, b2)[0] > 0 })
	if !ok {
		t.Fatalf("web-1 got no traffic after undrain; log:\n%s", d.log.String())
	}
	t.Logf("FIGURE undrain command → traffic reaches the server again: %v", took.Round(time.Millisecond))
	if fd, in := fileDown(t, file, "web", b1.addr()); fd || !in {
		t.Fatalf("after undrain the file has %s down=%v (present %v); want present and not down", b1.addr(), fd, in)
	}
	if doc := status(t, metrics); len(doc.Drains) != 0 {
		t.Fatalf("/status drains after undrain = %+v, want none", doc.Drains)
	}
}
