package consul

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// The attack of issue 14: whoever can register in Consul registers an
// instance on loopback (nginx's own upstream API, the Consul agent), on
// cloud metadata or on a multicast or broadcast address. With the default
// address policy, each is dropped, reported and counted; the good
// instance flows.
func TestSourceRefusesHostAddressesByDefault(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	r := rules
	r.Addresses = upstream.AddressPolicy{} // the default: the tests' rules allow 127.0.0.0/8 and ::1
	client := testClient(t, c)
	snaps := testenv.RunSource(t, New(client, r, Options{WaitTime: 30 * time.Second, RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg))

	hostile := map[string]string{
		"api-port":  "127.0.0.1",
		"loopback2": "127.9.9.9",
		"mapped":    "::ffff:127.0.0.1",
		"v6-lo":     "::1",
		"metadata":  "169.254.169.254",
		"v6-link":   "fe80::1",
		"multicast": "224.0.0.1",
		"broadcast": "255.255.255.255",
	}
	for id, addr := range hostile {
		c.Register(t, "web", id, addr, 8081, nil, nil)
	}
	c.Register(t, "web", "good", "10.1.2.3", 8080, nil, nil)
	s := waitFor(t, snaps, "every hostile instance is dropped, the good one kept", func(s engine.Snapshot) bool {
		return len(s.Dropped) == len(hostile) && hasServers("web", "10.1.2.3:8080")(s)
	})
	for _, d := range s.Dropped {
		if !strings.Contains(d.Reason, "upstreams.allow_addresses can allow it") {
			t.Errorf("drop reason does not name the knob: %v", d)
		}
	}
	if got := counter(t, reg, "swallowkeeper_invalid_instances_dropped_total"); got != float64(len(hostile)) {
		t.Errorf("dropped counter = %v, want %d", got, len(hostile))
	}
}

// Consul matches /v1/health/service/<name> case-insensitively: the answer
// for "Api" holds "api"'s instances. Each upstream must get exactly its
// own service's instances (issue 13, reproduction A).
func TestSourceKeepsServicesThatDifferOnlyInCaseApart(t *testing.T) {
	c := testenv.StartConsul(t)
	snaps := startSource(t, c, nil)
	c.Register(t, "api", "lower-api-1", "127.0.0.1", 9001, nil, nil)
	c.Register(t, "Api", "upper-api-1", "127.0.0.1", 9002, nil, nil)
	waitFor(t, snaps, "api and Api each hold their own instance", func(s engine.Snapshot) bool {
		return hasServers("api", "127.0.0.1:9001")(s) && hasServers("Api", "127.0.0.1:9002")(s)
	})
	c.Deregister(t, "lower-api-1")
	// The health read of api can come back empty before the catalog
	// drops the service: wait for both.
	waitFor(t, snaps, "api is gone from the catalog, Api holds only its own instance", func(s engine.Snapshot) bool {
		_, api := s.Upstreams["api"]
		return !api && s.Services == 1 && hasServers("Api", "127.0.0.1:9002")(s)
	})
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// Issue 14, canary across services: an instance of web tagged gray=a
// would join upstream web_a, which is service web_a's own. Through real
// Consul, the canary instance is refused and reported whichever
// registers first; web_a keeps exactly its own instances.
func TestSourceRefusesACanaryGroupNamedLikeAnotherService(t *testing.T) {
	c := testenv.StartConsul(t)
	snaps := startSource(t, c, nil)
	c.Register(t, "web", "web-1", "127.0.0.1", 9001, nil, nil)
	c.Register(t, "web", "web-canary-1", "127.0.0.1", 9002, []string{"gray=a"}, nil)
	waitFor(t, snaps, "the canary group web_a exists while no service owns the name", hasServers("web_a", "127.0.0.1:9002"))

	c.Register(t, "web_a", "web_a-1", "127.0.0.1", 9100, nil, nil)
	s := waitFor(t, snaps, "web_a holds only service web_a's instance", all(
		hasServers("web_a", "127.0.0.1:9100"), hasServers("web", "127.0.0.1:9001")))
	refused := false
	for _, d := range s.Dropped {
		refused = refused || d.Service == "web" && strings.Contains(d.Reason, "canary group upstream web_a is also the name of service web_a")
	}
	if !refused {
		t.Errorf("the canary instance is not reported: %v", s.Dropped)
	}
}

func all(conds ...func(engine.Snapshot) bool) func(engine.Snapshot) bool {
	return func(s engine.Snapshot) bool {
		for _, c := range conds {
			if !c(s) {
				return false
			}
		}
		return true
	}
}
