package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWorkerWatchAndSamplingKeys: targets[].nginx_pid (absolute),
// targets[].worker_ready_delay (0s-1m, only with nginx_pid) and
// reconcile.max_reads (0, or reads to 400); an error names file and line.
func TestWorkerWatchAndSamplingKeys(t *testing.T) {
	const target = "file: F\ntargets:\n  - url: http://127.0.0.1:8081\n"
	for _, tt := range []struct {
		yaml string
		want string // "" = valid
	}{
		{target, ""},
		{target + "    nginx_pid: /run/nginx.pid\n", ""},
		{target + "    nginx_pid: /run/nginx.pid\n    worker_ready_delay: 10s\n", ""},
		{target + "    nginx_pid: run/nginx.pid\n", "c.yml:4: targets[0].nginx_pid: run/nginx.pid: want an absolute path"},
		{target + "    worker_ready_delay: 2s\n", "c.yml:4: targets[0].worker_ready_delay: needs nginx_pid"},
		{target + "    nginx_pid: /run/nginx.pid\n    worker_ready_delay: 2m\n", "c.yml:5: targets[0].worker_ready_delay: 2m0s out of range 0s-1m"},
		{target + "reconcile:\n  max_reads: 12\n", ""},
		{target + "reconcile:\n  reads: 5\n  max_reads: 4\n", "c.yml:6: reconcile.max_reads: 4: want 0 (4 × reads) or reads (5) to 400"},
		{target + "reconcile:\n  max_reads: 401\n", "reconcile.max_reads: 401"},
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
	c, err := Parse("c.yml", []byte(target+"    nginx_pid: /run/nginx.pid\n    worker_ready_delay: 3s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tc := c.Targets[0]; tc.NginxPID != "/run/nginx.pid" || time.Duration(tc.WorkerReadyDelay) != 3*time.Second {
		t.Errorf("read %+v", tc)
	}
}
