package reload

import (
	"context"
	"errors"
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

// chanSource sends the engine whatever the test puts on it, as a registry
// source would.
type chanSource chan upstream.State

func (c chanSource) Run(ctx context.Context, out chan<- engine.Snapshot) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-c:
			select {
			case out <- engine.Snapshot{Upstreams: s, Services: len(s)}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// ackSpy passes changes on to the sink and closes the channel registered
// for a state once the sink acknowledges that state.
type ackSpy struct {
	*Sink
	mu    sync.Mutex
	watch map[string]*ackWatch // rendered state → its watch
}

type ackWatch struct {
	ch   chan struct{}
	once sync.Once
}

func (a *ackSpy) watchOf(st upstream.State) *ackWatch {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := string(upstream.RenderFile(st))
	if a.watch[key] == nil {
		a.watch[key] = &ackWatch{ch: make(chan struct{})}
	}
	return a.watch[key]
}

func (a *ackSpy) acked(st upstream.State) <-chan struct{} { return a.watchOf(st).ch }

func (a *ackSpy) Update(c engine.Change) {
	w := a.watchOf(c.State)
	done := c.Done
	c.Done = func(err error) {
		if err == nil {
			w.once.Do(func() { close(w.ch) })
		}
		if done != nil {
			done(err)
		}
	}
	a.Sink.Update(c)
}

// reloadMode runs reload mode as the daemon wires it: the engine with the
// given window, its store writing file and verifying it with test, and
// the sink. It returns the source to feed and the spy on the sink.
func reloadMode(t *testing.T, file string, test []string, s *Sink, w engine.Wait, log *slog.Logger) (chanSource, *ackSpy) {
	t.Helper()
	f := store.New(file)
	f.Verifier = store.Command{Argv: test}
	src := make(chanSource)
	spy := &ackSpy{Sink: s, watch: map[string]*ackWatch{}}
	e := engine.New([]engine.Source{src}, f, []engine.Sink{spy}, engine.Guards{MinServices: 1, Addresses: loopbackAllowed}, w, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
	})
	return src, spy
}

func waitAck(t *testing.T, ch <-chan struct{}, what string, status func() string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s was not acknowledged within 20s; %s", what, status())
	}
}

// TestReloadCoalescesBurstsToOnePerMaxWait: while changes keep coming,
// reload mode reloads at most once per max wait (the engine's window, which
// settles them before the file is written), plus once for the last change.
// The bound is derived from how long the burst really took (a loaded
// machine stretches it), and the count is read once the last change is
// acknowledged, after which nothing is left to reload; the reload of the
// persisted state at start is not part of the burst.
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
	s, err := New(Options{Command: nginxArgs(t, ng, "-s", "reload")}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	src, spy := reloadMode(t, file, nginxArgs(t, ng, "-t", "-q"), s, engine.Wait{Min: 300 * time.Millisecond, Max: maxWait},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	status := func() string { return fmt.Sprintf("status %+v", s.Status()) }
	waitAck(t, spy.acked(first), "the persisted state at start", status)
	before := testutil.ToFloat64(s.m.reloads.WithLabelValues("ok"))

	// 100 changes, one every 20 ms, flapping between a and b, ending on b.
	// Only the last one needs to be acknowledged: the others are settled
	// away or superseded.
	last := stateOf("web", b)
	lastDone := spy.acked(last)
	start := time.Now()
	for i := range 100 {
		next := stateOf("web", a)
		if i%2 == 1 {
			next = last
		}
		src <- next
		if i < 99 {
			time.Sleep(20 * time.Millisecond) // the pace of the burst, not a wait for an outcome
		}
	}
	burst := time.Since(start)
	select {
	case <-lastDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("the last change was not acknowledged within 10s of the burst; %s", status())
	}
	waitServes(t, url, "web", "b")
	reloads := testutil.ToFloat64(s.m.reloads.WithLabelValues("ok")) - before
	// One reload per max wait while the burst lasts (a reload's own time
	// only lengthens the gaps), and one for the last change.
	bound := float64(burst/maxWait) + 2
	t.Logf("FIGURE 100 changes in %v gave %v reloads (min wait 300ms, max wait %v, bound %v)", burst.Round(time.Millisecond), reloads, maxWait, bound)
	if reloads < 1 || reloads > bound {
		t.Fatalf("%v reloads for 100 changes in %v; want 1 to %v (one per max wait, plus the last)", reloads, burst, bound)
	}
}

// syncBuffer collects the sink's log across goroutines.
type syncBuffer = testenv.LogBuffer

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
// for a moment while the registry changes. The test (run by the store as
// it writes the file) fails, the previous file stays and nothing is
// reloaded; the engine retries with backoff, and the sink's status says
// so; a newer state replaces the one being retried; once nginx.conf is
// fixed the newest state is reloaded without any further change, and the
// status says what happened meanwhile. Reloads are counted from after the
// reload of the persisted state at start.
func TestReloadRetriesAFailingTestUntilItPasses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	first := stateOf("web", a)
	if err := store.New(file).Save(first); err != nil {
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
	log := slog.New(slog.NewTextHandler(logs, nil))
	s, err := New(Options{Command: nginxArgs(t, ng, "-s", "reload"), RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond},
		log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	src, spy := reloadMode(t, file, nginxArgs(t, ng, "-t", "-q"), s, engine.Wait{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}, log)
	count := func(outcome string) float64 { return testutil.ToFloat64(s.m.reloads.WithLabelValues(outcome)) }
	status := func() string { return fmt.Sprintf("status %+v; log:\n%s", s.Status(), logs.String()) }
	waitAck(t, spy.acked(first), "the persisted state at start", status)
	okBefore := count("ok")

	// The operator's mistake: nginx -t now fails whatever our file holds.
	if err := os.WriteFile(conf, append(append([]byte{}, orig...), "\nbroken_by_operator on;\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	toB := stateOf("web", b)
	ackB := spy.acked(toB)
	src <- toB

	// Status is recorded after each attempt (the counter during it).
	waitFor(t, "failed test and two retries", 20*time.Second, func() bool { return s.Status().Attempts >= 3 }, status)
	st := s.Status()
	if !st.Failing || st.InSync || st.Attempts < 3 || st.NextRetry.IsZero() || st.FailingSince.IsZero() ||
		!strings.Contains(st.LastError, "broken_by_operator") {
		t.Fatalf("while the test fails: %s", status())
	}
	if ss := s.SinkStatus(); ss.Ready || !strings.Contains(ss.NotReady, "reload mode") || !strings.Contains(ss.NotReady, "broken_by_operator") ||
		!strings.Contains(ss.LastError, "nginx not reloaded for") {
		t.Fatalf("sink status while the test fails: %+v", ss)
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the retries are not logged:\n%s", logs.String())
	}
	if got := get(url, "web"); got != "a" {
		t.Errorf("nginx serves %q while the test fails, want the old set (a)", got)
	}
	if n := count("ok") - okBefore; n != 0 {
		t.Fatalf("%v reloads with a broken nginx.conf", n)
	}
	if now, _ := os.ReadFile(file); string(now) != string(upstream.RenderFile(first)) {
		t.Fatalf("file while the test fails:\n%s\nwant the last one that passed", now)
	}

	// The registry changes again while nginx.conf is still broken: the
	// newest state is the one retried; b is superseded and never acked.
	toC := stateOf("web", c)
	ackC := spy.acked(toC)
	src <- toC
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
	if n := count("ok") - okBefore; n != 1 {
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

// TestReloadRetriesAFailedReloadCommand: the reload command itself fails
// (nginx not running, say): the sink retries it with backoff until it
// succeeds, with no new state, and says so meanwhile.
func TestReloadRetriesAFailedReloadCommand(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "nginx-up")
	logs := &syncBuffer{}
	s, err := New(Options{Command: []string{"sh", "-c", "test -e " + flag + " || { echo 'nginx: [error] open() nginx.pid failed'; exit 1; }"},
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, ctx)
	status := func() string { return fmt.Sprintf("status %+v; log:\n%s", s.Status(), logs.String()) }
	acked := make(chan struct{})
	var fails sync.Map
	s.Update(engine.Change{State: stateOf("web", netip.MustParseAddrPort("127.0.0.1:1")), Done: func(err error) {
		if err != nil {
			fails.Store(err.Error(), true)
			return
		}
		close(acked)
	}})
	waitFor(t, "a failed reload and two retries", 10*time.Second, func() bool { return s.Status().Attempts >= 3 }, status)
	if st := s.Status(); !st.Failing || !strings.Contains(st.LastError, "nginx.pid failed") || st.NextRetry.IsZero() {
		t.Fatalf("while the reload fails: %s", status())
	}
	if n := testutil.ToFloat64(s.m.reloads.WithLabelValues("reload_failed")); n < 3 {
		t.Errorf("%v failed reloads counted", n)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitAck(t, acked, "the state", status)
	if st := s.Status(); st.Failing || !st.InSync || st.Attempts != 0 {
		t.Errorf("after the reload went through: %s", status())
	}
	n := 0
	fails.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Errorf("the failed attempts were not reported to the change")
	}
}

// TestReloadRefusesAConfigThatFailsTheTest: reload mode's test runs as the
// store's verify command; a file it refuses is replaced by the one that
// passed, so nginx keeps serving the old set, even after a reload.
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

	f := store.New(file)
	f.Verifier = store.Command{Argv: nginxArgs(t, ng, "-t", "-q")}
	bad := stateOf("web", b)
	for k, v := range stateOf("dup", b) {
		bad[k] = v
	}
	err := f.Save(bad)
	if err == nil || !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), "duplicate upstream") || !strings.Contains(err.Error(), "put back") {
		t.Fatalf("Save = %v, want the nginx -t failure and a restore", err)
	}
	if now, _ := os.ReadFile(file); string(now) != string(goodBytes) {
		t.Fatalf("file not restored:\n%s", now)
	}
	// nginx keeps serving the old set, even after an unrelated reload.
	ng.Reload(t)
	waitServes(t, url, "web", "a")
}

// TestReloadFailureFromPersistEndsWithIt: a refused test, told by the
// engine, shows as the sink's failure (not ready, counted as test_failed)
// and ends when the engine says nothing is left to persist; a failing
// reload command is the sink's own and is not ended that way.
func TestReloadFailureFromPersistEndsWithIt(t *testing.T) {
	s, err := New(Options{Command: []string{"false"}, RetryMin: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	refusal := fmt.Errorf("store: f: %w: nginx: [emerg] broken_by_operator", engine.ErrVerifyFailed)
	s.Persisted(refusal, time.Now().Add(time.Second))
	if st := s.SinkStatus(); st.Ready || !strings.Contains(st.NotReady, "broken_by_operator") || s.Status().NextRetry.IsZero() {
		t.Fatalf("after a refused test: %+v", st)
	}
	if n := testutil.ToFloat64(s.m.reloads.WithLabelValues("test_failed")); n != 1 {
		t.Fatalf("%v failed tests counted", n)
	}
	s.Persisted(nil, time.Time{})
	if st := s.Status(); st.Failing || st.Attempts != 0 || !s.SinkStatus().Ready {
		t.Fatalf("after the engine had nothing left to persist: %+v", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, ctx)
	failed := make(chan error, 1)
	s.Update(engine.Change{State: upstream.State{}, Done: func(err error) { failed <- err }})
	if err := <-failed; err == nil {
		t.Fatal("the reload command `false` was reported as a success")
	}
	s.Persisted(nil, time.Time{})
	if st := s.Status(); !st.Failing || s.SinkStatus().Ready {
		t.Fatalf("a failing reload command was cleared by the engine's persist: %+v", st)
	}
}

// loopbackAllowed is the address policy of these tests: their backends
// listen on loopback, which the policy refuses by default.
var loopbackAllowed = upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
