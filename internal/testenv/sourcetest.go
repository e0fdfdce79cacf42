package testenv

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Logger is a test's logger: debug and up to stderr under go test -v,
// nothing otherwise.
func Logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// NextSnapshot returns the next snapshot, failing after 10s.
func NextSnapshot(t testing.TB, snaps <-chan engine.Snapshot, what string) engine.Snapshot {
	t.Helper()
	return WaitSnapshot(t, snaps, what, func(engine.Snapshot) bool { return true })
}

// Metric sums the series of the metric family name in reg (counters and
// gauges) whose labels include every given name=value pair.
func Metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	for _, v := range series(t, reg, name, labels...) {
		sum += v
	}
	return sum
}

// series are the values of the series of the family name (counters and
// gauges) whose labels include every given name=value pair.
func series(t testing.TB, reg *prometheus.Registry, name string, labels ...string) []float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var vs []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			vs = append(vs, m.GetCounter().GetValue()+m.GetGauge().GetValue())
		}
	}
	return vs
}

// CheckMetricNames checks that reg holds families metric families, each
// named with prefix and passing Prometheus's lint.
func CheckMetricNames(t testing.TB, reg *prometheus.Registry, prefix string, families int) {
	t.Helper()
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	mfs, _ := reg.Gather()
	if len(mfs) != families {
		t.Errorf("%d metric families, want %d", len(mfs), families)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			t.Errorf("metric %s lacks the %s prefix", mf.GetName(), prefix)
		}
	}
}

// SourceSendsNothing runs src, which has no registry to reach: it must
// send nothing for d; then inspect (when set) looks at its state, and src
// must return within 3s once its context ends and leave no goroutine
// behind (its client's included).
func SourceSendsNothing(t testing.TB, src engine.Source, d time.Duration, inspect func()) {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	snaps := make(chan engine.Snapshot, 1)
	done := make(chan struct{})
	go func() { src.Run(ctx, snaps); close(done) }()
	NoSnapshot(t, snaps, d, "nothing listens")
	if inspect != nil {
		inspect()
	}
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3s after its context ended")
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Retry calls f, each call bounded to 2s, until it succeeds, failing the
// test after 10s: an application's write that rides out a registry
// restart.
func Retry(t testing.TB, what string, f func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("app: %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Rules are the rules the source tests build snapshots with: canary tag
// gray, weight meta weight, weight 1, max_fails 3, fail_timeout 10s,
// keepalive 16, services in exclude left out. The test backends listen on
// loopback, which the address policy refuses by default: the tests opt in
// explicitly, as an operator would with upstreams.allow_addresses.
func Rules(exclude ...string) registry.Rules {
	return registry.Rules{
		Exclude:     exclude,
		CanaryTag:   "gray",
		WeightMeta:  "weight",
		Weight:      1,
		MaxFails:    3,
		FailTimeout: 10 * time.Second,
		Keepalive:   16,
		Addresses:   upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}},
	}
}

// Addrs lists the server addresses of u, in order.
func Addrs(u upstream.Upstream) []string {
	var out []string
	for _, s := range u.Servers {
		out = append(out, s.Addr.String())
	}
	return out
}

// CheckUpstreams compares the upstreams of snap (name → server addresses;
// a nil list is an upstream with no servers) and its service count with
// want, and checks that every upstream has the keepalive of Rules (16).
func CheckUpstreams(t testing.TB, snap engine.Snapshot, want map[string][]string, services int) {
	t.Helper()
	got := map[string][]string{}
	for name, u := range snap.Upstreams {
		got[name] = Addrs(u)
		if u.Keepalive != 16 {
			t.Errorf("%s: keepalive %d, want the rules' 16", name, u.Keepalive)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}
	if snap.Services != services {
		t.Errorf("services = %d, want %d", snap.Services, services)
	}
}

// RefusedAddresses are instance addresses the default address policy
// refuses: loopback, link-local (cloud metadata), multicast, broadcast.
var RefusedAddresses = []string{"127.0.0.1:8081", "[::1]:8081", "169.254.169.254:80", "[fe80::1]:80", "224.0.0.1:80", "255.255.255.255:80"}

// CheckRefusedByDefault checks that s dropped exactly the entries of
// RefusedAddresses, each for the default address policy.
func CheckRefusedByDefault(t testing.TB, s engine.Snapshot) {
	t.Helper()
	if len(s.Dropped) != len(RefusedAddresses) {
		t.Fatalf("dropped %v, want the %d entries on refused addresses", s.Dropped, len(RefusedAddresses))
	}
	for _, d := range s.Dropped {
		if !strings.Contains(d.Reason, "refused by default; upstreams.allow_addresses can allow it") {
			t.Errorf("reason: %v", d)
		}
	}
}

// Outage is a registry outage a source must report: Stop and Start the
// registry; Lost and Back are the log lines (level and message start) the
// source writes to Logs when it loses and regains it.
type Outage struct {
	Source      string // the source label of swallowkeeper_registry_up
	Stop, Start func(testing.TB)
	Lost, Back  string
	Logs        *LogBuffer
}

// CheckOutageReported checks that registry_up{source} exists at 0 before
// the first connection (call it before the source runs with started
// false), then, with the source running, that an outage logs Lost and sets
// it to 0, and the return logs Back and sets it to 1.
func CheckOutageReported(t testing.TB, reg *prometheus.Registry, o Outage, started func()) {
	t.Helper()
	up := func() float64 { return Metric(t, reg, "swallowkeeper_registry_up", "source", o.Source) }
	if n := len(series(t, reg, "swallowkeeper_registry_up", "source", o.Source)); n != 1 {
		t.Fatalf("%d registry_up{source=%s} series before the source runs, want 1", n, o.Source)
	}
	if v := up(); v != 0 {
		t.Fatalf("registry_up{source=%s} = %v before any connection, want 0", o.Source, v)
	}
	started()
	within := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not within 15s: %s; log:\n%s", what, o.Logs)
			}
		}
	}
	within("registry_up is 1", func() bool { return up() == 1 })
	o.Stop(t)
	within("the source logs "+o.Lost, func() bool { return strings.Contains(o.Logs.String(), o.Lost) })
	within("registry_up is 0", func() bool { return up() == 0 })
	o.Start(t)
	within("the source logs "+o.Back, func() bool { return strings.Contains(o.Logs.String(), o.Back) })
	within("registry_up is 1 again", func() bool { return up() == 1 })
}
