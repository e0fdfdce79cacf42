package cli_test

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
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestReloadModeRetriesUntilNginxConfIsFixed: reload mode with a real etcd
// and a real plain nginx. An operator breaks nginx.conf for a moment while
// the registry changes: nginx -t fails, nginx keeps the old set, and the
// daemon says so everywhere (/readyz 503 with the reason, `status`, the
// page) while it retries. The operator fixes nginx.conf; with no further
// registry change, the retry reloads nginx with the new set and the daemon
// is ready again.
func TestReloadModeRetriesUntilNginxConfIsFixed(t *testing.T) {
	e := testenv.StartEtcd(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, []byte(upstream.FileHeader), 0o644); err != nil { // nginx needs the include to exist
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{HTTP: fmt.Sprintf(`
    include %s;
    server {
        listen 127.0.0.1:%d;
        location / { proxy_pass http://$host; }
    }`, file, port)})
	conf := filepath.Join(ng.Prefix(), "nginx.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	ngArgs := fmt.Sprintf("[%s, -p, %s, -c, %s", bin, ng.Prefix(), conf)
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	cfg := fmt.Sprintf(`source: etcd
etcd: {endpoints: [%s], layout: upsync}
file: %s
targets: []
reload:
  enabled: true
  test: %s, -t, -q]
  command: %s, -s, reload]
  min_wait: 50ms
  max_wait: 500ms
upstreams: {allow_addresses: [127.0.0.0/8]}   # the test backends are on loopback
metrics: {listen: %q}
`, e.Addr(), file, ngArgs, ngArgs, metricsAddr)
	path := filepath.Join(t.TempDir(), "sk.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	etcd := e.Client(t)
	put := func(key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := etcd.Put(ctx, key, `{"weight":1,"max_fails":1,"fail_timeout":10,"down":0}`); err != nil {
			t.Fatal(err)
		}
	}
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	put("/upstreams/web/" + b1.Addr())
	d := startDaemon(t, "-config", path)

	proxy := fmt.Sprintf("http://127.0.0.1:%d", port)
	routes := func() []string {
		seen, _ := testenv.Route(proxy, "web", 8)
		got := make([]string, 0, len(seen))
		for id := range seen {
			got = append(got, id)
		}
		slices.Sort(got)
		return got
	}
	waitRoutes := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for got := routes(); !slices.Equal(got, want); got = routes() {
			if time.Now().After(deadline) {
				t.Fatalf("nginx routes web to %v, want %v; log:\n%s", got, want, d.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	type reloadDoc struct {
		Failing        bool      `json:"failing"`
		FailedAttempts int       `json:"failed_attempts"`
		NextRetry      time.Time `json:"next_retry"`
		LastError      string    `json:"last_error"`
		InSync         bool      `json:"in_sync"`
	}
	reloadStatus := func() reloadDoc {
		t.Helper()
		code, out, errs := runCLI(t, nil, "status", "-addr", metricsAddr, "-json")
		if code != 0 {
			t.Fatalf("status -json: exit %d: %s", code, errs)
		}
		var doc struct {
			Reload *reloadDoc `json:"reload"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Reload == nil {
			t.Fatalf("status -json: %v, no reload section:\n%s", err, out)
		}
		return *doc.Reload
	}

	waitRoutes("web-1")
	waitLog(t, d, "nginx reloaded")
	if code, body := hostGet(t, metricsAddr, metricsAddr, "/readyz"); code != 200 {
		t.Fatalf("/readyz answered %d before anything failed: %s", code, body)
	}

	// The operator's mistake, then a registry change.
	if err := os.WriteFile(conf, append(append([]byte{}, orig...), "\nbroken_by_operator on;\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	put("/upstreams/web/" + b2.Addr())

	deadline := time.Now().Add(30 * time.Second)
	for st := reloadStatus(); st.FailedAttempts < 3; st = reloadStatus() {
		if time.Now().After(deadline) {
			t.Fatalf("no failed test and two retries within 30s: %+v; log:\n%s", st, d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := reloadStatus()
	if !st.Failing || st.InSync || st.NextRetry.IsZero() || !strings.Contains(st.LastError, "broken_by_operator") {
		t.Errorf("/status reload section while the test fails: %+v", st)
	}
	code, body := hostGet(t, metricsAddr, metricsAddr, "/readyz")
	if code != 503 || !strings.Contains(body, "reload mode") || !strings.Contains(body, "broken_by_operator") {
		t.Errorf("/readyz while nginx -t fails answered %d: %s", code, body)
	}
	if code, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr); code != 0 || !strings.Contains(out, "RELOAD FAILING") ||
		!strings.Contains(out, "NOT IN SYNC") || !strings.Contains(out, "failed attempts") {
		t.Errorf("status while nginx -t fails (exit %d):\n%s", code, out)
	}
	if code, page := hostGet(t, metricsAddr, metricsAddr, "/"); code != 200 || !strings.Contains(page, "nginx not reloaded for") ||
		!strings.Contains(page, "broken_by_operator") {
		t.Errorf("status page while nginx -t fails (%d) lacks the failure and the retries:\n%.3000s", code, page)
	}
	if got := routes(); !slices.Equal(got, []string{"web-1"}) {
		t.Errorf("nginx routes web to %v while its test fails, want the old set [web-1]", got)
	}
	if !strings.Contains(d.log.String(), "nginx not reloaded; retrying") {
		t.Errorf("the retries are not logged:\n%s", d.log.String())
	}

	// The operator fixes nginx.conf; the registry does not change again.
	if err := os.WriteFile(conf, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	waitRoutes("web-1", "web-2")
	waitLog(t, d, "nginx reloaded after failed attempts")
	if st := reloadStatus(); st.Failing || !st.InSync || st.FailedAttempts != 0 {
		t.Errorf("/status reload section after the fix: %+v", st)
	}
	if code, body := hostGet(t, metricsAddr, metricsAddr, "/readyz"); code != 200 {
		t.Errorf("/readyz after the fix answered %d: %s", code, body)
	}
}

// hostGet sends GET path to addr with the given Host header and returns
// the status code and body.
func hostGet(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
