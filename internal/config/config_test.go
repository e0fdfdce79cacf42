package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsValidAndMatchesDefaults(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "examples", "swallowkeeper.yml"))
	if err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "upstreams.conf")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Consul.Address != d.Consul.Address || c.Upstreams.Weight != d.Upstreams.Weight ||
		c.Upstreams.FailTimeout != d.Upstreams.FailTimeout || c.Guards.MinServices != d.Guards.MinServices ||
		c.Metrics.Listen != d.Metrics.Listen || len(c.Targets) != 1 || c.Targets[0].URL != DefaultTarget {
		t.Errorf("example disagrees with the defaults: %+v", c)
	}
	if k := c.Upstreams.Overrides["web"].Keepalive; k == nil || *k != 64 {
		t.Errorf("override not read: %v", k)
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	c, err := Parse("empty.yml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Consul.Address != "127.0.0.1:8500" || c.Services.Exclude[0] != "consul" || c.Upstreams.CanaryTag != "gray" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestTargetsInFileReplaceTheDefault(t *testing.T) {
	c, err := Parse("t.yml", []byte("targets:\n  - url: http://127.0.0.1:9001\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 1 || c.Targets[0].URL != "http://127.0.0.1:9001" {
		t.Errorf("targets = %+v", c.Targets)
	}
}

// Each bad fixture must fail with a message naming the file, the line and
// the field at fault.
func TestBadConfigs(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"unknown-field.bad.yml", []string{"unknown-field.bad.yml:2: consul.adress: unknown key; did you mean address?"}},
		{"bare-duration.bad.yml", []string{"bare-duration.bad.yml:3:", `"10" is not a duration`}},
		{"target-path.bad.yml", []string{"target-path.bad.yml:3: targets[1].url:", "want only scheme://host:port"}},
		{"weight-zero.bad.yml", []string{"weight-zero.bad.yml:3: upstreams.weight: 0 out of range 1-10000"}},
		{"syntax.bad.yml", []string{"syntax.bad.yml:"}},
		{"override-name.bad.yml", []string{"override-name.bad.yml:3: upstreams.overrides.bad name;:", "not allowed"}},
		{"inline-token.bad.yml", []string{"inline-token.bad.yml:2: consul.token: unknown key (the token never goes in this file"}},
		{"no-targets.bad.yml", []string{"no-targets.bad.yml:1: targets: at least one nginx target"}},
		{"wait.bad.yml", []string{"wait.bad.yml:3: wait.max: 1s is shorter than wait.min 2s"}},
		{"log.bad.yml", []string{"log.bad.yml:2: log.level:", "log.bad.yml:3: log.format:"}},
		{"etcd.bad.yml", []string{`etcd.bad.yml:3: etcd.endpoints[1]: "ftp://x:1": scheme must be http or https`, `etcd.bad.yml:3: etcd.endpoints[2]: "nohost": want host:port`, `etcd.bad.yml:4: etcd.layout: "upsnyc": want upsync or service`, `etcd.bad.yml:5: etcd.prefix:`}},
		{"zookeeper.bad.yml", []string{"zookeeper.bad.yml:3: zookeeper.servers: at least one server", `zookeeper.bad.yml:4: zookeeper.layout: "spring"`, "zookeeper.bad.yml:5: zookeeper.session_timeout: 500ms: want 1s to 1m"}},
		{"source.bad.yml", []string{`source.bad.yml:1: source: "eureka": want consul, etcd or zookeeper`}},
		{"fail-timeout.bad.yml", []string{"fail-timeout.bad.yml:2: upstreams.fail_timeout: 1.5s: want whole seconds"}},
		{"consul-credentials.bad.yml", []string{`consul-credentials.bad.yml:2: consul.address: "http://admin:xxxxx@127.0.0.1:8500": credentials in the address are not supported`, `consul-credentials.bad.yml:4: targets[0].url: "http://dyups:xxxxx@127.0.0.1:8081": credentials`}},
		{"etcd-credentials.bad.yml", []string{`etcd-credentials.bad.yml:4: etcd.endpoints[0]: "https://root:xxxxx@10.0.0.1:2379": credentials in the endpoint are not supported`, `etcd-credentials.bad.yml:5: etcd.endpoints[1]: "root:xxxxx@10.0.0.2:2379"`, `etcd-credentials.bad.yml:6: etcd.endpoints[2]: "https://xxxxx@10.0.0.3:2379"`}},
		{"addresses.bad.yml", []string{`addresses.bad.yml:2: upstreams.allow_addresses[1]: "localhost" is neither an IP address nor a CIDR prefix`, `addresses.bad.yml:3: upstreams.deny_addresses[0]: "10.0.0.0/33" is not a CIDR prefix`, `addresses.bad.yml:4: upstreams.reserved[0]: upstream name "bad name;"`}},
		{"many.bad.yml", []string{"many.bad.yml:4: consul.wait_time:", "many.bad.yml:21: log.colour: unknown key"}}, // all of them: TestEveryProblemOfAFileInOneRun
		{"allowed-hosts.bad.yml", []string{`allowed-hosts.bad.yml:2: metrics.allowed_hosts[1]: "sk.internal:9145": want a host name without scheme, port`, `metrics.allowed_hosts[2]: "http://sk.internal"`, `metrics.allowed_hosts[3]: empty host name`}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			c, err := Load(path)
			if err == nil {
				c.File = filepath.Join(t.TempDir(), "u.conf")
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, tt.file, path)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	entries, _ := os.ReadDir("testdata")
	for _, e := range entries {
		found := false
		for _, tt := range tests {
			found = found || tt.file == e.Name()
		}
		if strings.HasSuffix(e.Name(), ".bad.yml") && !found {
			t.Errorf("fixture %s has no expected message", e.Name())
		}
	}
}

// TestConfigErrorsNeverEchoCredentials: a password in a Consul address,
// an etcd endpoint, a target URL or $CONSUL_HTTP_ADDR is refused, and the
// error (which ends up in logs and terminals) shows user:xxxxx@ instead.
func TestConfigErrorsNeverEchoCredentials(t *testing.T) {
	const password = "s3cr3t-pass"
	for _, file := range []string{"consul-credentials.bad.yml", "etcd-credentials.bad.yml"} {
		c, err := Load(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		c.File = filepath.Join(t.TempDir(), "u.conf")
		err = c.Validate()
		if err == nil || !strings.Contains(err.Error(), "xxxxx@") {
			t.Fatalf("%s: error %v, want a refusal showing the redacted URL", file, err)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("%s: the password is in the error:\n%v", file, err)
		}
	}
	for _, addr := range []string{
		"http://admin:" + password + "@127.0.0.1:8500",
		"admin:" + password + "@127.0.0.1:8500",
		"https://admin:" + password + "/x@y@127.0.0.1:8500/", // '/', '@' inside the password
		"ftp://admin:" + password + "@127.0.0.1:8500",        // refused for its scheme too
	} {
		c := Default()
		c.File = filepath.Join(t.TempDir(), "u.conf")
		if err := c.ApplyEnv(func(k string) string { return map[string]string{"CONSUL_HTTP_ADDR": addr}[k] }); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "consul.address (from $CONSUL_HTTP_ADDR)") {
			t.Fatalf("CONSUL_HTTP_ADDR=%s: error %v", RedactURL(addr), err)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("CONSUL_HTTP_ADDR: the password is in the error:\n%v", err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:pass@host:8500":        "http://user:xxxxx@host:8500",
		"user:pass@host:8500":               "user:xxxxx@host:8500",
		"https://token@host:2379":           "https://xxxxx@host:2379",
		"https://u:p/a@b@host:2379/path":    "https://u:xxxxx@host:2379/path",
		"http://:pass@host:1":               "http://xxxxx@host:1",
		"http://127.0.0.1:8500":             "http://127.0.0.1:8500",
		"127.0.0.1:8500":                    "127.0.0.1:8500",
		"https://user:pass@[::1]:8500/v1/x": "https://user:xxxxx@[::1]:8500/v1/x",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMetricsListenerDefaults(t *testing.T) {
	d := Default()
	if d.Metrics.Pprof || len(d.Metrics.AllowedHosts) != 0 || d.Metrics.Listen != "127.0.0.1:9145" {
		t.Errorf("metrics defaults: %+v; want pprof off, no extra hosts, loopback", d.Metrics)
	}
	c, err := Parse("m.yml", []byte("metrics:\n  pprof: true\n  allowed_hosts: [sk.internal, SK.example.com]\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !c.Metrics.Pprof || !slices.Equal(c.Metrics.AllowedHosts, []string{"sk.internal", "SK.example.com"}) {
		t.Errorf("metrics: %+v", c.Metrics)
	}
}

func TestEnvOverridesFileAndNamesItsSource(t *testing.T) {
	c, err := Parse("c.yml", []byte("consul:\n  address: 127.0.0.1:8500\n"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CONSUL_HTTP_ADDR": "not an address", "CONSUL_HTTP_TOKEN": "tok-123"}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "consul.address (from $CONSUL_HTTP_ADDR)") {
		t.Fatalf("error %v does not name the environment variable", err)
	}
	if c.Consul.Token.Reveal() != "tok-123" {
		t.Errorf("token not taken from the environment")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %#v %+v", s, s, s, s, s), fmt.Sprintf("%v", Consul{Token: s})} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal")
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "token")
	os.WriteFile(tf, []byte("  file-token\n"), 0o600)
	c := Default()
	c.Consul.TokenFile = tf
	if err := c.ResolveToken(); err != nil || c.Consul.Token.Reveal() != "file-token" {
		t.Fatalf("ResolveToken: %v, %q", err, c.Consul.Token.Reveal())
	}
	c = Default()
	c.Consul.TokenFile = filepath.Join(dir, "missing")
	if err := c.ResolveToken(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing token file: %v", err)
	}
}

func TestSplitConsulAddress(t *testing.T) {
	tests := []struct{ in, addr, scheme string }{
		{"127.0.0.1:8500", "127.0.0.1:8500", "http"},
		{"https://consul.local:8501", "consul.local:8501", "https"},
		{"http://[::1]:8500/", "[::1]:8500", "http"},
	}
	for _, tt := range tests {
		a, s, err := SplitConsulAddress(tt.in, "http")
		if err != nil || a != tt.addr || s != tt.scheme {
			t.Errorf("%s → %s %s %v", tt.in, a, s, err)
		}
	}
	for _, bad := range []string{"", "consul", "ftp://x:1"} {
		if _, _, err := SplitConsulAddress(bad, "http"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	_ = time.Second
}

func TestSourceSections(t *testing.T) {
	tests := []struct {
		yaml      string
		source    string
		endpoints []string
		servers   []string
	}{
		{"", SourceConsul, []string{"127.0.0.1:2379"}, []string{"127.0.0.1:2181"}},
		{"source: etcd\netcd:\n  endpoints: [10.0.0.1:2379, https://10.0.0.2:2379]\n", SourceEtcd, []string{"10.0.0.1:2379", "https://10.0.0.2:2379"}, []string{"127.0.0.1:2181"}},
		{"source: zookeeper\nzookeeper:\n  servers: [10.0.0.3:2181]\n  layout: plain\n", SourceZooKeeper, []string{"127.0.0.1:2379"}, []string{"10.0.0.3:2181"}},
	}
	for _, tt := range tests {
		c, err := Parse("t.yml", []byte(tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		c.File = filepath.Join(t.TempDir(), "u.conf")
		if err := c.Validate(); err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if c.Source != tt.source || !slices.Equal(c.Etcd.Endpoints, tt.endpoints) || !slices.Equal(c.ZooKeeper.Servers, tt.servers) {
			t.Errorf("%q: source %q endpoints %v servers %v; want %q %v %v", tt.yaml, c.Source, c.Etcd.Endpoints, c.ZooKeeper.Servers, tt.source, tt.endpoints, tt.servers)
		}
	}
}

// Only the chosen source's section is used, so only it is validated: a
// CONSUL_HTTP_ADDR left in the environment must not stop an etcd daemon
// (issue 16), while a Consul daemon still reports it.
func TestConsulEnvironmentIsCheckedOnlyForConsul(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"CONSUL_HTTP_ADDR": "http://[bad", "CONSUL_HTTP_SSL": "true"}[k]
	}
	for source, wantErr := range map[string]bool{SourceEtcd: false, SourceZooKeeper: false, SourceConsul: true} {
		c, err := Parse("", []byte("source: "+source+"\nfile: "+filepath.Join(t.TempDir(), "u.conf")+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ApplyEnv(env); err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		if gotErr := err != nil && strings.Contains(err.Error(), "consul.address"); gotErr != wantErr {
			t.Errorf("source %s: Validate() = %v, want a consul.address error: %v", source, err, wantErr)
		}
	}
}

// Reload mode with no targets given has no dyups target (issue 16): the
// default target would never sync and /readyz would stay 503.
func TestReloadModeWithoutTargetsHasNone(t *testing.T) {
	c, err := Parse("", []byte("reload: {enabled: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 0 {
		t.Errorf("targets %v, want none", c.Targets)
	}
	c, err = Parse("", []byte("reload: {enabled: true}\ntargets: [{url: \"unix:/run/x.sock\"}]\n"))
	if err != nil || len(c.Targets) != 1 {
		t.Errorf("targets given with reload mode: %v (%v), want kept", c.Targets, err)
	}
	if c, _ := Parse("", nil); len(c.Targets) != 1 || c.Targets[0].URL != DefaultTarget {
		t.Errorf("without reload mode the default target is %v", c.Targets)
	}
}

// Operators' most common mistakes get an answer that says what to write
// (issue 16): a target given as its URL alone is taken, and a token in the
// file says where it goes instead.
func TestConfigTakesTargetURLsAndExplainsTokens(t *testing.T) {
	c, err := Parse("x.yml", []byte("targets: [unix:/run/swallowkeeper/dyups.sock, {url: \"http://10.0.0.1:8081\", timeout: 2s}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 2 || c.Targets[0].URL != "unix:/run/swallowkeeper/dyups.sock" || c.Targets[1].URL != "http://10.0.0.1:8081" || c.Targets[1].Timeout != Duration(2*time.Second) {
		t.Errorf("targets %+v", c.Targets)
	}
	if c.lines["targets[0]"] != 1 {
		t.Errorf("targets[0] line %d, want 1", c.lines["targets[0]"])
	}
	_, err = Parse("x.yml", []byte("consul:\n  token: s3cr3t\n"))
	if err == nil || !strings.Contains(err.Error(), "x.yml:2: consul.token: unknown key") || !strings.Contains(err.Error(), "$CONSUL_HTTP_TOKEN, or consul.token_file") {
		t.Errorf("consul.token: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("the error echoes the token: %v", err)
	}
}

// file names one file, or DIR/*.conf for one file per upstream; no other
// pattern, and the directory must exist.
func TestFileTakesOneFileOrADirectoryGlob(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		file, want string // want "": valid
	}{
		{filepath.Join(dir, "upstreams.conf"), ""},
		{filepath.Join(dir, "*.conf"), ""},
		{filepath.Join(dir, "absent", "*.conf"), "directory " + filepath.Join(dir, "absent") + " does not exist"},
		{filepath.Join(dir, "absent", "u.conf"), "directory of " + filepath.Join(dir, "absent", "u.conf") + " does not exist"},
		{filepath.Join(dir, "*"), "the only pattern taken is DIR/*.conf"},
		{filepath.Join(dir, "up?.conf"), "the only pattern taken is DIR/*.conf"},
		{filepath.Join(dir, "*", "*.conf"), "the only pattern taken is DIR/*.conf"},
	} {
		c := Default()
		c.File = tc.file
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("file %s: %v", tc.file, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("file %s: error %v, want %q", tc.file, err, tc.want)
		}
	}
}
