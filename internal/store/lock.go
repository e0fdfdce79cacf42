package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock keeps a second writer off a persisted path. Two daemons (or a
// daemon and `swallowkeeper once`) writing one file or directory cannot
// tear a file, every write being atomic, but each would overwrite the
// other's versions and put back what the other wrote, and nginx would get
// whichever wrote last. So a writer takes the path's lock first and a
// second one is refused, naming the holder.
//
// It is a flock(2) on a hidden file beside what nginx includes (no include
// glob matches a leading dot): the kernel drops it when the holder exits,
// SIGKILL included, so there is never a stale lock to clean up. The file
// holds the holder's pid, for the refusal's message, and stays in place.
type Lock struct {
	f    *os.File
	path string
}

// ErrLocked is wrapped by Acquire's error when another process holds the
// lock.
var ErrLocked = errors.New("another swallowkeeper writes it")

// LockPath is the lock file of a persisted path: `.NAME.lock` beside a
// file, `.swallowkeeper.lock` inside a directory store (DIR/*.conf), where
// the writer can create files in any case.
func LockPath(p string) string {
	if IsDirGlob(p) {
		return filepath.Join(filepath.Dir(p), ".swallowkeeper.lock")
	}
	return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".lock")
}

// Acquire takes the lock of the persisted path p (a file, or DIR/*.conf;
// the directory must exist, as the configuration requires). It fails at once,
// wrapping ErrLocked, when another process holds it. Any other error
// (a directory that cannot be created, a read-only filesystem) is returned
// too: the caller decides whether it can go on unlocked.
func Acquire(p string) (*Lock, error) {
	lp := LockPath(p)
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", lp, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: %s: %w (%s holds %s); two writers would overwrite each other's versions: stop it first, or give this one another file", p, ErrLocked, holder, lp)
		}
		return nil, fmt.Errorf("store: lock %s: %w", lp, err)
	}
	// The pid, for a refused writer's message; an error here costs only that.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f, path: lp}, nil
}

// readHolder names the process that holds a lock, from the pid it wrote.
func readHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
		return "pid " + strconv.Itoa(pid)
	}
	return "a process"
}

// Path is the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release lets another writer take the lock. The file stays: removing it
// would let a writer that opened it meanwhile lock an unlinked file while
// a third one creates and locks a new one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	return err
}
