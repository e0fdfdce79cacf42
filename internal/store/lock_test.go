package store

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
		if fi, err := os.Stat(LockPath(p)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: lock file: %v, %v; want mode 0600 (who can open it can hold it)", persisted, fi.Mode(), err)
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
		time.Sleep(time.Hour) // until killed
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

	// The file's pid is only a hint: the kernel's holder is named, even
	// when someone wrote another pid into the file.
	if err := os.WriteFile(LockPath(p), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(p)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(child.Process.Pid)+" holds") {
		t.Fatalf("Acquire while the child holds the lock: %v; want ErrLocked naming pid %d, as /proc/locks does", err, child.Process.Pid)
	}
	child.Process.Kill()
	child.Wait()
	l, err := Acquire(p)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}

// A lock file that is a symbolic link is refused, not followed: whoever
// planted it would have the writer create or lock a file of their choice.
func TestLockRefusesASymlink(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "upstreams.conf")
	victim := filepath.Join(dir, "victim")
	if err := os.Symlink(victim, LockPath(p)); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(p)
	if err == nil {
		l.Release()
		t.Fatal("Acquire took a lock through a symbolic link")
	}
	if errors.Is(err, ErrNoLocks) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Acquire: %v; want an error of its own naming the symbolic link", err)
	}
	if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was created: %v", err)
	}
}

// Covers knows its own lock file under another name, so that a reload to
// a path spelled differently keeps the lock instead of meeting itself.
func TestLockCoversItsFileUnderAnotherName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "upstreams.conf")
	l, err := Acquire(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    string
		want bool
	}{
		{p, true},
		{filepath.Join(alias, "upstreams.conf"), true},
		{filepath.Join(dir, "other.conf"), false},
		{filepath.Join(dir, "*.conf"), false},
	} {
		if got := l.Covers(c.p); got != c.want {
			t.Errorf("Covers(%s) = %v, want %v", c.p, got, c.want)
		}
	}
	var none *Lock
	if none.Covers(p) {
		t.Error("a nil Lock covers a path")
	}
}

// One-file stores of different files share a directory; a directory
// store shares it with none of them (it would write the same NAME.conf),
// whichever comes first.
func TestLockKeepsFileAndDirectoryStoresApart(t *testing.T) {
	dir := t.TempDir()
	web, api, all := filepath.Join(dir, "web.conf"), filepath.Join(dir, "api.conf"), filepath.Join(dir, "*.conf")
	a, err := Acquire(web)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(api)
	if err != nil {
		t.Fatalf("a second one-file store in the directory: %v", err)
	}
	if _, err := Acquire(all); !errors.Is(err, ErrLocked) {
		t.Fatalf("a directory store beside one-file stores: %v, want ErrLocked", err)
	}
	a.Release()
	if _, err := Acquire(all); !errors.Is(err, ErrLocked) {
		t.Fatalf("a directory store beside one one-file store: %v, want ErrLocked", err)
	}
	b.Release()
	d, err := Acquire(all)
	if err != nil {
		t.Fatalf("a directory store alone: %v", err)
	}
	defer d.Release()
	_, err = Acquire(web)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "a directory store") || !strings.Contains(err.Error(), "(this process") {
		t.Fatalf("a one-file store in a directory store's directory: %v, want ErrLocked naming the directory store, held by this process", err)
	}
	// Refused, it holds nothing: its own lock is free again.
	if f, err := lockFile(web, LockPath(web), syscall.LOCK_EX); err != nil {
		t.Fatalf("the refused store kept its own lock: %v", err)
	} else {
		f.Close()
	}
}
