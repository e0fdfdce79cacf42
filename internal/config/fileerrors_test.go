package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryProblemOfAFileInOneRun: type errors, unknown keys and
// validation findings of one file come back together, each with its
// file:line and key, in the file's order (issue 16.7). A key the decoder
// refused keeps its default and gets no second message.
func TestEveryProblemOfAFileInOneRun(t *testing.T) {
	path := filepath.Join("testdata", "many.bad.yml")
	c, err := Load(path)
	if c == nil {
		t.Fatalf("Load gave no config to validate: %v", err)
	}
	if err == nil {
		t.Fatal("Load accepted a file with type errors")
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted the file")
	}
	p := path
	want := strings.Join([]string{
		"config: " + p + `:4: consul.wait_time: "5" is not a duration (want a number with a unit, like 10s or 500ms)`,
		p + ":5: consul.bogus: unknown key; known keys here: address, scheme, ",
		p + `:7: upstreams.weight: want a whole number, got "heavy"`,
		p + ":8: upstreams.max_fails: -3 out of range 0-",
		p + ":9: upstreams.keepalive: want a whole number, got a list",
		p + `:11: targets[0].url: "127.0.0.1:8081" has no scheme: write http://127.0.0.1:8081`,
		p + `:13: targets[1].timeout: "soon" is not a duration (want a number with a unit, like 10s or 500ms)`,
		p + ":14: targets[1].nginx_pidd: unknown key; did you mean nginx_pid?",
		p + ":15: targets[2].url: http://10.0.0.2:8081 is listed twice",
		p + ":17: guards.max_drop: 2: want a share above 0 and at most 1",
		p + `:20: log.level: `,
		p + ":21: log.colour: unknown key; known keys here: level, format",
	}, "\n")
	lines := strings.Split(err.Error(), "\n")
	wantLines := strings.Split(want, "\n")
	if len(lines) != len(wantLines) {
		t.Errorf("%d problems, want %d:\n%v", len(lines), len(wantLines), err)
	}
	for i := range min(len(lines), len(wantLines)) {
		if !strings.HasPrefix(lines[i], wantLines[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i+1, lines[i], wantLines[i])
		}
	}
}

// TestDecodeProblemsNameTheirKey: the decoder's Go words ("cannot
// unmarshal !!str into int", "field x not found in type config.Y")
// become the key's path and what it takes.
func TestDecodeProblemsNameTheirKey(t *testing.T) {
	for _, tt := range []struct {
		yaml, want string
	}{
		{"reconcile:\n  reads: many\n", `c.yml:2: reconcile.reads: want a whole number, got "many"`},
		{"guards:\n  max_drop: half\n", `c.yml:2: guards.max_drop: want a number, got "half"`},
		{"reload:\n  enabled: sure\n", `c.yml:2: reload.enabled: want true or false, got "sure"`},
		{"file: [a, b]\n", `c.yml:1: file: want a single value (text), got a list`},
		{"verify: nginx -t\n", `c.yml:1: verify: want a list, got "nginx -t"`},
		{"consul: 127.0.0.1:8500\n", `c.yml:1: consul: want a mapping (key: value lines), got "127.0.0`},
		{"consul:\n  adress: x\n", "c.yml:2: consul.adress: unknown key; did you mean address?"},
		{"sorce: etcd\n", "c.yml:1: sorce: unknown key; did you mean source?"},
		{"etcd:\n  password: x\n", "c.yml:2: etcd.password: unknown key (the password never goes in this file: set etcd.password_file"},
		// Two keys on one line: the message names their common parent.
		{"reload: {enabled: sure, min_wait: 1s}\n", `c.yml:1: reload: want true or false, got "sure"`},
		{"targets: [http://10.0.0.1:8081, {url: http://10.0.0.2:8081, timeout: 5}]\n", `c.yml:1: targets: "5" is not a duration`},
		// A value the decoder cuts short is shown whole; a list of one is shown.
		{"targets: http://127.0.0.1:8081\n", `c.yml:1: targets: want a list, got "http://127.0.0.1:8081" (a list of one is written [http://127.0.0.1:8081])`},
		// A list or mapping where a value goes: the key that holds it.
		{"upstreams:\n  keepalive:\n    - 1\n", "c.yml:3: upstreams.keepalive: want a whole number, got a list"},
		{"reload: {enabled: [1]}\n", "c.yml:1: reload.enabled: want true or false, got a list"},
		{"wait:\n  min: {a: 1}\n", "c.yml:2: wait.min: want a duration like 10s"},
	} {
		_, err := Parse("c.yml", []byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v\nwant %q", tt.yaml, err, tt.want)
		}
	}
}

// TestTargetWithoutScheme: host:port without a scheme says what to write
// instead of Go's "first path segment in URL cannot contain colon".
func TestTargetWithoutScheme(t *testing.T) {
	for _, tt := range []struct {
		yaml, want string
	}{
		{`targets: ["127.0.0.1:8081"]`, `c.yml:1: targets[0].url: "127.0.0.1:8081" has no scheme: write http://127.0.0.1:8081`},
		{"targets:\n  - url: 127.0.0.1:8081\n", `c.yml:2: targets[0].url: "127.0.0.1:8081" has no scheme: write http://127.0.0.1:8081`},
		{"targets:\n  - url: localhost:8081\n", `targets[0].url: "localhost:8081" has no scheme: write http://localhost:8081`},
		{"targets:\n  - url: \"[::1]:8081\"\n", `targets[0].url: "[::1]:8081" has no scheme: write http://[::1]:8081`},
		{"targets:\n  - url: \":8081\"\n", `targets[0].url: ":8081" has no scheme: write http://127.0.0.1:8081`},
		{"targets:\n  - url: http://127.0.0.1:8081\n", ""},
		{"targets:\n  - url: unix:/run/sk.sock\n", ""},
	} {
		c, err := Parse("c.yml", []byte(tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		c.File = filepath.Join(t.TempDir(), "u.conf")
		err = c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.yaml, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v\nwant %q", tt.yaml, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "first path segment"):
			t.Errorf("%q: Go's URL error leaks: %v", tt.yaml, err)
		}
	}
}

// TestSyntaxErrorsSayWhatUsuallyCausesThem: the YAML parser's grammar
// words get the usual cause.
func TestSyntaxErrorsSayWhatUsuallyCausesThem(t *testing.T) {
	for _, tt := range []struct {
		yaml, want string
	}{
		{"consul:\n\taddress: x\n", "c.yml:2: found character that cannot start any token (a tab: YAML indents with spaces only)"},
		{"consul:\n  address: @x\n", "(a value starting with @, ` or % needs quotes)"},
		{"consul:\n  address: x\n address2: y\n", "did not find expected key (a line of this block is indented differently from its neighbours)"},
		{"consul:\n  address: a: b\n", `(a value holding ": " needs quotes, or a key is indented under a value)`},
		{"targets: [http://a:1\n", "c.yml:1: did not find expected ',' or ']' (a [list] opened here is not closed)"},
	} {
		c, err := Parse("c.yml", []byte(tt.yaml))
		if c != nil || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: config %v, error %v\nwant %q", tt.yaml, c != nil, err, tt.want)
		}
	}
}
