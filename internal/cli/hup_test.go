package cli_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestSIGHUPAppliesInPlace: a SIGHUP applies the new configuration in
// place (issue 16, item 4). The listener never stops answering, counters
// go on, a change that alters no upstream's rendering (the log level)
// pushes nothing again, and a change that alters one upstream (a keepalive
// override for web) pushes that one only. The daemon runs as its own
// process, so that the signal reaches it alone; POSTs are counted by a
// recording proxy in front of nginx's dyups interface.
func TestSIGHUPAppliesInPlace(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	rec, target := startAPIRecorder(t, ng.APIURL())
	b := startBackend(t, "web-1")
	c.Register(t, "web", "web-1", "127.0.0.1", b.Port, nil, nil)
	c.Register(t, "api", "api-1", "127.0.0.1", b.Port, nil, nil)
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	conf := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	base := fmt.Sprintf(`consul:
  address: %s
  wait_time: 30s
file: %s
targets:
  - url: %s
    timeout: 2s
metrics:
  listen: %s
upstreams:
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
`, c.HTTPAddr(), file, target, metricsAddr)
	writeConf := func(extra string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(base+extra), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("")

	cmd, d := startDaemonProcess(t, conf)
	waitRoutes(t, ng, d, "web", "web-1")
	waitRoutes(t, ng, d, "api", "web-1") // one backend serves every service
	if n, m := len(rec.posts("web")), len(rec.posts("api")); n != 1 || m != 1 {
		t.Fatalf("at start: %d POSTs of web, %d of api, want 1 each; requests %v", n, m, rec.requests())
	}
	before := scrape(t, metricsAddr)
	postsBefore := before.sum("swallowkeeper_dyups_requests_total", `op="POST"`)
	appliesBefore := before.sum("swallowkeeper_engine_applies_total")
	if postsBefore < 2 || appliesBefore < 1 {
		t.Fatalf("counters at start: %v POSTs, %v applies", postsBefore, appliesBefore)
	}

	// Probe /healthz all along: every answer must be 200.
	var probes, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get("http://" + metricsAddr + "/healthz")
			probes.Add(1)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	stopProbes := func() {
		close(stop)
		wg.Wait()
	}

	// 1. Only the log level changes (to warn): no upstream is pushed again. A new
	// service registered afterwards is the barrier: once it routes, the
	// reloaded pipeline has handled the registry.
	writeConf("log:\n  level: warn\n")
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "configuration reloaded; applying it in place")
	c.Register(t, "shop", "shop-1", "127.0.0.1", b.Port, nil, nil)
	waitRoutes(t, ng, d, "shop", "web-1")
	if n, m := len(rec.posts("web")), len(rec.posts("api")); n != 1 || m != 1 {
		t.Errorf("after a SIGHUP that changes no upstream: %d POSTs of web, %d of api, want 1 each (no push again); requests %v\nlog:\n%s", n, m, rec.requests(), d.log.String())
	}
	if strings.Contains(d.log.String(), `msg="+ upstream" upstream=shop`) {
		t.Errorf("the new log level (warn) was not applied: shop's info line shows; log:\n%s", d.log.String())
	}

	// 2. A keepalive override for web: web is pushed again, api is not.
	writeConf("  overrides:\n    web:\n      keepalive: 32\n")
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(15 * time.Second)
	for len(rec.posts("web")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("web was not pushed again after its override changed; requests %v\nlog:\n%s", rec.requests(), d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Register(t, "cart", "cart-1", "127.0.0.1", b.Port, nil, nil)
	waitRoutes(t, ng, d, "cart", "web-1")
	if !strings.Contains(d.log.String(), `msg="+ upstream" upstream=cart`) {
		t.Errorf("the log level (back to info) was not applied: cart's info line is missing; log:\n%s", d.log.String())
	}
	if n, m, s := len(rec.posts("web")), len(rec.posts("api")), len(rec.posts("shop")); n != 2 || m != 1 || s != 1 {
		t.Errorf("after a SIGHUP that changes web: %d POSTs of web (want 2), %d of api (want 1), %d of shop (want 1); requests %v", n, m, s, rec.requests())
	}
	stopProbes()

	if f := failures.Load(); f > 0 || probes.Load() < 10 {
		t.Errorf("/healthz during the reloads: %d of %d probes failed (first: %v)", f, probes.Load(), firstFailure.Load())
	}
	after := scrape(t, metricsAddr)
	if p := after.sum("swallowkeeper_dyups_requests_total", `op="POST"`); p < postsBefore+3 {
		t.Errorf("POST counter went from %v to %v across the reloads, want it to go on (+3: shop, web, cart)", postsBefore, p)
	}
	if a := after.sum("swallowkeeper_engine_applies_total"); a < appliesBefore+2 {
		t.Errorf("applies counter went from %v to %v across the reloads, want it to go on", appliesBefore, a)
	}
	if code := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d after the reloads", code)
	}
	if strings.Count(d.log.String(), "metrics listening") != 1 {
		t.Errorf("the listener was opened more than once; log:\n%s", d.log.String())
	}
}

// startDaemonProcess runs `swallowkeeper run -config conf` as a process of
// its own (this test binary in the swallowkeeper role), so that a signal
// reaches the daemon alone; it is killed when the test ends.
func startDaemonProcess(t *testing.T, conf string) (*exec.Cmd, *daemon) {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, "run", "-config", conf)
	cmd.Env = append(os.Environ(), "SK_TEST_ROLE=swallowkeeper")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	return cmd, &daemon{log: logs}
}
