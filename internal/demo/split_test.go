package demo

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestDemoSplit runs `scripts/demo.sh -split`'s story: the share moves
// 10% → 50% → 100% through Consul KV under traffic, each step reaches
// nginx, the traffic follows (measured per second from the backends) and
// no request fails.
func TestDemoSplit(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "swallowkeeper")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/swallowkeeper").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	args := []string{"-split", "-swallowkeeper", bin, "-repo", "../..", "-rate", "200",
		"-nginx", testenv.Binary(t, "NGINX", "nginx", "Debian package nginx"), "-consul", testenv.ConsulBinary(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errs bytes.Buffer
	if code := Main(ctx, args, &out, &errs); code != 0 {
		t.Fatalf("demo exited %d: %s\n%s", code, errs.String(), out.String())
	}
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(out.String(), "")
	if n := strings.Count(plain, "nginx splits"); n != 3 {
		t.Errorf("%d split steps reached nginx, want 3:\n%s", n, plain)
	}
	if regexp.MustCompile(`Done: \d+ requests through nginx, 0 failed`).FindString(plain) == "" {
		t.Fatalf("no zero-failure summary:\n%s", plain)
	}
	// The last second of the 100% step: everything on web-3 (web_canary).
	sections := strings.Split(plain, "nginx splits 100%")
	if len(sections) != 2 {
		t.Fatalf("no 100%% step:\n%s", plain)
	}
	rows := regexp.MustCompile(`web-1:\s+(\d+)\s+web-2:\s+\d+\s+web-3:\s+(\d+)`).FindAllStringSubmatch(sections[1], -1)
	if len(rows) == 0 {
		t.Fatalf("no traffic rows after the 100%% step:\n%s", sections[1])
	}
	last := rows[len(rows)-1]
	if n1, _ := strconv.Atoi(last[1]); n1 != 0 {
		t.Errorf("at 100%%, web-1 still got %d requests in a second:\n%s", n1, plain)
	}
	t.Logf("%s", plain)
}
