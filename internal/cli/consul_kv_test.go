package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// consul.mode kv through the command line (issue 17, part 2): check names
// the mode, and render reads upsync's keys from a real Consul, its JSON
// parameters included.
func TestConsulKVModeFromTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "sk.yml")
	file := filepath.Join(dir, "upstreams.conf")
	for _, c := range []struct{ body, want string }{
		{"", "(services mode)"},
		{"consul: {mode: kv}\n", "(kv mode, keys upstreams/<upstream>/<ip>:<port>)"},
		{"consul: {mode: kv, kv_prefix: /nginx/ups/}\n", "(kv mode, keys nginx/ups/<upstream>/<ip>:<port>)"},
	} {
		os.WriteFile(conf, []byte(c.body), 0o644)
		code, out, errs := runCLI(t, nil, "check", "-config", conf, "-file", file)
		if code != 0 || !strings.Contains(out, "configuration ok: consul 127.0.0.1:8500 "+c.want) {
			t.Errorf("check with %q: exit %d, stdout %q, stderr %q; want it to name %s", c.body, code, out, errs, c.want)
		}
	}

	cs := testenv.StartConsul(t)
	for k, v := range map[string]string{
		"upstreams/web/127.0.0.1:9001": `{"weight":3,"max_fails":2,"fail_timeout":"20s"}`,
		"upstreams/web/127.0.0.1:9002": `{"down":1}`,
		"upstreams/web/127.0.0.1:9003": `{"weight":0}`,
	} {
		if _, err := cs.Client.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(conf, []byte("consul: {mode: kv}\nupstreams: {allow_addresses: [127.0.0.0/8]}\n"), 0o644)
	code, out, errs := runCLI(t, nil, "render", "-config", conf, "-consul-addr", cs.HTTPAddr(), "-file", file)
	if code != 0 {
		t.Fatalf("render: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{"upstream web {", "server 127.0.0.1:9001 weight=3 max_fails=2 fail_timeout=20s;", "server 127.0.0.1:9002 ", " down;"} {
		if !strings.Contains(out, want) {
			t.Errorf("render output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "9003") {
		t.Errorf("the key with weight 0 reached the file:\n%s", out)
	}
}
