package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/daemon"
	"github.com/swallowkeeper/swallowkeeper/internal/history"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// running is a daemon run in-process by startDaemon.
type running struct {
	log *testenv.LogBuffer
	hup chan os.Signal // a value is a reload request, as SIGHUP is
}

// startDaemon runs the daemon on the configuration file at path (read,
// validated and its token resolved, as the command line does; no
// environment) until the test ends. A reload reads the file again.
func startDaemon(t *testing.T, path string) *running {
	t.Helper()
	load := func() (*config.Config, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		return cfg, cfg.ResolveToken()
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	d := &running{log: &testenv.LogBuffer{}, hup: make(chan os.Signal, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, cfg, daemon.Options{Reload: load, HUP: d.hup, Log: d.log, Version: "test"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon returned %v; log:\n%s", err, d.log.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("daemon did not stop within 10s; log:\n%s", d.log.String())
		}
	})
	return d
}

// writeFile writes data to path.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// statusHistory reads /status's history from the daemon listening on addr.
func statusHistory(t *testing.T, addr string) []history.Event {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/status")
	if err != nil {
		t.Fatalf("/status: %v", err)
	}
	defer resp.Body.Close()
	var doc struct {
		History []history.Event `json:"history"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("/status: %v: %.300s", err, b)
	}
	return doc.History
}

// waitEvent polls /status until its history has an event of the upstream
// with the change, and returns it.
func waitEvent(t *testing.T, addr string, d *running, upstream, change string) history.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := statusHistory(t, addr)
		for _, ev := range h {
			if ev.Upstream == upstream && ev.Change == change {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q of %s in the /status history within 30s: %+v\nlog:\n%s", change, upstream, h, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHUPChangeHasCauseHUP: a change that a reload (SIGHUP) brings, here
// a keepalive override, shows in /status's history with cause "hup"; the
// changes applied before the reload stay in the history with their own
// cause.
func TestHUPChangeHasCauseHUP(t *testing.T) {
	c := testenv.StartConsul(t)
	c.Register(t, "web", "web-1", "127.0.0.1", 8080, nil, nil)
	dir := t.TempDir()
	addr := testenv.Addr(testenv.FreePort(t))
	conf := filepath.Join(dir, "sk.yml")
	base := fmt.Sprintf(`consul: {address: %q, wait_time: 30s}
file: %s
reload: {enabled: true, test: [], command: ["true"]}
metrics: {listen: %q}
upstreams:
  allow_addresses: [127.0.0.0/8]
`, c.HTTPAddr(), filepath.Join(dir, "upstreams.conf"), addr)
	writeFile(t, conf, base)
	d := startDaemon(t, conf)
	if err := testenv.WaitHTTP(context.Background(), "http://"+addr+"/healthz", 10*time.Second); err != nil {
		t.Fatalf("listener not up: %v; log:\n%s", err, d.log.String())
	}

	added := waitEvent(t, addr, d, "web", "+ upstream")
	if added.Cause != history.CauseRegistry {
		t.Errorf("web's first appearance has cause %q, want %q", added.Cause, history.CauseRegistry)
	}
	writeFile(t, conf, base+"  overrides:\n    web: {keepalive: 32}\n")
	d.hup <- syscall.SIGHUP
	changed := waitEvent(t, addr, d, "web", "~ keepalive")
	if changed.Cause != history.CauseHUP {
		t.Errorf("the keepalive change the reload brought has cause %q, want %q: %+v", changed.Cause, history.CauseHUP, changed)
	}
	h := statusHistory(t, addr)
	if !slices.Contains(h, added) {
		t.Errorf("after the reload the history lost the change from before it, %+v: %+v", added, h)
	}
	// A registry change after the reload is the registry's again.
	c.Register(t, "api", "api-1", "127.0.0.1", 8081, nil, nil)
	if ev := waitEvent(t, addr, d, "api", "+ upstream"); ev.Cause != history.CauseRegistry {
		t.Errorf("api, registered after the reload, has cause %q, want %q", ev.Cause, history.CauseRegistry)
	}
	if !strings.Contains(d.log.String(), "configuration reloaded; applying it in place") {
		t.Errorf("the reload is not logged:\n%s", d.log.String())
	}
}
