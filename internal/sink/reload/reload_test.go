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
	"sync"
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

// TestReloadCoalescesBurstsToOnePerMaxWait: while changes keep coming, the
// sink reloads at most once per max wait, plus once for the last change. The
// bound is derived from how long the burst really took (a loaded machine
// stretches it), and the count is read once the last change is acknowledged,
// after which the sink has nothing left to reload.
func TestReloadCoalescesBurstsToOnePerMaxWait(t *testing.T) {
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	a, b := backend(t, "a"), backend(t, "b")
	first := stateOf("web", a)
	if err := store.New(file).Save(first); err != nil {
		t.Fatal(err)
	}
	ng, url := reloadNginx(t, file, "")
	waitServes(t, url, "web", "a")

	const maxWait = time.Second
	reg := prometheus.NewRegistry()
	s, err := New(Options{File: file, Test: nginxArgs(t, ng, "-t", "-q"), Command: nginxArgs(t, ng, "-s", "reload"),
		MinWait: 300 * time.Millisecond, MaxWait: maxWait}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	// 100 changes, one every 20 ms, flapping between a and b, ending on b;
	// each written first, as the engine does. Only the last one is
	// acknowledged: the others are superseded.
	var last upstream.State
	lastDone := make(chan struct{})
	start := time.Now()
	for i := range 100 {
		last = stateOf("web", a)
		if i%2 == 1 {
			last = stateOf("web", b)
		}
		if err := store.New(file).Save(last); err != nil {
			t.Fatal(err)
		}
		c := engine.Change{State: last}
		if i == 99 {
			c.Done = func() { close(lastDone) }
		}
		s.Update(c)
		if i < 99 {
			time.Sleep(20 * time.Millisecond) // the pace of the burst, not a wait for an outcome
		}
	}
	burst := time.Since(start)
	select {
	case <-lastDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the last change was not acknowledged within 10s of the burst; status %+v", s.Status())
	}
	waitServes(t, url, "web", "b")
	reloads := testutil.ToFloat64(s.m.reloads.WithLabelValues("ok"))
	// One reload per max wait while the burst lasts (a reload's own time
	// only lengthens the gaps), and one for the last change.
	bound := float64(burst/maxWait) + 2
	t.Logf("FIGURE 100 changes in %v gave %v reloads (min wait 300ms, max wait %v, bound %v)", burst.Round(time.Millisecond), reloads, maxWait, bound)
	if reloads < 1 || reloads > bound {
		t.Fatalf("%v reloads for 100 changes in %v; want 1 to %v (one per max wait, plus the last)", reloads, burst, bound)
	}
}

// syncBuffer collects the sink's log across goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds; what names the awaited event.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool, status func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v; %s", what, timeout, status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadRetriesAFailingTestUntilItPasses: an operator breaks nginx.conf
// for a moment while the registry changes. The test fails, the sink keeps
// the old file and retries with backoff; a newer state replaces the one
// being retried; once nginx.conf is fixed the newest state is reloaded
// without any further change, and the status says what happened meanwhile.
func TestReloadRetriesAFailingTestUntilItPasses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	if err := store.New(file).Save(stateOf("web", a)); err != nil {
		t.Fatal(err)
	}
	ng, url := reloadNginx(t, file, "")
	waitServes(t, url, "web", "a")
	conf := filepath.Join(ng.Prefix(), "nginx.conf")
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	s, err := New(Options{File: file, Test: nginxArgs(t, ng, "-t", "-q"), Command: nginxArgs(t, ng, "-s", "reload"),
		MinWait: 20 * time.Millisecond, MaxWait: 100 * time.Millisecond,
		RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond},
		slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	count := func(outcome string) float64 { return testutil.ToFloat64(s.m.reloads.WithLabelValues(outcome)) }
	status := func() string { return fmt.Sprintf("status %+v; log:\n%s", s.Status(), logs.String()) }

	// The operator's mistake: nginx -t now fails whatever our file holds.
	if err := os.WriteFile(conf, append(append([]byte{}, orig...), "\nbroken_by_operator on;\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	toB := stateOf("web", b)
	if err := store.New(file).Save(toB); err != nil {
		t.Fatal(err)
	}
	ackB := make(chan struct{})
	s.Update(engine.Change{State: toB, Done: func() { close(ackB) }})

	// Status is recorded after each attempt (the counter during it).
	waitFor(t, "failed test and two retries", 20*time.Second, func() bool { return s.Status().Attempts >= 3 }, status)
	st := s.Status()
	if !st.Failing || st.InSync || st.Attempts < 3 || st.NextRetry.IsZero() || st.FailingSince.IsZero() ||
		!strings.Contains(st.LastError, "broken_by_operator") {
		t.Fatalf("while the test fails: %s", status())
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the retries are not logged:\n%s", logs.String())
	}
	if got := get(url, "web"); got != "a" {
		t.Errorf("nginx serves %q while the test fails, want the old set (a)", got)
	}
	if n := count("ok"); n != 0 {
		t.Fatalf("%v reloads with a broken nginx.conf", n)
	}

	// The registry changes again while nginx.conf is still broken: the
	// newest state is the one retried; b is superseded and never acked.
	toC := stateOf("web", c)
	if err := store.New(file).Save(toC); err != nil {
		t.Fatal(err)
	}
	ackC := make(chan struct{})
	s.Update(engine.Change{State: toC, Done: func() { close(ackC) }})
	failed := s.Status().Attempts
	waitFor(t, "retries of the newer state", 20*time.Second, func() bool { return s.Status().Attempts >= failed+2 }, status)
	if n := count("test_failed"); n < float64(failed+2) {
		t.Errorf("%v failed tests counted for %d failed attempts", n, failed+2)
	}

	// The operator fixes nginx.conf. Nothing else changes: the retry alone
	// must reload nginx with the newest state.
	if err := os.WriteFile(conf, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ackC:
	case <-time.After(20 * time.Second):
		t.Fatalf("nginx.conf fixed, but the newest state was not reloaded within 20s; %s", status())
	}
	waitServes(t, url, "web", "c")
	select {
	case <-ackB:
		t.Errorf("the superseded state b was acknowledged")
	default:
	}
	if n := count("ok"); n != 1 {
		t.Errorf("%v reloads after the fix, want 1", n)
	}
	st = s.Status()
	if st.Failing || !st.InSync || st.Attempts != 0 || !st.NextRetry.IsZero() {
		t.Errorf("after the fix: %s", status())
	}
	if !strings.Contains(logs.String(), "nginx reloaded") || !strings.Contains(logs.String(), "failed_attempts=") {
		t.Errorf("the recovery is not logged with the failed attempts:\n%s", logs.String())
	}
	now, _ := os.ReadFile(file)
	if string(now) != string(upstream.RenderFile(toC)) {
		t.Errorf("file after the fix:\n%s", now)
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
