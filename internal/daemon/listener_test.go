package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// listenerDaemon runs the daemon in-process with its listener on a free
// loopback port and the given metrics settings (YAML lines under
// metrics:). Its registry never answers (Consul on port 1) and it has no
// dyups target, so nothing is pushed anywhere: only the listener matters.
func listenerDaemon(t *testing.T, metrics string) (string, *running) {
	t.Helper()
	dir := t.TempDir()
	addr := testenv.Addr(testenv.FreePort(t))
	cfg := fmt.Sprintf(`consul: {address: "127.0.0.1:1"}
file: %s
targets: []
reload: {enabled: true, test: [], command: ["true"]}
metrics:
  listen: %q
%s
`, filepath.Join(dir, "upstreams.conf"), addr, metrics)
	path := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := testenv.WaitHTTP(ctx, "http://"+addr+"/healthz", 10*time.Second); err != nil {
		t.Fatalf("listener not up: %v; log:\n%s", err, d.log.String())
	}
	return addr, d
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

func TestListenerPprofIsOffByDefault(t *testing.T) {
	addr, _ := listenerDaemon(t, "")
	if code, _ := hostGet(t, addr, addr, "/status"); code != 200 {
		t.Fatalf("/status answered %d; the listener should serve it", code)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		if code, body := hostGet(t, addr, addr, path); code != http.StatusNotFound {
			t.Errorf("%s answered %d without metrics.pprof, want 404: %.200s", path, code, body)
		}
	}
}

func TestListenerServesPprofWhenEnabled(t *testing.T) {
	addr, d := listenerDaemon(t, "  pprof: true")
	if !strings.Contains(d.log.String(), "pprof=true") {
		t.Errorf("the listener's start line does not say pprof is on:\n%s", d.log.String())
	}
	if code, body := hostGet(t, addr, addr, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ answered %d: %.200s", code, body)
	}
	if code, body := hostGet(t, addr, addr, "/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap answered %d: %.200s", code, body)
	}
	// A CPU profile answers at the end of its duration: the listener's
	// write deadline does not cut it.
	if code, body := hostGet(t, addr, addr, "/debug/pprof/profile?seconds=1"); code != 200 || len(body) == 0 {
		t.Errorf("a 1s CPU profile answered %d, %d bytes", code, len(body))
	}
	// Profiles are behind the Host check too.
	if code, _ := hostGet(t, addr, "evil.example", "/debug/pprof/heap?debug=1"); code != http.StatusForbidden {
		t.Errorf("/debug/pprof/heap for Host evil.example answered %d, want 403", code)
	}
}

// TestListenerRefusesForeignHosts: a DNS-rebinding page (evil.example made
// to resolve to 127.0.0.1) reaches the listener from the operator's
// browser with its own name in Host. The page, /status and pprof refuse
// it; /metrics, /healthz and /readyz answer any Host, for scrapers and
// probes that address the daemon by name.
func TestListenerRefusesForeignHosts(t *testing.T) {
	addr, _ := listenerDaemon(t, "  pprof: true\n  allowed_hosts: [sk.internal]")
	_, port, _ := net.SplitHostPort(addr)

	for _, path := range []string{"/", "/status.html", "/status", "/debug/pprof/", "/no-such-page"} {
		for _, host := range []string{"evil.example", "evil.example:" + port, "sk.internal.evil.example", "localhost.evil.example", "127.0.0.1.nip.io:" + port} {
			code, body := hostGet(t, addr, host, path)
			if code != http.StatusForbidden {
				t.Errorf("%s with Host %s answered %d, want 403", path, host, code)
			}
			if strings.Contains(body, "upstream") && !strings.Contains(body, "host not allowed") {
				t.Errorf("%s with Host %s leaked: %.200s", path, host, body)
			}
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, _ := hostGet(t, addr, "evil.example", path); code == http.StatusForbidden || code == http.StatusNotFound {
			t.Errorf("%s with Host evil.example answered %d; it answers any Host", path, code)
		}
	}
	for _, host := range []string{addr, "127.0.0.1", "localhost:" + port, "LOCALHOST", "[::1]:" + port, "sk.internal", "SK.Internal.:" + port} {
		if code, body := hostGet(t, addr, host, "/status"); code != 200 {
			t.Errorf("/status with Host %s answered %d: %.200s", host, code, body)
		}
	}
	// No Host at all (HTTP/1.0): refused too.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /status HTTP/1.0\r\n\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(line, " 403 ") {
		t.Errorf("/status without a Host answered %q, want 403", line)
	}
}

// TestListenerClosesAStalledRequest: a client that sends part of its
// headers and then nothing (slowloris) is cut off by the read deadline
// instead of holding the connection.
func TestListenerClosesAStalledRequest(t *testing.T) {
	addr, _ := listenerDaemon(t, "")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // the test's own bound, far above the server's
	b, err := io.ReadAll(conn)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the server kept a stalled request open for %v (read: %v)", took.Round(time.Millisecond), err)
	}
	t.Logf("FIGURE stalled request closed by the daemon after %v (answer %q)", took.Round(time.Millisecond), strings.SplitN(string(b), "\r\n", 2)[0])
	// The header read timeout is 5s: closed sooner, the test did not see
	// the deadline at work; much later, the deadline is not the one set.
	if took < 4500*time.Millisecond || took > 8*time.Second {
		t.Errorf("the stalled request was closed after %v, want about 5s (the header read timeout)", took.Round(time.Millisecond))
	}
}
