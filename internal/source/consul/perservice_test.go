package consul

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// countingConn counts the bytes read from the agent.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestPerServiceCostsWhatChanged: with consul.watch: per_service over
// https, 300 services' long polls share a few HTTP/2 connections, and one
// instance's change reads one service's answer, a small part of the
// checks answer that every change reads with consul.watch: catalog.
func TestPerServiceCostsWhatChanged(t *testing.T) {
	c := testenv.StartConsulTLS(t)
	services := 300
	if n, err := strconv.Atoi(os.Getenv("SK_TEST_SERVICES")); err == nil {
		services = n
	}
	for i := range services {
		c.Register(t, fmt.Sprintf("svc%03d", i), fmt.Sprintf("svc%03d-1", i), "127.0.0.1", 10000+i, nil, nil)
	}
	var read atomic.Int64
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = c.HTTPSAddr(), "https"
	cfg.TLSConfig.CAFile = c.CAFile
	dial := cfg.Transport.DialContext
	cfg.Transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{conn, &read}, nil
	}
	client, err := NewClient(cfg, WatchPerService)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	snaps := runSource(t, client, WatchPerService, reg)
	waitFor(t, snaps, "every service is read", func(s engine.Snapshot) bool { return s.Services == services })

	// The size of what one change costs in catalog mode: the checks answer.
	resp, err := http.Get("http://" + c.HTTPAddr() + "/v1/health/state/any")
	if err != nil {
		t.Fatal(err)
	}
	checks, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}

	c.CloseIdleConnections()
	port := c.HTTPSAddr()[strings.LastIndex(c.HTTPSAddr(), ":")+1:]
	// Consul allows 250 streams on a connection, but until its settings
	// come the client assumes 100, and a burst of polls fills new
	// connections at that; over HTTP/1.1 it would be one per poll.
	if n, most := establishedTo(t, port), services/100+2; n < 1 || n > most {
		t.Fatalf("%d connections carry %d long polls, want 1..%d (HTTP/2, up to 250 streams each)", n, services, most)
	} else {
		t.Logf("%d long polls over %d connections", services, n)
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("%d goroutines, stacks %.1f MB, heap %.1f MB", runtime.NumGoroutine(), float64(ms.StackInuse)/(1<<20), float64(ms.HeapInuse)/(1<<20))
	before, reads := read.Load(), metricValue(t, reg, "swallowkeeper_consul_service_reads_total")
	c.SetHealth(t, "svc123-1", api.HealthCritical)
	waitFor(t, snaps, "svc123 loses its server", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["svc123"]
		return ok && len(u.Servers) == 0 && s.Doubt == ""
	})
	got := read.Load() - before
	gotReads := metricValue(t, reg, "swallowkeeper_consul_service_reads_total") - reads
	t.Logf("one change: %d bytes read in %.0f answers; one checks answer is %d bytes", got, gotReads, len(checks))
	if got <= 0 || got*10 > int64(len(checks)) {
		t.Fatalf("one change read %d bytes, want more than 0 and under a tenth of the checks answer (%d bytes)", got, len(checks))
	}

	// A service that leaves the catalog stops its long poll: its answers
	// no longer count, and the source is still up.
	c.Deregister(t, "svc007-1")
	waitFor(t, snaps, "svc007 is gone", func(s engine.Snapshot) bool {
		_, ok := s.Upstreams["svc007"]
		return !ok && s.Services == services-1
	})
	if v := metricValue(t, reg, "swallowkeeper_registry_up"); v != 1 {
		t.Fatalf("registry_up = %v after a service left, want 1", v)
	}
	// Back under the same name: a new long poll follows it.
	c.Register(t, "svc007", "svc007-2", "127.0.0.1", 20007, nil, nil)
	waitFor(t, snaps, "svc007 is back", hasServers("svc007", "127.0.0.1:20007"))
	c.SetHealth(t, "svc007-2", api.HealthCritical)
	waitFor(t, snaps, "the new long poll sees svc007's health", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["svc007"]
		return ok && len(u.Servers) == 0
	})
}

// metricValue is the sum of a family's samples in reg (counters and
// gauges).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// per_service over https speaks HTTP/2 only; an endpoint that speaks
// HTTP/1.1 over TLS (a proxy in front of the agent) is named as such,
// not left to fail with framing errors.
func TestPerServiceRefusesAnHTTP1OnlyEndpoint(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{}`)
	}))
	srv.TLS = &tls.Config{NextProtos: []string{"http/1.1"}}
	srv.StartTLS()
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = strings.TrimPrefix(srv.URL, "https://"), "https"
	cfg.TLSConfig.InsecureSkipVerify = true
	client, err := NewClient(cfg, WatchPerService)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = client.Catalog().Services(nil)
	if err == nil || !strings.Contains(err.Error(), `not HTTP/2`) || !strings.Contains(err.Error(), "consul.watch: catalog") {
		t.Fatalf("error %v, want one naming the missing HTTP/2 and the way out", err)
	}
}

// A token that cannot read one of a service's nodes gets answers without
// that node's instances. Consul's blocking-query backend says so; its
// streaming backend, which answers the long polls, does not: a change
// that comes that way must still be doubted, or nginx would lose the
// hidden instances.
func TestPerServiceKeepsDoubtingAnACLFilteredService(t *testing.T) {
	const root = "f0e1d2c3-0000-4000-8000-00000000beef"
	c := testenv.StartConsulACL(t, root)
	c.Register(t, "web", "web-1", "10.1.0.1", 8080, nil, nil)
	if _, err := c.Client.Catalog().Register(&api.CatalogRegistration{Node: "hidden", Address: "10.9.0.1",
		Service: &api.AgentService{ID: "web-2", Service: "web", Address: "10.9.0.1", Port: 8080}}, nil); err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = c.HTTPAddr(), scopedToken(t, c, "not-hidden", `service_prefix "" { policy = "read" } node "sk-test" { policy = "read" }`)
	client, err := NewClient(cfg, WatchPerService)
	if err != nil {
		t.Fatal(err)
	}
	snaps := runSource(t, client, WatchPerService, nil)
	s := waitFor(t, snaps, "web's first answer", hasServers("web", "10.1.0.1:8080"))
	if !strings.Contains(s.Doubt, "filtered by ACLs") {
		t.Fatalf("first answer: doubt %q, want the ACL filtering", s.Doubt)
	}
	// A change of web-1 comes as a streaming answer.
	c.SetHealth(t, "web-1", api.HealthCritical)
	s = waitFor(t, snaps, "the streaming answer with web-1 critical", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["web"]
		return ok && len(u.Servers) == 0
	})
	if !strings.Contains(s.Doubt, "filtered by ACLs") {
		t.Fatalf("streaming answer: doubt %q, want the ACL filtering still", s.Doubt)
	}
	t.Logf("doubt: %s", s.Doubt)
}
