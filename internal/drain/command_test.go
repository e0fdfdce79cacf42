package drain_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/drain"
)

// persisted writes an upstream file in a fresh directory and returns its
// path.
func persisted(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

const twoServers = `upstream web {
    server 10.0.0.1:80 weight=1 max_fails=1 fail_timeout=10s;
    server 10.0.0.2:80 weight=1 max_fails=1 fail_timeout=10s;
}
upstream solo {
    server 10.0.1.1:80 weight=1 max_fails=1 fail_timeout=10s;
}
`

func run(undrain bool, args ...string) (int, string, string) {
	var o, e bytes.Buffer
	code := drain.Command(undrain, args, &o, &e, "/nonexistent/swallowkeeper.yml")
	return code, o.String(), e.String()
}

func TestCommand(t *testing.T) {
	file := persisted(t, twoServers)
	marks := drain.PathFor(file)
	for _, tc := range []struct {
		name     string
		undrain  bool
		args     []string
		wantCode int
		wantOut  string // substring of stdout, or of stderr when the code is not 0
	}{
		{"a bad upstream name is refused", false, []string{"-file", file, "we b", "10.0.0.1:80"}, 2, `upstream name "we b"`},
		{"a host name is refused", false, []string{"-file", file, "web", "backend.local:80"}, 2, "not an IP literal"},
		{"an address without a port is refused", false, []string{"-file", file, "web", "10.0.0.1"}, 2, "want ip:port"},
		{"a port out of range is refused", false, []string{"-file", file, "web", "10.0.0.1:0"}, 2, "out of range"},
		{"one argument is a usage error", false, []string{"-file", file, "web"}, 2, "want UPSTREAM IP:PORT"},
		{"a server the file does not have is refused", false, []string{"-file", file, "web", "10.0.0.9:80"}, 1, "upstream web has no server 10.0.0.9:80"},
		{"the last server of an upstream is refused", false, []string{"-file", file, "solo", "10.0.1.1:80"}, 1, "refusing to drain 10.0.1.1:80 from upstream solo"},
		{"undrain of a server never drained is an error", true, []string{"-file", file, "web", "10.0.0.1:80"}, 1, "web 10.0.0.1:80 is not drained"},
		{"a server of the file is drained", false, []string{"-file", file, "web", "10.0.0.1:80"}, 0, "drained web 10.0.0.1:80"},
		{"draining it again says so", false, []string{"-file", file, "web", "10.0.0.1:80"}, 0, "drained already"},
		{"the other one would be the last usable one: refused", false, []string{"-file", file, "web", "10.0.0.2:80"}, 1, "last usable primary server"},
		{"-force marks a server the file does not have", false, []string{"-file", file, "-force", "web", "10.0.0.9:80"}, 0, "not in the persisted file now"},
		{"-list shows the marks", false, []string{"-file", file, "-list"}, 0, "web  10.0.0.9:80"},
		{"undrain removes a mark", true, []string{"-file", file, "web", "10.0.0.1:80"}, 0, "undrained web 10.0.0.1:80"},
		{"undrain matches the name as dyups does", true, []string{"-file", file, "WEB", "10.0.0.9:80"}, 0, "undrained"},
	} {
		code, out, errOut := run(tc.undrain, tc.args...)
		got := out
		if code != 0 {
			got = errOut
		}
		if code != tc.wantCode || !strings.Contains(got, tc.wantOut) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d and %q", tc.name, code, out, errOut, tc.wantCode, tc.wantOut)
		}
	}
	left, err := (&drain.File{Path: marks}).Load()
	if err != nil || len(left) != 0 {
		t.Fatalf("marks left: %v, %v; want none", left, err)
	}
}

func TestLoadRefusesABadFile(t *testing.T) {
	for name, text := range map[string]string{
		"not JSON":      `{"drains": [`,
		"unknown field": `{"drains": [], "extra": 1}`,
		"bad address":   `{"drains": [{"upstream": "web", "address": "web.local:80"}]}`,
		"bad name":      `{"drains": [{"upstream": "a;b", "address": "10.0.0.1:80"}]}`,
	} {
		path := filepath.Join(t.TempDir(), "marks.json")
		os.WriteFile(path, []byte(text), 0o644)
		if marks, err := (&drain.File{Path: path}).Load(); err == nil {
			t.Errorf("%s: Load = %v, want an error (never no marks)", name, marks)
		}
	}
	if marks, err := (&drain.File{Path: filepath.Join(t.TempDir(), "absent.json")}).Load(); err != nil || marks != nil {
		t.Errorf("absent file: Load = %v, %v; want no marks, no error", marks, err)
	}
}

func TestWatchCuesOnAReplacedFile(t *testing.T) {
	file := persisted(t, twoServers)
	f := &drain.File{Path: drain.PathFor(file), Poll: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cues := make(chan struct{})
	go f.Watch(ctx, cues)
	<-cues // the first cue, at start
	if code, _, errOut := run(false, "-file", file, "web", "10.0.0.2:80"); code != 0 {
		t.Fatalf("drain: %s", errOut)
	}
	select {
	case <-cues:
	case <-time.After(5 * time.Second):
		t.Fatal("no cue within 5s of the marks file being replaced")
	}
}

func TestPathForIsHiddenNextToTheFile(t *testing.T) {
	if got := drain.PathFor("/var/lib/swallowkeeper/upstreams.conf"); got != "/var/lib/swallowkeeper/.upstreams.conf.drains.json" {
		t.Fatalf("PathFor = %s", got)
	}
	// A directory store's marks sit next to the directory, outside the
	// glob nginx includes.
	if got := drain.PathFor("/var/lib/swallowkeeper/upstreams.d/*.conf"); got != "/var/lib/swallowkeeper/.upstreams.d.drains.json" {
		t.Fatalf("PathFor of a directory store = %s", got)
	}
}

// TestLockFileServesEveryDrainingUser: the lock is taken on a read-only
// descriptor (flock needs no more) of a file readable by all, so that a
// lock file left by `sudo swallowkeeper drain` does not lock the daemon's
// user out of draining.
func TestLockFileServesEveryDrainingUser(t *testing.T) {
	f := &drain.File{Path: filepath.Join(t.TempDir(), ".upstreams.conf.drains.json")}
	unlock, err := f.Lock()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	fi, err := os.Stat(f.Path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o044 != 0o044 {
		t.Errorf("lock file mode %v, want it readable by group and others", fi.Mode().Perm())
	}
	// A lock file no one may write still locks.
	if err := os.Chmod(f.Path+".lock", 0o444); err != nil {
		t.Fatal(err)
	}
	unlock, err = f.Lock()
	if err != nil {
		t.Fatalf("lock over a read-only lock file: %v", err)
	}
	unlock()
}
