package consul

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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

// metricValue is the sum of a family's samples in reg.
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

// Consul's streaming backend answers X-Consul-KnownLeader: false always;
// only its answers are judged without that header, and an ACL filter is
// still doubted.
func TestStreamingAnswersLeaveTheLeaderToTheCatalog(t *testing.T) {
	cases := []struct {
		name  string
		meta  api.QueryMeta
		doubt string // a part of DoubtOf's answer, "" for none
	}{
		{"streaming, no leader header", api.QueryMeta{QueryBackend: api.QueryBackendStreaming}, ""},
		{"blocking query without a leader", api.QueryMeta{QueryBackend: api.QueryBackendBlockingQuery}, "without a known leader"},
		{"no backend header, no leader", api.QueryMeta{}, "without a known leader"},
		{"streaming, filtered by ACLs", api.QueryMeta{QueryBackend: api.QueryBackendStreaming, ResultsFilteredByACLs: true}, "filtered by ACLs"},
		{"blocking query with a leader", api.QueryMeta{QueryBackend: api.QueryBackendBlockingQuery, KnownLeader: true}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.meta
			got := DoubtOf(streamingMeta(&in), false, "every service")
			if (tc.doubt == "") != (got == "") || !strings.Contains(got, tc.doubt) {
				t.Fatalf("doubt %q, want %q", got, tc.doubt)
			}
			if in != tc.meta {
				t.Fatalf("streamingMeta changed its argument: %+v", in)
			}
		})
	}
}
