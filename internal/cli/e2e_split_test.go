package cli_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestSplitEndToEnd: the daemon pushes upstreams.splits to a real nginx
// with the Lua module, a header match reaches the canary group at once,
// and a rule put in Consul KV moves the share 0 → 100% without touching
// nginx; the time from each KV put to the traffic moving is printed.
func TestSplitEndToEnd(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	main, canary := startBackend(t, "main"), startBackend(t, "canary")
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := fmt.Sprintf(`consul:
  address: %s
  wait_time: 30s
file: %s
targets:
  - url: %s
    timeout: 2s
reconcile:
  interval: 1s
upstreams:
  allow_addresses: [127.0.0.0/8]
  splits:
    web:
      to: web_canary
      percent: 0
      match:
        header: {X-Canary: "1"}
  splits_consul_prefix: swallowkeeper/splits
metrics:
  listen: ""
`, c.HTTPAddr(), file, ng.APIURL())
	path := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Register(t, "web", "web-main", "127.0.0.1", main.Port, nil, nil)
	c.Register(t, "web", "web-canary", "127.0.0.1", canary.Port, []string{"gray=canary"}, nil)
	d := startDaemon(t, "-config", path)
	waitRoutes(t, ng, d, "web", "main")

	withHeader := func() (map[string]int, int) {
		seen, failed := map[string]int{}, 0
		for range 20 {
			req, _ := http.NewRequest("GET", ng.ProxyURL()+"/", nil)
			req.Host = "web"
			req.Header.Set("X-Canary", "1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				failed++
				continue
			}
			b := make([]byte, 16)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			seen[string(b[:n])]++
		}
		return seen, failed
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		seen, failed := withHeader()
		if seen["canary"] == 20 && failed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("X-Canary: 1 goes to %v (%d failed); daemon log:\n%s", seen, failed, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		percent string
		want    []string
	}{{"100", []string{"canary"}}, {"0", []string{"main"}}} {
		start := time.Now()
		if _, err := client.KV().Put(&api.KVPair{Key: "swallowkeeper/splits/web", Value: []byte(`{"to":"web_canary","percent":` + step.percent + `}`)}, nil); err != nil {
			t.Fatal(err)
		}
		waitRoutes(t, ng, d, "web", step.want...)
		fmt.Printf("FIGURE split end to end: consul kv put percent %s -> traffic moved after %v\n", step.percent, time.Since(start).Round(time.Millisecond))
	}
}

// TestSplitConfigChangeBySIGHUP: a split changed in the configuration file
// reaches nginx on SIGHUP, and removing the last rule from the file
// deletes it from nginx (the new configuration's sink knows the target
// held rules). The time from the signal to the traffic moving is printed.
func TestSplitConfigChangeBySIGHUP(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	main, canary := startBackend(t, "main"), startBackend(t, "canary")
	c.Register(t, "web", "web-main", "127.0.0.1", main.Port, nil, nil)
	c.Register(t, "web", "web-canary", "127.0.0.1", canary.Port, []string{"gray=canary"}, nil)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	conf := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	writeConf := func(splits string) {
		t.Helper()
		text := fmt.Sprintf(`consul:
  address: %s
  wait_time: 30s
file: %s
targets:
  - url: %s
    timeout: 2s
upstreams:
  allow_addresses: [127.0.0.0/8]
%smetrics:
  listen: ""
`, c.HTTPAddr(), file, ng.APIURL(), splits)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("  splits:\n    web: {to: web_canary, percent: 100}\n")

	cmd, d := startDaemonProcess(t, conf)
	waitRoutes(t, ng, d, "web", "canary")

	writeConf("  splits:\n    web: {to: web_canary, percent: 0}\n")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGHUP)
	waitRoutes(t, ng, d, "web", "main")
	fmt.Printf("FIGURE split end to end: config 100%% -> 0%% + SIGHUP -> traffic moved after %v\n", time.Since(start).Round(time.Millisecond))

	writeConf("")
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(15 * time.Second)
	for apiGet(t, ng, "/split") != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the removed rule stays in nginx: %q; daemon log:\n%s", apiGet(t, ng, "/split"), d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
