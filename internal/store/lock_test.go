package store

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLockPathIsHiddenFromIncludeGlobs(t *testing.T) {
	for _, c := range []struct{ persisted, lock string }{
		{"/etc/nginx/upstreams.conf", "/etc/nginx/.upstreams.conf.lock"},
		{"/etc/nginx/upstreams.d/*.conf", "/etc/nginx/upstreams.d/.swallowkeeper.lock"},
	} {
		got := LockPath(c.persisted)
		if got != c.lock {
			t.Errorf("LockPath(%q) = %q, want %q", c.persisted, got, c.lock)
		}
		if m, _ := filepath.Match("*.conf", filepath.Base(got)); m {
			t.Errorf("%s matches nginx's *.conf include", got)
		}
	}
}

// A second writer in this process is refused while the first holds the
// lock, and takes it once the first lets go.
func TestLockRefusesASecondWriterUntilReleased(t *testing.T) {
	for _, persisted := range []string{"upstreams.conf", "ups.d/*.conf"} {
		p := filepath.Join(t.TempDir(), persisted)
		os.MkdirAll(filepath.Dir(p), 0o755)
		first, err := Acquire(p)
		if err != nil {
			t.Fatalf("%s: first Acquire: %v", persisted, err)
		}
		_, err = Acquire(p)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("%s: second Acquire: %v, want ErrLocked", persisted, err)
		}
		for _, want := range []string{p, "pid " + strconv.Itoa(os.Getpid()), LockPath(p)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: refusal %q does not name %q", persisted, err, want)
			}
		}
		if err := first.Release(); err != nil {
			t.Fatal(err)
		}
		again, err := Acquire(p)
		if err != nil {
			t.Fatalf("%s: Acquire after Release: %v", persisted, err)
		}
		again.Release()
	}
}

// The lock of a writer that was killed (SIGKILL: no chance to clean up)
// is free at once; while it lived, another process was refused and told
// its pid.
func TestLockOfAKilledWriterIsFree(t *testing.T) {
	if p := os.Getenv("SK_LOCK_CHILD"); p != "" {
		if _, err := Acquire(p); err != nil {
			os.Stdout.WriteString("ERR " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("LOCKED\n")
		select {} // until killed
	}
	p := filepath.Join(t.TempDir(), "*.conf")
	child := exec.Command(os.Args[0], "-test.run=^TestLockOfAKilledWriterIsFree$", "-test.count=1")
	child.Env = append(os.Environ(), "SK_LOCK_CHILD="+p)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "LOCKED\n" {
		t.Fatalf("child: %q", line)
	}

	_, err = Acquire(p)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(child.Process.Pid)) {
		t.Fatalf("Acquire while the child holds the lock: %v; want ErrLocked naming pid %d", err, child.Process.Pid)
	}
	child.Process.Kill()
	child.Wait()
	l, err := Acquire(p)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}
