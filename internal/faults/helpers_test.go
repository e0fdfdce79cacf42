package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// daemonBin is the swallowkeeper binary that TestMain builds once.
var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "swallowkeeper-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	daemonBin = filepath.Join(dir, "swallowkeeper")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(gobin, "build", "-o", daemonBin, "github.com/swallowkeeper/swallowkeeper/cmd/swallowkeeper")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: go build ./cmd/swallowkeeper: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// figure reports a measured number in the test log and on stdout, in a
// line starting with "FIGURE " that CI logs keep.
func figure(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	fmt.Printf("FIGURE %s: %s\n", t.Name(), msg)
}

// envInt and envDuration read a knob for local runs, with a default.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 10s", name, v)
	}
	return d
}

// syncBuffer collects a log that the test reads while it is written.
type syncBuffer = testenv.LogBuffer

// daemonConfig is what a test sets in the daemon's YAML configuration;
// everything else keeps its default (docs/CONFIGURATION.md).
type daemonConfig struct {
	Consul    string        // consul.address
	File      string        // file
	Target    string        // targets[0].url
	Metrics   string        // metrics.listen
	Reconcile time.Duration // reconcile.interval
	Extra     string        // more YAML, appended
	// UpstreamsExtra is more YAML inside the upstreams section, each line
	// indented by two spaces.
	UpstreamsExtra string
}

func writeConfig(t testing.TB, c daemonConfig) string {
	t.Helper()
	if c.Reconcile == 0 {
		c.Reconcile = time.Second
	}
	text := fmt.Sprintf(`consul:
  address: %s
file: %s
targets:
  - url: %s
    timeout: 2s
reconcile:
  interval: %s
  reads: 3
upstreams:
  max_fails: 2
  fail_timeout: 3s
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
%smetrics:
  listen: "%s"
%s`, c.Consul, c.File, c.Target, c.Reconcile, c.UpstreamsExtra, c.Metrics, c.Extra)
	path := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// daemon is one `swallowkeeper run` process, in its own process group.
type daemon struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process is reaped
	log     *syncBuffer
	metrics string // metrics.listen, host:port
}

// startDaemon starts the daemon binary and waits until its metrics
// listener answers /healthz. It is killed (SIGKILL, by process group) when
// the test ends, should it still run.
func startDaemon(t testing.TB, cfg, metricsAddr string) *daemon {
	t.Helper()
	d := &daemon{exited: make(chan struct{}), log: &syncBuffer{}, metrics: metricsAddr}
	d.cmd = exec.Command(daemonBin, "run", "-config", cfg)
	// The configuration file rules: no CONSUL_* from the environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", daemonBin, err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.kill)
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + metricsAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("daemon exited at start (%v); log:\n%s", d.cmd.ProcessState, d.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not serving /healthz after 15s; log:\n%s", d.log.String())
		}
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// kill sends SIGKILL to the daemon's process group and waits until it is
// reaped.
func (d *daemon) kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.exited
}

// stop sends SIGTERM and expects a clean exit (code 0) within 10s.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if !d.cmd.ProcessState.Success() {
			t.Errorf("daemon exited with %v on SIGTERM; log:\n%s", d.cmd.ProcessState, d.log.String())
		}
	case <-time.After(10 * time.Second):
		d.kill()
		t.Errorf("daemon did not stop within 10s of SIGTERM; log:\n%s", d.log.String())
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// metricSamples is one scrape of /metrics: series ("name{labels}") → value.
type metricSamples map[string]float64

func (d *daemon) scrape(t testing.TB) metricSamples {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scrape daemon metrics: %v", err)
	}
	defer resp.Body.Close()
	m := metricSamples{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// sum adds every series of the metric name whose labels contain each of
// labels (e.g. `op="POST"`).
func (m metricSamples) sum(name string, labels ...string) float64 {
	var total float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// pushes counts the requests that change nginx: every POST and DELETE the
// daemon sent to a dyups target, whatever their outcome.
func (m metricSamples) pushes() float64 {
	return m.sum("swallowkeeper_dyups_requests_total", `op="POST"`) + m.sum("swallowkeeper_dyups_requests_total", `op="DELETE"`)
}

// statusDoc is the part of the daemon's /status answer the tests read.
type statusDoc struct {
	Holds []struct {
		Upstream, Guard, Reason string
	} `json:"holds"`
	Targets []struct {
		URL       string    `json:"url"`
		InSync    bool      `json:"in_sync"`
		LastSync  time.Time `json:"last_sync"`
		LastError string    `json:"last_error"`
		LastCheck time.Time `json:"last_check"`
	} `json:"targets"`
}

func (d *daemon) status(t testing.TB) statusDoc {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + d.metrics + "/status")
	if err != nil {
		t.Fatalf("daemon /status: %v", err)
	}
	defer resp.Body.Close()
	var doc statusDoc
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("daemon /status: %v", err)
	}
	return doc
}

// backend is a real HTTP server that answers its id.
type backend = testenv.Backend

func startBackend(t testing.TB, id string) *backend { return testenv.StartBackend(t, id) }

// route sends n requests for host through nginx, each on a fresh
// connection (so they spread over nginx workers), and returns the ids that
// answered and the number of failures.
func route(ng *testenv.Nginx, host string, n int) (map[string]int, int) {
	return testenv.Route(ng.ProxyURL(), host, n)
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// waitRoutes polls nginx until traffic for host reaches exactly want (and
// nothing fails), and returns how long that took.
func waitRoutes(t testing.TB, ng *testenv.Nginx, d *daemon, host string, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	start := time.Now()
	per := 4 * len(want)
	var got []string
	for {
		seen, failed := route(ng, host, per)
		got = keys(seen)
		if failed == 0 && slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("traffic for %s goes to %v (%d failed), want %v after %v; daemon log:\n%s", host, got, failed, want, timeout, d.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fresh is a client that opens a new connection per request, so that
// reads reach different nginx workers.
var fresh = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// detail reads nginx's GET /detail.
func detail(ng *testenv.Nginx) (string, error) {
	resp, err := fresh.Get(ng.APIURL() + "/detail")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// detailAddrs returns the server addresses nginx holds for upstream name,
// sorted; ok is false when nginx does not hold it.
func detailAddrs(ng *testenv.Nginx, name string) ([]string, bool, error) {
	body, err := detail(ng)
	if err != nil {
		return nil, false, err
	}
	d, err := dyups.ParseDetail(body)
	if err != nil {
		return nil, false, err
	}
	servers, ok := d.Lookup(name)
	var out []string
	for _, s := range servers {
		out = append(out, s.Addr)
	}
	slices.Sort(out)
	return out, ok, nil
}

// nginxMutations counts the upstream changes nginx itself logged (the Lua
// module logs every accepted POST and DELETE at info level).
func nginxMutations(ng *testenv.Nginx) int {
	n := 0
	for line := range strings.Lines(ng.ErrorLog()) {
		if strings.Contains(line, `swallowkeeper: upstream "`) &&
			(strings.Contains(line, `" set to `) || strings.Contains(line, `" deleted`)) {
			n++
		}
	}
	return n
}

// load sends a steady stream of GETs for one upstream through nginx from a
// few keep-alive clients, and records every request.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	recs []request
}

// request is one request of the load: when it was sent and answered, and
// why it failed ("" if it did not).
type request struct {
	start, end time.Time
	err        string
}

func startLoad(ng *testenv.Nginx, host string, perSecond, clients int) *load {
	l := &load{stop: make(chan struct{})}
	interval := time.Duration(clients) * time.Second / time.Duration(perSecond)
	for range clients {
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
				r := request{start: time.Now()}
				req, _ := http.NewRequest(http.MethodGet, ng.ProxyURL()+"/", nil)
				req.Host = host
				resp, err := c.Do(req)
				if err != nil {
					r.err = err.Error()
				} else {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "web-") {
						r.err = fmt.Sprintf("status %d %q", resp.StatusCode, body)
					}
				}
				r.end = time.Now()
				l.mu.Lock()
				l.recs = append(l.recs, r)
				l.mu.Unlock()
			}
		})
	}
	return l
}

// finish stops the load and returns every request it sent.
func (l *load) finish() []request {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.recs)
}

func (l *load) sent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// failures returns the failed requests among recs.
func failures(recs []request) []request {
	var out []request
	for _, r := range recs {
		if r.err != "" {
			out = append(out, r)
		}
	}
	return out
}

// window is a span of time in which a fault was in force.
type window struct {
	what       string
	start, end time.Time
}

// overlaps reports whether the request was in flight during w.
func (r request) overlaps(w window) bool { return !r.end.Before(w.start) && !r.start.After(w.end) }

// waitFor polls cond every 20ms until it holds or timeout passes, and
// returns how long it took and whether it held.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
