package wrapper

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name         string
		o            Options
		upstream, id string
		err          string
	}{
		{name: "the upstream is the service's by default",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, ID: "w1"}, upstream: "web", id: "w1"},
		{name: "a gray=<x> tag puts the instance in <service>_<x>",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"gray=b"}}, upstream: "web_b"},
		{name: "the configured canary tag is used, not gray",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"canary=b"}, CanaryTag: "canary"}, upstream: "web_b"},
		{name: "with another canary tag, gray is an ordinary tag",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"gray=b"}, CanaryTag: "canary"}, upstream: "web"},
		{name: "an explicit upstream wins",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Upstream: "shop"}, upstream: "shop"},
		{name: "no address is fine: the registry fills it in",
			o: Options{Service: "web", Port: 8080}, upstream: "web"},
		{name: "loopback is a valid address (the daemon's policy decides)",
			o: Options{Service: "web", Address: "127.0.0.1", Port: 8080}, upstream: "web"},
		{name: "an explicit upstream the daemon would refuse is refused",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Upstream: "../list"}, err: "-upstream: upstream name"},
		{name: "a '/' in the id would nest the registry key: refused",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, ID: "a/b"}, err: `-id "a/b": no '/'`},
		{name: "a '/' in the service would nest the registry key: refused",
			o: Options{Service: "we/b", Address: "10.0.0.1", Port: 8080, ID: "w1"}, err: `-service "we/b": no '/'`},
		{name: "a host name is refused",
			o: Options{Service: "web", Address: "web.local", Port: 8080}, err: "is not an IP literal"},
		{name: "a port out of range is refused",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 70000}, err: "-port"},
		{name: "a canary tag with = is refused",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, CanaryTag: "a=b"}, err: "-canary-tag"},
		{name: "a check of another scheme is refused",
			o: Options{Service: "web", Address: "10.0.0.1", Port: 8080, Check: "udp://x:1"}, err: "-check"},
		{name: "the service is required",
			o: Options{Address: "10.0.0.1", Port: 8080}, err: "-service is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.o.Validate()
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.o.Upstream != c.upstream {
				t.Errorf("upstream %q, want %q", c.o.Upstream, c.upstream)
			}
			if c.id != "" && c.o.ID != c.id {
				t.Errorf("id %q, want %q", c.o.ID, c.id)
			}
			if c.o.ID == "" {
				t.Error("no default id")
			}
		})
	}
}

// fakeDyups answers GET /upstream/web with the bodies and statuses of steps,
// one per request, the last one for good.
type fakeDyups struct {
	secret string // if set, required in X-SwallowKeeper-Secret (else 403)
	steps  []step
	n      atomic.Int64
}

type step struct {
	status int
	body   string
}

func (d *fakeDyups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(d.n.Add(1)) - 1
	s := d.steps[min(i, len(d.steps)-1)]
	if d.secret != "" && r.Header.Get("X-SwallowKeeper-Secret") != d.secret {
		s = step{http.StatusForbidden, "forbidden\n"}
	}
	if r.URL.Path != "/upstream/web" {
		s = step{http.StatusNotFound, ""}
	}
	w.WriteHeader(s.status)
	io.WriteString(w, s.body)
}

// TestDrainWaitsOnErrors: a 404, a 5xx or a refused answer proves nothing
// and the drain polls on; only an answer 200 without the instance ends
// it.
func TestDrainWaitsOnErrors(t *testing.T) {
	d := &fakeDyups{steps: []step{
		{404, ""}, {404, ""}, {500, "boom"}, {502, ""},
		{200, "server 10.0.0.1:8080\nserver 10.0.0.2:8080\n"},
		{200, "server 10.0.0.2:8080\n"},
	}}
	srv := httptest.NewServer(d)
	defer srv.Close()
	o := Options{Service: "web", Address: "10.0.0.1", Port: 8080, DrainURL: srv.URL, Drain: 10 * time.Second}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	drain(o, layout.JoinHostPort(o.Address, o.Port), logs.logger())
	if got := d.n.Load(); got != 6 {
		t.Errorf("drain ended after %d answers, want 6 (the first 200 without the instance); log:\n%s", got, logs)
	}
	logs.wait(t, "drained: nginx no longer routes to the instance", 0)
	logs.wait(t, "wrong -upstream or -canary-tag", 0)
}

// TestDrainNeverCountsAMissingUpstreamAsDrained: a wrong upstream name (a
// canary tag other than the daemon's, a typo) answers 404 for ever: the
// drain waits its whole -drain and says so.
func TestDrainNeverCountsAMissingUpstreamAsDrained(t *testing.T) {
	d := &fakeDyups{steps: []step{{200, "server 10.0.0.2:8080\n"}}}
	srv := httptest.NewServer(d)
	defer srv.Close()
	o := Options{Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"gray=b"}, DrainURL: srv.URL, Drain: 300 * time.Millisecond}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Upstream != "web_b" {
		t.Fatalf("upstream %q", o.Upstream)
	}
	logs := newLogRecorder()
	took := drain(o, layout.JoinHostPort(o.Address, o.Port), logs.logger())
	if took < o.Drain {
		t.Errorf("drain ended after %v on 404s, want the whole %v; log:\n%s", took, o.Drain, logs)
	}
	logs.wait(t, "nginx was not seen without the instance before the drain time ran out", 0)
	if d.n.Load() < 3 {
		t.Errorf("only %d polls in %v", d.n.Load(), o.Drain)
	}
}

// TestDrainGraceAfterTheInstanceLeft: once nginx no longer lists the
// instance, the drain still waits DrainGrace for requests in flight.
func TestDrainGraceAfterTheInstanceLeft(t *testing.T) {
	d := &fakeDyups{steps: []step{{200, "server 10.0.0.2:8080\n"}}}
	srv := httptest.NewServer(d)
	defer srv.Close()
	o := Options{Service: "web", Address: "10.0.0.1", Port: 8080, DrainURL: srv.URL, Drain: 5 * time.Second, DrainGrace: 400 * time.Millisecond}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	took := drain(o, layout.JoinHostPort(o.Address, o.Port), newLogRecorder().logger())
	if took < o.DrainGrace || took > o.DrainGrace+time.Second {
		t.Errorf("drain took %v, want the grace %v after the first answer", took, o.DrainGrace)
	}
	if d.n.Load() != 1 {
		t.Errorf("%d polls, want 1", d.n.Load())
	}
}

// TestDrainSendsTheAPISecret: a Lua API with secret_file answers 403
// without the secret, which proves nothing; with -drain-secret-file the
// drain sees the instance leave.
func TestDrainSendsTheAPISecret(t *testing.T) {
	d := &fakeDyups{secret: "s3cret", steps: []step{{200, "server 10.0.0.2:8080\n"}}}
	srv := httptest.NewServer(d)
	defer srv.Close()
	o := Options{Service: "web", Address: "10.0.0.1", Port: 8080, DrainURL: srv.URL, Drain: 200 * time.Millisecond}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	if took := drain(o, layout.JoinHostPort(o.Address, o.Port), logs.logger()); took < o.Drain {
		t.Errorf("drain without the secret ended after %v on 403s; log:\n%s", took, logs)
	}
	logs.wait(t, "-drain-secret-file", 0)
	o.DrainSecret = "s3cret"
	logs = newLogRecorder()
	drain(o, layout.JoinHostPort(o.Address, o.Port), logs.logger())
	logs.wait(t, "drained: nginx no longer routes", 0)
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows the secret:\n%s", logs)
	}
}

// TestDrainOverAUnixSocket: -drain-url unix:/path reaches an API that
// listens on a unix socket only.
func TestDrainOverAUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dyups.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDyups{steps: []step{{200, "server [2001:db8::1]:8080\n"}, {200, "server 10.0.0.2:8080\n"}}}
	srv := &http.Server{Handler: d}
	go srv.Serve(ln)
	defer srv.Close()
	o := Options{Service: "web", Address: "2001:db8::1", Port: 8080, DrainURL: "unix:" + sock, Drain: 5 * time.Second}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	drain(o, layout.JoinHostPort(o.Address, o.Port), logs.logger())
	if d.n.Load() != 2 {
		t.Errorf("%d polls, want 2 (listed, then gone); log:\n%s", d.n.Load(), logs)
	}
	logs.wait(t, "drained: nginx no longer routes", 0)
}

// TestConsulFillsInTheNodeAddress: without an address the instance is
// registered without one, so Consul gives every reader the node's
// address, not the wrapper's guess (127.0.0.1 next to a local agent);
// the wrapper reads that address back for draining.
func TestConsulFillsInTheNodeAddress(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := Consul{Client: c.Client}
	o := Options{Service: "web", ID: "web-1", Port: 8080}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Register(ctx, o); err != nil {
		t.Fatal(err)
	}
	svc, _, err := c.Client.Agent().Service("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Address != "" {
		t.Errorf("registered with address %q, want none (the agent fills in the node's)", svc.Address)
	}
	self, err := c.Client.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	node, _, err := c.Client.Catalog().Node(self["Config"]["NodeName"].(string), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := ""
	start := time.Now()
	for addr == "" {
		a, err := reg.InstanceAddress(ctx, o)
		if err == nil {
			addr = a
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("InstanceAddress: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if addr != node.Node.Address {
		t.Errorf("InstanceAddress = %q, want the node's %q", addr, node.Node.Address)
	}
	entries, _, err := c.Client.Health().Service("web", "", false, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("health: %v %v", entries, err)
	}
	if e := entries[0]; e.Service.Address != "" || e.Node.Address != node.Node.Address {
		t.Errorf("the daemon reads service address %q, node address %q", e.Service.Address, e.Node.Address)
	}
	if err := reg.Deregister(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRunDrainsOnTheAddressConsulFilledIn: a wrapper without -address
// drains on the address Consul gave the instance: it forwards the stop
// only once the dyups API stops listing that address.
func TestRunDrainsOnTheAddressConsulFilledIn(t *testing.T) {
	c := testenv.StartConsul(t)
	var gone atomic.Bool
	var polls atomic.Int64
	nodeAddr := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		if !gone.Load() {
			io.WriteString(w, "server "+nodeAddr+"\n")
			return
		}
		io.WriteString(w, "server 192.0.2.9:80\n")
	}))
	defer srv.Close()
	self, err := c.Client.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	node, _, err := c.Client.Catalog().Node(self["Config"]["NodeName"].(string), nil)
	if err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	nodeAddr = layout.JoinHostPort(node.Node.Address, port)
	o := Options{Service: "web", ID: "web-1", Port: port, DrainURL: srv.URL, Drain: 20 * time.Second,
		StopSignal: syscall.SIGTERM, StopTimeout: 5 * time.Second}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Run(ctx, o, nil, Consul{Client: c.Client}, logs.logger(), io.Discard, io.Discard) }()
	logs.wait(t, "the registry filled in the instance's address address="+nodeAddr, 10*time.Second)
	stop()
	if !waitFor(func() bool { return polls.Load() >= 3 }, 5*time.Second) {
		t.Fatalf("the drain did not poll; log:\n%s", logs)
	}
	select {
	case code := <-done:
		t.Fatalf("the wrapper exited (%d) while nginx still listed %s; log:\n%s", code, nodeAddr, logs)
	default:
	}
	gone.Store(true)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the wrapper did not finish after nginx dropped the instance; log:\n%s", logs)
	}
	logs.wait(t, "drained: nginx no longer routes to the instance", 0)
}

func waitFor(f func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
