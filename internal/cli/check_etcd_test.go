package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `check` says when wrappers registering in etcd with their defaults cannot
// be read by this configuration (issue 16), and is silent when they can.
func TestCheckNotesEtcdWrapperFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sk.yml")
	for _, c := range []struct{ etcd, want string }{
		{"", ""},
		{"etcd:\n  layout: service\n", "run it with -etcd-layout service"},
	} {
		os.WriteFile(cfg, []byte(fmt.Sprintf("file: %s/u.conf\nsource: etcd\n%s", dir, c.etcd)), 0o644)
		code, out, errs := runCLI(t, nil, "check", "-config", cfg)
		if code != 0 || !strings.Contains(out, "configuration ok") {
			t.Fatalf("check %q: %d %q %q", c.etcd, code, out, errs)
		}
		if has := strings.Contains(out, "swallowkeeper register -registry etcd"); has != (c.want != "") || !strings.Contains(out, c.want) {
			t.Errorf("check %q printed %q, want a note containing %q", c.etcd, out, c.want)
		}
	}
}
