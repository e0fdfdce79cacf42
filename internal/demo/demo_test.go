package demo

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestDemoRunsWithEveryRegistry runs the live demo, as scripts/demo.sh
// does, with each of the three registries: every step must reach nginx and
// no request may fail.
func TestDemoRunsWithEveryRegistry(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "swallowkeeper")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/swallowkeeper").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	nginx := testenv.Binary(t, "NGINX", "nginx", "Debian package nginx")
	for _, reg := range []string{"consul", "etcd", "zookeeper"} {
		t.Run(reg, func(t *testing.T) {
			args := []string{"-registry", reg, "-swallowkeeper", bin, "-repo", "../..", "-nginx", nginx, "-rate", "100"}
			switch reg {
			case "consul":
				args = append(args, "-consul", testenv.ConsulBinary(t))
			case "etcd":
				args = append(args, "-etcd", testenv.Binary(t, "ETCD", "etcd", "Debian package etcd-server"))
			case "zookeeper":
				args = append(args, "-java", testenv.Binary(t, "JAVA", "java", "Debian package default-jre-headless"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var out, errs bytes.Buffer
			if code := Main(ctx, args, &out, &errs); code != 0 {
				t.Fatalf("demo exited %d: %s\n%s", code, errs.String(), out.String())
			}
			plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(out.String(), "")
			if n := strings.Count(plain, "nginx routes to"); n != 5 {
				t.Errorf("%d steps reached nginx, want 5:\n%s", n, plain)
			}
			m := regexp.MustCompile(`Done: (\d+) requests through nginx, 0 failed`).FindStringSubmatch(plain)
			if m == nil {
				t.Fatalf("no zero-failure summary:\n%s", plain)
			}
			t.Logf("%s: %s requests, 0 failed", reg, m[1])
		})
	}
}
