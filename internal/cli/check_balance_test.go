package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `check` says which configured directives the Lua module stores without
// enforcing them, and says nothing for those it enforces.
func TestCheckNotesWhatTheLuaPlaneDoesNotEnforce(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sk.yml")
	for _, c := range []struct{ ups, want string }{
		{"  overrides:\n    web:\n      balance: hash $cookie_sid consistent\n", ""},
		{"  overrides:\n    web:\n      balance: least_conn\n      max_conns: 20\n", "upstreams.overrides.web.max_conns: not enforced by the Lua module"},
	} {
		os.WriteFile(cfg, []byte(fmt.Sprintf("file: %s/u.conf\nupstreams:\n%s", dir, c.ups)), 0o644)
		code, out, errs := runCLI(t, nil, "check", "-config", cfg)
		if code != 0 || !strings.Contains(out, "configuration ok") {
			t.Fatalf("check %q: %d %q %q", c.ups, code, out, errs)
		}
		if has := strings.Contains(out, "Lua-module target"); has != (c.want != "") || !strings.Contains(out, c.want) {
			t.Errorf("check %q printed %q, want a note containing %q", c.ups, out, c.want)
		}
	}
}
