package cli_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestEndToEndPerServiceOverHTTPS runs the daemon with consul.watch:
// per_service against a real Consul over https (HTTP/2) and a real nginx:
// registrations, a failing check and a new instance reach nginx's
// traffic, and the watch metrics say both watches are up.
func TestEndToEndPerServiceOverHTTPS(t *testing.T) {
	c := testenv.StartConsulTLS(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	path := writeConfigConsul(t, fmt.Sprintf("  address: https://%s\n  watch: per_service\n  wait_time: 30s\n  tls:\n    ca_file: %s\n",
		c.HTTPSAddr(), c.CAFile), ng, file)
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	b1, b2, b3 := startBackend(t, "web-1"), startBackend(t, "web-2"), startBackend(t, "web-3")
	d := startDaemon(t, "-config", path, "-metrics-listen", metricsAddr)

	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")
	c.SetHealth(t, "web-1", api.HealthCritical)
	waitRoutes(t, ng, d, "web", "web-2")
	c.Register(t, "web", "web-3", "127.0.0.1", b3.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-2", "web-3")

	m := scrape(t, metricsAddr)
	for _, c := range []struct {
		what string
		got  float64
	}{
		{"registry_up", m.sum("swallowkeeper_registry_up", `source="consul"`)},
		{"watch_up catalog", m.sum("swallowkeeper_consul_watch_up", `watch="catalog/services"`)},
		{"watch_up health/service", m.sum("swallowkeeper_consul_watch_up", `watch="health/service"`)},
	} {
		if c.got != 1 {
			t.Errorf("%s = %v, want 1", c.what, c.got)
		}
	}
	if n := m.sum("swallowkeeper_consul_watch_wakes_total", `watch="health/state/any"`); n != 0 {
		t.Errorf("the checks watch woke %v times in per_service mode, want 0", n)
	}
}
