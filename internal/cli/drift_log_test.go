package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestOneDriftOneLogLine (issue 16.9): the whole daemon, real Consul and
// nginx with the Lua module. An upstream deleted behind its back is
// repaired, and that one drift makes one log line: not one from the
// target and another from the engine's change history, nor again from the
// drift checks after the repair.
func TestOneDriftOneLogLine(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	cfgText, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(cfgText, []byte("reconcile:\n  interval: 200ms\n  reads: 3\n")...), 0o644)
	b1 := startBackend(t, "web-1")
	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	d := startDaemon(t, "-config", cfg)
	waitRoutes(t, ng, d, "web", "web-1")

	// Each drift check reads /detail at least reads (3) times; nginx logs
	// every read.
	detailReads := func() int {
		data, _ := os.ReadFile(filepath.Join(ng.Prefix(), "access.log"))
		return bytes.Count(data, []byte(`"GET /detail`))
	}
	waitReads := func(what string, n int) {
		t.Helper()
		from := detailReads()
		deadline := time.Now().Add(15 * time.Second)
		for detailReads() < from+n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d reads of /detail in 15s, want %d; log:\n%s", what, detailReads()-from, n, d.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReads("two drift checks before the damage", 6)
	const line = "drift: nginx does not hold what it should"
	if n := strings.Count(d.log.String(), line); n != 0 {
		t.Fatalf("drift logged %d times before any damage:\n%s", n, d.log.String())
	}

	if code, _ := apiDo(t, ng, "DELETE", "/upstream/web", ""); code != 200 {
		t.Fatalf("manual DELETE: %d", code)
	}
	waitRoutes(t, ng, d, "web", "web-1")
	waitReads("five drift checks after the repair", 15)

	if n := strings.Count(d.log.String(), line); n != 1 {
		t.Errorf("one drift logged %d times, want once; log:\n%s", n, d.log.String())
	}
}
