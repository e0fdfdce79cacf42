package store

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
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
// holds the last holder's pid and stays in place.
type Lock struct {
	f   *os.File
	dir *os.File // a one-file store's shared lock of its directory
}

var (
	// ErrLocked is wrapped by Acquire's error when another process holds
	// the lock.
	ErrLocked = errors.New("another swallowkeeper writes it")
	// ErrNoLocks is wrapped by Acquire's error when the place cannot hold
	// a lock at all: a filesystem without flock, or a lock file that
	// cannot be created where the store could not write either. The
	// caller may go on without the lock.
	ErrNoLocks = errors.New("no lock can be taken here")
)

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
// the directory must exist, as the configuration requires). It fails at
// once, wrapping ErrLocked, when another process holds it, and wraps
// ErrNoLocks when the place cannot hold a lock. A lock file that is a
// symbolic link is an error of its own: someone put it there.
//
// A directory store holds its directory's lock, `.swallowkeeper.lock`,
// exclusively; a one-file store holds its own `.NAME.lock` exclusively
// and its directory's lock shared: one-file stores of different files
// share a directory, but none shares it with a directory store, which
// would write the same NAME.conf.
//
// A lock file this user can read but not write is opened to read: flock
// needs no more. One it cannot open at all (created by `sudo swallowkeeper
// once`: root's, mode 0600) is ErrNoLocks.
func Acquire(p string) (*Lock, error) {
	lp := LockPath(p)
	f, err := lockFile(p, lp, syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	// The pid, for the file's reader; an error here costs only that.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	l := &Lock{f: f}
	if !IsDirGlob(p) {
		dp := LockPath(filepath.Join(filepath.Dir(p), DirGlob))
		d, err := lockFile(p, dp, syscall.LOCK_SH)
		switch {
		case errors.Is(err, ErrLocked):
			l.Release()
			return nil, fmt.Errorf("%w: a directory store (%s) writes that directory", err, filepath.Join(filepath.Dir(p), DirGlob))
		case errors.Is(err, ErrNoLocks):
			// The file's own lock still keeps a second one-file store off.
		case err != nil:
			l.Release()
			return nil, err
		}
		l.dir = d
	}
	return l, nil
}

// lockFile opens the lock file lp (created 0600) and takes its flock
// (how: LOCK_EX or LOCK_SH) for the persisted path p, without waiting.
func lockFile(p, lp string, how int) (*os.File, error) {
	// 0600: whoever can open the file can hold its lock, and so keep the
	// daemon from starting; only its own user (and root) may.
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		if ro, rerr := os.OpenFile(lp, os.O_RDONLY|syscall.O_NOFOLLOW, 0); rerr == nil {
			f, err = ro, nil
		} else if !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("store: lock %s: a symbolic link; remove it (the lock file is SwallowKeeper's own): %w", lp, err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrNotExist):
		// Nor could the store write there; its writes say so.
		return nil, fmt.Errorf("store: lock %s: %w (%w)", lp, ErrNoLocks, err)
	case err != nil:
		return nil, fmt.Errorf("store: lock %s: %w", lp, err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		holder := holderOf(f)
		f.Close()
		switch {
		case errors.Is(err, syscall.EWOULDBLOCK):
			return nil, fmt.Errorf("store: %s: %w (%s holds %s); two writers would overwrite each other's versions: stop it first, or give this one another file", p, ErrLocked, holder, lp)
		case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL):
			return nil, fmt.Errorf("store: lock %s: %w (%w)", lp, ErrNoLocks, err)
		}
		return nil, fmt.Errorf("store: lock %s: %w", lp, err)
	}
	return f, nil
}

// holderOf names the process that holds the lock on f: the kernel's own
// word for it (/proc/locks, by inode) when it can be read, else the pid
// the last holder wrote in the file, which may be out of date.
func holderOf(f *os.File) string {
	if pid := flockHolder(f); pid == os.Getpid() {
		// A reload from a one-file store to a directory store in the same
		// directory, or back: the two layouts cannot share it.
		return "pid " + strconv.Itoa(pid) + " (this process, for its running configuration)"
	} else if pid > 0 {
		return "pid " + strconv.Itoa(pid)
	}
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
		return "pid " + strconv.Itoa(pid) + " (as the file says)"
	}
	return "a process"
}

// flockHolder finds the pid holding a FLOCK on f's inode in /proc/locks
// (lines like "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"); 0 when
// none is found.
func flockHolder(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer locks.Close()
	inode := ":" + strconv.FormatUint(st.Ino, 10)
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// A blocked waiter's line starts "1: -> FLOCK ..."; it holds nothing.
		if len(fields) < 6 || fields[1] != "FLOCK" || !strings.HasSuffix(fields[5], inode) {
			continue
		}
		// maj:min:inode; the device must be f's too.
		dev := strings.Split(fields[5], ":")
		if len(dev) != 3 || !sameDev(dev[0], dev[1], st.Dev) {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			return pid
		}
	}
	return 0
}

// sameDev compares /proc/locks' hexadecimal major and minor numbers with
// a stat's device number.
func sameDev(major, minor string, dev uint64) bool {
	ma, err1 := strconv.ParseUint(major, 16, 32)
	mi, err2 := strconv.ParseUint(minor, 16, 32)
	if err1 != nil || err2 != nil {
		return false
	}
	// Linux's encoding of a dev_t (see makedev(3)).
	devMajor := (dev>>8)&0xfff | (dev>>32)&^0xfff
	devMinor := dev&0xff | (dev>>12)&^0xff
	return ma == devMajor && mi == devMinor
}

// Covers reports whether l is the lock of the persisted path p already:
// the same lock file, even when named differently (a relative path, a
// symbolic link to its directory). A reload to such a p keeps l rather
// than meeting it as another writer's.
func (l *Lock) Covers(p string) bool {
	if l == nil || l.f == nil {
		return false
	}
	held, err1 := l.f.Stat()
	named, err2 := os.Stat(LockPath(p))
	return err1 == nil && err2 == nil && os.SameFile(held, named)
}

// Release lets another writer take the lock. The file stays: removing it
// would let a writer that opened it meanwhile lock an unlinked file while
// a third one creates and locks a new one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the only descriptor drops the flock
	l.f = nil
	if l.dir != nil {
		l.dir.Close()
		l.dir = nil
	}
	return err
}
