package reload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// reloadNginx starts a real nginx whose extra server routes by Host to
// the static upstreams of the included file: plain nginx, reload mode.
func reloadNginx(t *testing.T, file, extra string) (*testenv.Nginx, string) {
	t.Helper()
	port := testenv.FreePort(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{HTTP: fmt.Sprintf(`
    include %s;
    %s
    server {
        listen 127.0.0.1:%d;
        location / { proxy_pass http://$host; }
    }`, file, extra, port)})
	return ng, fmt.Sprintf("http://127.0.0.1:%d/", port)
}

func backend(t *testing.T, id string) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, id) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func stateOf(name string, addrs ...netip.AddrPort) upstream.State {
	u := upstream.Upstream{Name: name}
	for _, a := range addrs {
		u.Servers = append(u.Servers, upstream.Server{Addr: a, Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second})
	}
	u.Sort()
	return upstream.State{name: u}
}

func get(url, host string) string {
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return string(b)
}

func waitServes(t *testing.T, url, host, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := get(url, host)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx serves %q for %s, want %q", got, host, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nginxArgs(t *testing.T, ng *testenv.Nginx, extra ...string) []string {
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	return append([]string{bin, "-p", ng.Prefix(), "-c", filepath.Join(ng.Prefix(), "nginx.conf")}, extra...)
}

func TestReloadCoalescesBursts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	a, b := backend(t, "a"), backend(t, "b")
	first := stateOf("web", a)
	if err := store.New(file).Save(first); err != nil {
		t.Fatal(err)
	}
	ng, url := reloadNginx(t, file, "")
	waitServes(t, url, "web", "a")

	reg := prometheus.NewRegistry()
	s, err := New(Options{File: file, Test: nginxArgs(t, ng, "-t", "-q"), Command: nginxArgs(t, ng, "-s", "reload"),
		MinWait: 300 * time.Millisecond, MaxWait: time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	// 100 changes in 2 s, flapping between a and b, ending on b; each
	// written first, as the engine does.
	var last upstream.State
	for i := range 100 {
		last = stateOf("web", a)
		if i%2 == 1 {
			last = stateOf("web", b)
		}
		if err := store.New(file).Save(last); err != nil {
			t.Fatal(err)
		}
		s.Update(engine.Change{State: last})
		time.Sleep(20 * time.Millisecond)
	}
	waitServes(t, url, "web", "b")
	time.Sleep(500 * time.Millisecond)
	reloads := testutil.ToFloat64(s.m.reloads.WithLabelValues("ok"))
	t.Logf("100 changes in 2s gave %v reloads (min wait 300ms, max wait 1s)", reloads)
	if reloads < 1 || reloads > 4 {
		t.Fatalf("%v reloads for 100 changes in 2s; want 1 to 4 (one per max wait, plus the last)", reloads)
	}
}

func TestReloadRefusesAConfigThatFailsTheTest(t *testing.T) {
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	a, b := backend(t, "a"), backend(t, "b")
	good := stateOf("web", a)
	store.New(file).Save(good)
	// The main config already defines an upstream "dup": a file that
	// defines it too fails nginx -t with "duplicate upstream".
	ng, url := reloadNginx(t, file, "upstream dup { server 127.0.0.1:1; }")
	waitServes(t, url, "web", "a")
	goodBytes, _ := os.ReadFile(file)

	s, err := New(Options{File: file, Test: nginxArgs(t, ng, "-t", "-q"), Command: nginxArgs(t, ng, "-s", "reload")},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := stateOf("web", b)
	for k, v := range stateOf("dup", b) {
		bad[k] = v
	}
	store.New(file).Save(bad)
	err = s.Apply(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "duplicate upstream") || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("Apply = %v, want the nginx -t failure and a restore", err)
	}
	if now, _ := os.ReadFile(file); string(now) != string(goodBytes) {
		t.Fatalf("file not restored:\n%s", now)
	}
	// nginx keeps serving the old set, even after an unrelated reload.
	ng.Reload(t)
	waitServes(t, url, "web", "a")
}
