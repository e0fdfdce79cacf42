package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnixSocketTargetsAndSecretFiles: targets[].url takes unix:/path and
// unix:///path (the same target: listed twice is an error), a bad socket
// URL says what to write; targets[].secret_file must name a readable,
// non-empty file. Errors name file, line and field.
func TestUnixSocketTargetsAndSecretFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "api.secret")
	if err := os.WriteFile(good, []byte("  s3cr3t-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.secret")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "none.secret")
	for _, tt := range []struct {
		yaml string
		want string // "" = valid
	}{
		{"targets:\n  - url: unix:/run/swallowkeeper/dyups.sock\n", ""},
		{"targets:\n  - url: unix:///run/swallowkeeper/dyups.sock\n", ""},
		{"targets:\n  - url: unix:/run/a.sock\n  - url: unix:///run/a.sock\n", "c.yml:3: targets[1].url: unix:/run/a.sock is listed twice"},
		{"targets:\n  - url: unix:run/a.sock\n", "c.yml:2: targets[0].url: " + `dyups target "unix:run/a.sock": the socket path must be absolute (want unix:/absolute/path/to/socket, e.g. unix:/run/swallowkeeper/dyups.sock)`},
		{"targets:\n  - url: unix://nginx/run/a.sock\n", "a unix socket has no host"},
		{"targets:\n  - url: tcp://127.0.0.1:8081\n", "want http://host:port, https://host:port or unix:/path/to/socket"},
		{fmt.Sprintf("targets:\n  - url: http://10.0.0.5:8081\n    secret_file: %s\n", good), ""},
		{fmt.Sprintf("targets:\n  - url: unix:/run/a.sock\n    secret_file: %s\n", good), ""},
		{fmt.Sprintf("targets:\n  - url: http://10.0.0.5:8081\n    secret_file: %s\n", missing), "c.yml:3: targets[0].secret_file: secret file: open " + missing + ": no such file or directory"},
		{fmt.Sprintf("targets:\n  - url: http://10.0.0.5:8081\n    secret_file: %s\n", empty), "c.yml:3: targets[0].secret_file: secret file " + empty + " is empty"},
		{"targets:\n  - url: http://10.0.0.5:8081\n    secret: inline\n", "c.yml:3: targets[0].secret: unknown key (the secret never goes in this file: set secret_file"},
	} {
		c, err := Parse("c.yml", []byte(tt.yaml))
		if err == nil {
			c.File = filepath.Join(dir, "u.conf")
			err = c.Validate()
		}
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.yaml, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v\nwant %q", tt.yaml, err, tt.want)
		}
	}
}

// TestTargetSecretIsTrimmedAndNeverPrints: the secret is read whole,
// surrounding whitespace trimmed, and prints as <redacted>.
func TestTargetSecretIsTrimmedAndNeverPrints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.secret")
	if err := os.WriteFile(path, []byte("\t s3cr3t-value \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse("c.yml", []byte(fmt.Sprintf("targets:\n  - url: http://10.0.0.5:8081\n    secret_file: %s\n  - url: unix:/run/a.sock\n", path)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.TargetSecret(0)
	if err != nil || s.Reveal() != "s3cr3t-value" {
		t.Fatalf("TargetSecret(0) = %q, %v", s.Reveal(), err)
	}
	if s, err := c.TargetSecret(1); err != nil || s != "" {
		t.Errorf("TargetSecret of a target without secret_file = %q, %v", s.Reveal(), err)
	}
	if out := fmt.Sprintf("%v %s %+v %#v %q", s, s, c.Targets, c, s); strings.Contains(out, "s3cr3t") {
		t.Errorf("the secret prints: %s", out)
	}
}

// TestDefaultTargetIsTheSampleSocket: the default target is the unix
// socket the sample nginx configs listen on, and it validates.
func TestDefaultTargetIsTheSampleSocket(t *testing.T) {
	c, err := Parse("", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "u.conf")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Targets) != 1 || c.Targets[0].URL != "unix:/run/swallowkeeper/dyups.sock" {
		t.Errorf("default targets %+v", c.Targets)
	}
	for _, name := range []string{"lua.conf", "openresty.conf", "tengine-dyups.conf"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "nginx", "conf", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "listen "+DefaultTarget+";") {
			t.Errorf("nginx/conf/%s does not listen on %s", name, DefaultTarget)
		}
	}
}
