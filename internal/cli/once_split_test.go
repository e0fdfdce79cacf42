package cli_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestOnceSplitFromKVIsInNginxWhenItExits: `once` with split rules in
// Consul KV exits only after it read them and nginx holds them, every
// time (it used to exit as soon as the upstreams were pushed, before the
// split sink had even read KV).
func TestOnceSplitFromKVIsInNginxWhenItExits(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	main, canary := startBackend(t, "main"), startBackend(t, "canary")
	c.Register(t, "web", "web-main", "127.0.0.1", main.Port, nil, nil)
	c.Register(t, "web", "web-canary", "127.0.0.1", canary.Port, []string{"gray=canary"}, nil)
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.KV().Put(&api.KVPair{Key: "sk/splits/web", Value: []byte(`{"to":"web_canary","percent":30}`)}, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "sk.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`consul: {address: %q}
file: %s
targets:
  - url: %s
upstreams:
  allow_addresses: [127.0.0.0/8]
  splits_consul_prefix: sk/splits
`, c.HTTPAddr(), filepath.Join(dir, "upstreams.conf"), ng.APIURL())), 0o644); err != nil {
		t.Fatal(err)
	}
	for run := range 5 {
		code, out, errs := runCLI(t, nil, "once", "-config", conf)
		if code != 0 {
			t.Fatalf("run %d: once: exit %d\nstdout: %s\nstderr: %s", run, code, out, errs)
		}
		if got := apiGet(t, ng, "/split/web"); got != "to web_canary\npercent 30\n" {
			t.Fatalf("run %d: once exited 0 with nginx holding %q for split web; want the KV rule\nstderr: %s", run, got, errs)
		}
		req, _ := http.NewRequest("DELETE", ng.APIURL()+"/split/web", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("DELETE /split/web: %v %v", resp, err)
		}
		resp.Body.Close()
	}
}
