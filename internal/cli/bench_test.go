package cli_test

import (
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// BenchmarkPropagation measures, through real Consul, the daemon and real
// nginx with the Lua plane, the time from a Consul write returning to the
// moment traffic through nginx reflects it: each iteration flips web-2's
// check critical (and back) and polls nginx, a fresh connection per
// request, until 4 requests in a row agree with the new set.
//
//	go test -run '^$' -bench Propagation -benchtime 100x ./internal/cli/
func BenchmarkPropagation(b *testing.B) {
	c := testenv.StartConsul(b)
	ng := testenv.StartNginx(b, testenv.NginxOptions{})
	file := filepath.Join(b.TempDir(), "upstreams.conf")
	b1, b2 := startBackend(b, "web-1"), startBackend(b, "web-2")
	c.Register(b, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	c.Register(b, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	d := startDaemon(b, "-config", writeConfig(b, c, ng, file))
	defer d.stop(b)

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() string {
		req, _ := http.NewRequest(http.MethodGet, ng.ProxyURL()+"/", nil)
		req.Host = "web"
		resp, err := client.Do(req)
		if err != nil {
			return "error"
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "error"
		}
		return string(body)
	}
	// settled reports whether 4 requests in a row match: only web-1, or
	// (both) at least one web-2 among 8.
	waitFor := func(onlyWeb1 bool) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if onlyWeb1 {
				ok := true
				for range 4 {
					if get() != "web-1" {
						ok = false
						break
					}
				}
				if ok {
					return
				}
			} else {
				for range 8 {
					if get() == "web-2" {
						return
					}
				}
			}
		}
		b.Fatalf("nginx did not converge (onlyWeb1=%v)", onlyWeb1)
	}
	waitFor(false)

	var leave, join []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		c.SetHealth(b, "web-2", api.HealthCritical)
		waitFor(true)
		leave = append(leave, time.Since(start))

		start = time.Now()
		c.SetHealth(b, "web-2", api.HealthPassing)
		waitFor(false)
		join = append(join, time.Since(start))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		q := func(p float64) float64 {
			return float64(d[min(int(p*float64(len(d))), len(d)-1)].Microseconds()) / 1000
		}
		b.ReportMetric(q(0.5), name+"-p50-ms")
		b.ReportMetric(q(0.99), name+"-p99-ms")
		b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, name+"-max-ms")
	}
	report("leave", leave)
	report("join", join)
}
