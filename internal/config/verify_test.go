package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// The verify command is off by default; when set, its program must be
// found, and an error names the file and line.
func TestVerifyCommand(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want string // "" = valid
	}{
		{"file: F\n", ""},
		{"file: F\nverify: [sh, -c, 'exit 0']\n", ""},
		{"file: F\nverify: []\n", ""},
		{"file: F\nverify: ['', -t]\n", "c.yml:2: verify: the command is empty"},
		{"file: F\nverify: [no-such-nginx-xyz, -t]\n", `c.yml:2: verify: exec: "no-such-nginx-xyz": executable file not found`},
	} {
		file := filepath.Join(t.TempDir(), "u.conf")
		c, err := Parse("c.yml", []byte(strings.Replace(tt.yaml, "F", file, 1)))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.yaml, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.want)
		}
	}
	if v := Default().Verify; len(v) != 0 {
		t.Errorf("verify is on by default: %v", v)
	}
}
