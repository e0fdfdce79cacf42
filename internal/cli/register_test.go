package cli_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/swallowkeeper/swallowkeeper/internal/cli"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestMain lets the test binary play two more roles when re-executed, so
// that wrappers and apps are real processes with their own signals:
// SK_TEST_ROLE=swallowkeeper runs the CLI, SK_TEST_ROLE=app a tiny web app
// that shuts down gracefully on SIGTERM.
func TestMain(m *testing.M) {
	switch os.Getenv("SK_TEST_ROLE") {
	case "swallowkeeper":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
		stop()
		os.Exit(code)
	case "app":
		os.Exit(testApp(os.Getenv("SK_APP_ID"), os.Getenv("SK_APP_PORT")))
	}
	os.Exit(m.Run())
}

func testApp(id, port string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		return 1
	}
	mux := http.NewServeMux()
	sick := os.Getenv("SK_APP_SICK_FILE") // while this file exists, /health fails
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := os.Stat(sick); sick != "" && err == nil {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	delay, _ := time.ParseDuration(os.Getenv("SK_APP_DELAY")) // how long each request takes
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // POSTs carry a body
		time.Sleep(delay)
		io.WriteString(w, id)
	})
	srv := &http.Server{Handler: mux}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		if os.Getenv("SK_APP_ABRUPT") == "1" {
			os.Exit(0) // an app that drops what it is doing on SIGTERM
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // finish in-flight requests, then exit
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return 1
	}
	return 0
}

// wrapper is one `swallowkeeper register -- app` process.
type wrapper struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process is gone; err is then set
	err    error
	log    *syncBuffer
}

func startWrapper(t *testing.T, consul, drainURL, id string, port int) *wrapper {
	t.Helper()
	// The test app finishes its requests in flight on SIGTERM, as the
	// README asks apps to, so it needs no grace after the drain;
	// TestDrainGraceKeepsInFlightRequests covers apps that do not.
	return startWrapperWith(t, []string{"-consul-addr", consul, "-drain-grace", "0s"}, drainURL, id, port)
}

// startWrapperWith starts a wrapper with registry flags of its own.
func startWrapperWith(t *testing.T, registryArgs []string, drainURL, id string, port int) *wrapper {
	t.Helper()
	p := strconv.Itoa(port)
	args := []string{"-address", "127.0.0.1", "-check", "http://127.0.0.1:" + p + "/health", "-check-interval", "1s",
		"-drain-url", drainURL, "-drain", "5s"}
	return startWrapperArgs(t, append(args, registryArgs...), nil, id, port)
}

// startWrapperArgs starts `register -service web -id <id> -port <port>`
// with more flags, wrapping the test app (with appEnv added to its
// environment).
func startWrapperArgs(t *testing.T, flags, appEnv []string, id string, port int) *wrapper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := strconv.Itoa(port)
	args := append([]string{"register", "-service", "web", "-id", id, "-port", p}, flags...)
	args = append(args, "--", "/usr/bin/env", "SK_TEST_ROLE=app", "SK_APP_ID="+id, "SK_APP_PORT="+p,
		"SK_APP_SICK_FILE="+filepath.Join(os.TempDir(), fmt.Sprintf("sk-sick-%d", port)))
	args = append(append(args, appEnv...), self)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "SK_TEST_ROLE=swallowkeeper")
	w := &wrapper{cmd: cmd, exited: make(chan struct{}), log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = w.log, w.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-w.exited:
		case <-time.After(5 * time.Second):
		}
	})
	return w
}

// stop sends SIGTERM to the wrapper only (as systemd or supervisor would)
// and waits for it; the wrapper must exit with the app's code, 0.
func (w *wrapper) stop(t *testing.T) {
	t.Helper()
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.exited:
		if w.err != nil {
			t.Fatalf("wrapper exited with %v; its log:\n%s", w.err, w.log.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("wrapper did not stop; its log:\n%s", w.log.String())
	}
}

// appPID finds the wrapper's child (the app), which any of the wrapper's
// threads may have forked.
func (w *wrapper) appPID(t *testing.T) int {
	t.Helper()
	pid := w.cmd.Process.Pid
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		if fields := strings.Fields(string(b)); len(fields) > 0 {
			child, _ := strconv.Atoi(fields[0])
			return child
		}
	}
	t.Fatalf("no child of wrapper %d", pid)
	return 0
}

func listed(t *testing.T, ng *testenv.Nginx, port int) bool {
	return strings.Contains(apiGet(t, ng, "/upstream/web"), "server 127.0.0.1:"+strconv.Itoa(port)+"\n")
}

func waitListed(t *testing.T, ng *testenv.Nginx, port int, want bool, w *wrapper) time.Duration {
	t.Helper()
	start := time.Now()
	for listed(t, ng, port) != want {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("port %d listed=%v after 15s; wrapper log:\n%s", port, !want, w.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// load sends requests through nginx from several keep-alive clients until
// stopped, and counts every answer that is not a 200 from an app. Half the
// clients POST a body: nginx does not retry a POST on another server, so a
// request sent to an instance that is going away fails visibly.
type load struct {
	sent, failed atomic.Int64
	firstErr     atomic.Value
	stop         chan struct{}
	wg           sync.WaitGroup
}

func startLoad(ng *testenv.Nginx, clients int, interval time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	for n := range clients {
		method := "GET"
		if n%2 == 1 {
			method = "POST"
		}
		l.wg.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader(`{"order": 42, "items": ["a", "b"]}`)
				}
				req, _ := http.NewRequest(method, ng.ProxyURL()+"/", body)
				req.Host = "web"
				l.sent.Add(1)
				resp, err := c.Do(req)
				if err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(answer), "web-") {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: status %d %q", method, resp.StatusCode, answer))
				}
			}
		})
	}
	return l
}

func (l *load) finish() { close(l.stop); l.wg.Wait() }

// waitSent waits until n more requests have been sent.
func (l *load) waitSent(t *testing.T, n int64) {
	t.Helper()
	want, start := l.sent.Load()+n, time.Now()
	for l.sent.Load() < want {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the load sent %d of %d requests in 15s", l.sent.Load()-want+n, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRollingRestartsLoseNoRequest: 3 instances, each wrapped by
// `swallowkeeper register`, restarted one after the other 20 times under
// steady load through nginx: not one request may fail.
func TestRollingRestartsLoseNoRequest(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	d := startDaemon(t, "-config", writeConfig(t, c, ng, t.TempDir()+"/upstreams.conf"))
	ports := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	wrappers := make([]*wrapper, 3)
	for i, p := range ports {
		wrappers[i] = startWrapper(t, c.HTTPAddr(), ng.APIURL(), fmt.Sprintf("web-%d", i+1), p)
	}
	for i, p := range ports {
		waitListed(t, ng, p, true, wrappers[i])
	}
	waitRoutes(t, ng, d, "web", "web-1", "web-2", "web-3")

	cycles := 20
	l := startLoad(ng, 8, 10*time.Millisecond) // ~800 requests/s offered
	start := time.Now()
	var slowestJoin time.Duration
	for cycle := range cycles {
		for i, p := range ports {
			wrappers[i].stop(t)
			if listed(t, ng, p) {
				t.Fatalf("cycle %d: web-%d stopped while nginx still listed it", cycle, i+1)
			}
			wrappers[i] = startWrapper(t, c.HTTPAddr(), ng.APIURL(), fmt.Sprintf("web-%d", i+1), p)
			slowestJoin = max(slowestJoin, waitListed(t, ng, p, true, wrappers[i]))
		}
	}
	l.finish()
	elapsed := time.Since(start)
	t.Logf("%d rolling restarts of 3 wrapped instances in %v: %d requests through nginx, %d failed; slowest rejoin %v",
		cycles, elapsed.Round(time.Millisecond), l.sent.Load(), l.failed.Load(), slowestJoin.Round(time.Millisecond))
	if l.failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", l.failed.Load(), l.sent.Load(), l.firstErr.Load())
	}
	if l.sent.Load() < 1000 {
		t.Fatalf("only %d requests sent: the load did not run", l.sent.Load())
	}
}

// TestAppDeathDeregistersAtOnce: kill -9 the app under its wrapper; the
// wrapper deregisters at once and exits with the app's status, and the
// instance leaves nginx well within the check interval (1s).
func TestAppDeathDeregistersAtOnce(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	startDaemon(t, "-config", writeConfig(t, c, ng, t.TempDir()+"/upstreams.conf"))
	p1, p2 := testenv.FreePort(t), testenv.FreePort(t)
	w1 := startWrapper(t, c.HTTPAddr(), ng.APIURL(), "web-1", p1)
	w2 := startWrapper(t, c.HTTPAddr(), ng.APIURL(), "web-2", p2)
	waitListed(t, ng, p1, true, w1)
	waitListed(t, ng, p2, true, w2)

	syscall.Kill(w1.appPID(t), syscall.SIGKILL)
	took := waitListed(t, ng, p1, false, w1)
	t.Logf("app killed with SIGKILL: instance left nginx after %v (check interval 1s)", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("instance left nginx only after %v", took)
	}
	select {
	case <-w1.exited:
		ee, ok := w1.err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 128+int(syscall.SIGKILL) {
			t.Errorf("wrapper exit %v, want 137 (the app's death by SIGKILL)", w1.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wrapper did not exit after its app died")
	}
	if !strings.Contains(w1.log.String(), "app exited; deregistering") {
		t.Errorf("wrapper log:\n%s", w1.log.String())
	}
}

// TestRegisterWithEtcdAndZooKeeper: the wrapper registers in etcd (a key
// under a lease) and in ZooKeeper (a Curator ephemeral znode) as well; the
// daemon following that registry routes to the app; SIGTERM leaves nginx
// before the app stops; a wrapper killed with SIGKILL leaves when its lease
// or session ends; a killed app leaves at once.
func TestRegisterWithEtcdAndZooKeeper(t *testing.T) {
	for _, reg := range []string{"etcd", "zookeeper"} {
		t.Run(reg, func(t *testing.T) {
			ng := testenv.StartNginx(t, testenv.NginxOptions{})
			var section string
			var args []string
			switch reg {
			case "etcd":
				e := testenv.StartEtcd(t)
				// No layout on either side: the wrapper's default is the
				// daemon's (upsync, issue 16).
				section = fmt.Sprintf("source: etcd\netcd:\n  endpoints: [%s]\n", e.Addr())
				args = []string{"-registry", "etcd", "-etcd-endpoints", e.Addr(), "-ttl", "3s"}
			case "zookeeper":
				z := testenv.StartZooKeeper(t)
				section = fmt.Sprintf("source: zookeeper\nzookeeper:\n  servers: [%s]\n", z.Addr())
				args = []string{"-registry", "zookeeper", "-zookeeper-servers", z.Addr(), "-ttl", "4s"}
			}
			startDaemon(t, "-config", writeSourceConfig(t, section, ng, filepath.Join(t.TempDir(), "upstreams.conf")))
			p1, p2, p3, p4 := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
			w1 := startWrapperWith(t, args, ng.APIURL(), "web-1", p1)
			w2 := startWrapperWith(t, args, ng.APIURL(), "web-2", p2)
			w3 := startWrapperWith(t, args, ng.APIURL(), "web-3", p3)
			w4 := startWrapperWith(t, args, ng.APIURL(), "web-4", p4) // stays: the last server is never removed
			for i, p := range []int{p1, p2, p3, p4} {
				waitListed(t, ng, p, true, []*wrapper{w1, w2, w3, w4}[i])
			}

			w3.cmd.Process.Signal(syscall.SIGKILL) // the wrapper alone: its lease/session must end
			took := waitListed(t, ng, p3, false, w3)
			t.Logf("%s: wrapper killed with SIGKILL: instance left nginx after %v (ttl %s)", reg, took.Round(time.Millisecond), args[len(args)-1])

			w1.stop(t) // exit 0: the app's code after the drain
			if listed(t, ng, p1) {
				t.Fatalf("web-1 still in nginx after its wrapper stopped; log:\n%s", w1.log.String())
			}
			if !strings.Contains(w1.log.String(), "drained: nginx no longer routes to the instance") {
				t.Errorf("web-1 stopped without a confirmed drain; log:\n%s", w1.log.String())
			}

			// Neither registry checks health: the wrapper does, every
			// -check-interval (1s), and takes a failing app out.
			sick := filepath.Join(os.TempDir(), fmt.Sprintf("sk-sick-%d", p2))
			if err := os.WriteFile(sick, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(sick) })
			took = waitListed(t, ng, p2, false, w2)
			t.Logf("%s: app failing its check: instance left nginx after %v", reg, took.Round(time.Millisecond))
			os.Remove(sick)
			took = waitListed(t, ng, p2, true, w2)
			t.Logf("%s: app passing again: instance back in nginx after %v", reg, took.Round(time.Millisecond))

			syscall.Kill(w2.appPID(t), syscall.SIGKILL)
			took = waitListed(t, ng, p2, false, w2)
			t.Logf("%s: app killed: instance left nginx after %v", reg, took.Round(time.Millisecond))
		})
	}
}

// TestSIGHUPReloadsTheConfiguration runs the daemon as its own process:
// SIGHUP with a changed configuration applies it (a new server weight
// reaches nginx); SIGHUP with a broken one keeps the running configuration
// and says why; /readyz is 503 until a target holds the state.
func TestSIGHUPReloadsTheConfiguration(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	good, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	metricsAddr := testenv.Addr(testenv.FreePort(t))

	ng.Stop(t) // not ready while no nginx holds the state
	self, _ := os.Executable()
	cmd := exec.Command(self, "run", "-config", cfg, "-metrics-listen", metricsAddr)
	cmd.Env = append(os.Environ(), "SK_TEST_ROLE=swallowkeeper")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	scrape(t, metricsAddr) // waits for the listener
	if code := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d with nginx down, want 503", code)
	}
	ng.Start(t)
	d := &daemon{log: logs}
	waitRoutes(t, ng, d, "web", "web-1")
	if code := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d with nginx in sync, want 200", code)
	}

	// A good change: every server's weight becomes 7.
	changed := strings.Replace(string(good), "upstreams:\n", "upstreams:\n  weight: 7\n", 1)
	if err := os.WriteFile(cfg, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(apiGet(t, ng, "/detail"), "weight=7") {
		if time.Now().After(deadline) {
			t.Fatalf("weight 7 never reached nginx after SIGHUP; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A broken change: refused, named, and the daemon goes on.
	if err := os.WriteFile(cfg, []byte(changed+"upstreams:\n  weight: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "configuration reload failed; keeping the running configuration")
	if !strings.Contains(logs.String(), cfg) {
		t.Errorf("the reload error does not name the file; log:\n%s", logs.String())
	}
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	if !strings.Contains(apiGet(t, ng, "/detail"), "weight=7") {
		t.Errorf("the running configuration was not kept:\n%s", apiGet(t, ng, "/detail"))
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("daemon exited with %v after SIGTERM; log:\n%s", waitErr, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon did not stop after SIGTERM")
	}
}

// TestRegisterWithoutAddressLetsConsulFillItIn: without -address the
// wrapper registers no address, so Consul hands out the node's (the
// agent's advertise address) to the daemon instead of the wrapper's guess;
// nginx routes to it, and the wrapper drains on that address.
func TestRegisterWithoutAddressLetsConsulFillItIn(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	startDaemon(t, "-config", writeConfig(t, c, ng, t.TempDir()+"/upstreams.conf"))
	p, p2 := testenv.FreePort(t), testenv.FreePort(t)
	flags := []string{"-consul-addr", c.HTTPAddr(), "-drain-url", ng.APIURL(), "-drain", "5s"}
	w := startWrapperArgs(t, flags, nil, "web-1", p)
	// web-2 stays: the last server is never removed. The test agent
	// advertises 127.0.0.1, which the test config allows.
	w2 := startWrapperArgs(t, flags, nil, "web-2", p2)
	waitListed(t, ng, p, true, w)
	waitListed(t, ng, p2, true, w2)
	svc, _, err := c.Client.Agent().Service("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Address != "" {
		t.Errorf("registered with address %q, want none", svc.Address)
	}
	w.stop(t)
	if listed(t, ng, p) {
		t.Fatalf("still in nginx after the wrapper stopped; log:\n%s", w.log.String())
	}
	for _, want := range []string{"the registry filled in the instance's address", "drained: nginx no longer routes to the instance"} {
		if !strings.Contains(w.log.String(), want) {
			t.Errorf("wrapper log lacks %q:\n%s", want, w.log.String())
		}
	}
}

// TestRegisterWantsAnAddressWhenTheRouteIsLoopback: etcd and ZooKeeper
// have no agent to fill the address in, and next to a local registry the
// route-based guess is 127.0.0.1, which nginx on another host would take
// for its own: the wrapper refuses to guess.
func TestRegisterWantsAnAddressWhenTheRouteIsLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"-registry", "etcd", "-etcd-endpoints", "127.0.0.1:2379"},
		{"-registry", "zookeeper", "-zookeeper-servers", "127.0.0.1:2181"},
	} {
		var stdout, stderr strings.Builder
		code := cli.Run(context.Background(), append(append([]string{"register", "-service", "web", "-port", "8080"}, args...), "--", "true"),
			&stdout, &stderr, func(string) string { return "" })
		if code != 2 || !strings.Contains(stderr.String(), "-address is required") || !strings.Contains(stderr.String(), "loopback") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and -address is required", args, code, stderr.String())
		}
	}
}

// TestRegisterRefusesATakenPort: an orphaned app still serves on the
// port (and answers the check) under the registration web-1. A new wrapper
// for web-1 on that port exits 1 before starting its app, and the
// registration is still there afterwards.
func TestRegisterRefusesATakenPort(t *testing.T) {
	c := testenv.StartConsul(t)
	orphan := startBackend(t, "orphan")
	c.Register(t, "web", "web-1", "127.0.0.1", orphan.Port, nil, nil)
	w := startWrapperArgs(t, []string{"-consul-addr", c.HTTPAddr(), "-address", "127.0.0.1", "-check", fmt.Sprintf("http://127.0.0.1:%d/", orphan.Port)}, nil, "web-1", orphan.Port)
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the wrapper did not refuse; log:\n%s", w.log.String())
	}
	if ee, ok := w.err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("wrapper exit %v, want 1", w.err)
	}
	if !strings.Contains(w.log.String(), "refusing to start: something already listens on the app's port") {
		t.Errorf("wrapper log:\n%s", w.log.String())
	}
	if strings.Contains(w.log.String(), "app started") {
		t.Errorf("the app was started; log:\n%s", w.log.String())
	}
	if svc, _, err := c.Client.Agent().Service("web-1", nil); err != nil || svc.Port != orphan.Port {
		t.Errorf("the existing registration was touched: %+v, %v", svc, err)
	}
}

// TestRegisterZooKeeperAuth: credentials from $SWALLOWKEEPER_ZOOKEEPER_AUTH
// or -zookeeper-auth-file protect the znode (digest ACL, world read) and
// are never printed, not even in the error for a malformed file.
func TestRegisterZooKeeperAuth(t *testing.T) {
	z := testenv.StartZooKeeper(t)
	file := filepath.Join(t.TempDir(), "zk-auth")
	if err := os.WriteFile(file, []byte("digest:sk:s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.FreePort(t)
	w := startWrapperArgs(t, []string{"-registry", "zookeeper", "-zookeeper-servers", z.Addr(), "-zookeeper-auth-file", file,
		"-address", "127.0.0.1", "-ttl", "4s", "-drain", "0s"}, nil, "web-1", p)
	anon := z.Connect(t, 4*time.Second)
	path := "/services/web/web-1"
	start := time.Now()
	for {
		if ok, _, _ := anon.Exists(path); ok {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("%s never created; log:\n%s", path, w.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	acl, _, err := anon.GetACL(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(acl) != 2 || acl[0].Scheme != "digest" || !strings.HasPrefix(acl[0].ID, "sk:") || acl[1].Scheme != "world" || acl[1].Perms != zk.PermRead {
		t.Errorf("ACL %+v, want digest sk with all permissions and world read", acl)
	}
	if err := anon.Delete(path, -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("an unauthenticated client deleted the instance: %v", err)
	}
	w.stop(t)
	if strings.Contains(w.log.String(), "s3cret") {
		t.Errorf("the wrapper printed the secret:\n%s", w.log.String())
	}

	if err := os.WriteFile(file, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	code := cli.Run(context.Background(), []string{"register", "-service", "web", "-port", "8080", "-address", "10.0.0.1",
		"-registry", "zookeeper", "-zookeeper-servers", z.Addr(), "-zookeeper-auth-file", file, "--", "true"},
		&stdout, &stderr, func(string) string { return "" })
	if code != 2 || !strings.Contains(stderr.String(), "zookeeper auth") || strings.Contains(stderr.String(), "s3cret") {
		t.Errorf("malformed auth file: exit %d, stderr %q; want 2, an error without the secret", code, stderr.String())
	}
}

// TestDrainGraceKeepsInFlightRequests: apps that exit at once on SIGTERM
// and take 200 ms per request, restarted under POST load with -drain-url.
// With the default -drain-grace (1s) no request fails; without a grace
// the requests nginx sent just before the instance left are cut.
func TestDrainGraceKeepsInFlightRequests(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	d := startDaemon(t, "-config", writeConfig(t, c, ng, t.TempDir()+"/upstreams.conf"))
	appEnv := []string{"SK_APP_ABRUPT=1", "SK_APP_DELAY=200ms"}
	run := func(grace string) (sent, failed int64, first any) {
		ports := []int{testenv.FreePort(t), testenv.FreePort(t)}
		start := func(i int) *wrapper {
			p := strconv.Itoa(ports[i])
			flags := []string{"-consul-addr", c.HTTPAddr(), "-address", "127.0.0.1", "-check", "http://127.0.0.1:" + p + "/health",
				"-check-interval", "1s", "-drain-url", ng.APIURL(), "-drain", "5s"}
			if grace != "" {
				flags = append(flags, "-drain-grace", grace)
			}
			return startWrapperArgs(t, flags, appEnv, fmt.Sprintf("web-%d", i+1), ports[i])
		}
		ws := []*wrapper{start(0), start(1)}
		for i, p := range ports {
			waitListed(t, ng, p, true, ws[i])
		}
		waitRoutes(t, ng, d, "web", "web-1", "web-2")
		l := startLoad(ng, 8, 10*time.Millisecond)
		for range 3 {
			l.waitSent(t, 40) // both instances busy: requests in flight on web-1
			ws[0].stop(t)
			ws[0] = start(0)
			waitListed(t, ng, ports[0], true, ws[0])
		}
		l.finish()
		for _, w := range ws {
			w.stop(t)
		}
		return l.sent.Load(), l.failed.Load(), l.firstErr.Load()
	}
	sent, failed, first := run("0s")
	t.Logf("-drain-grace 0s: %d of %d requests failed (first: %v)", failed, sent, first)
	if failed == 0 {
		t.Errorf("without a grace no request failed: the test does not show what the grace is for")
	}
	sent, failed, first = run("")
	t.Logf("default -drain-grace: %d of %d requests failed", failed, sent)
	if failed > 0 {
		t.Errorf("%d of %d requests failed with the default grace; first: %v", failed, sent, first)
	}
}
