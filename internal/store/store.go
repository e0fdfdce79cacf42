// Package store persists the upstream state as the nginx file that nginx
// includes, atomically and durably, so that nginx can always start from the
// last known state and a registry crash loses nothing.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// File is the persisted upstream file.
type File struct {
	Path string
	// Mode of the file; nginx workers only need to read it.
	Mode fs.FileMode
	// Verifier, when set, tests every file Save writes before Save
	// succeeds: the verify command, and in reload mode reload.test (nginx
	// -t). A refused file is replaced by the bytes it replaced, so the
	// file on disk is always one nginx accepted.
	Verifier Verifier

	mu       sync.Mutex
	renderer upstream.FileRenderer
	written  []byte // what the last Save wrote or found on disk
	spare    []byte // a rendered file nothing refers to, to render the next into
	stamp    Stamp  // the file's size and time right after
	readOnly bool   // OpenToRead: Load removes no leftovers
	spares   spares // how the file is replaced, as each of a Dir's (spare.go)
}

// Stamp tells a file's version apart without reading it: a write that
// renames a new file in changes the inode; size and time catch a rewrite
// in place. The zero Stamp is a file that does not exist.
//
// Nothing else in the daemon writes the store's file (the reload sink only
// runs the reload command). Its stamp is for writers outside it: an
// operator's edit, a configuration management run, a restore from a
// backup. Save must then put the state back, and finding out by reading
// the whole file on every Save would cost a read per change.
type Stamp struct {
	inode uint64
	size  int64
	mtime time.Time
}

// StampOf is path's Stamp now; zero when it cannot be read.
func StampOf(path string) Stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}
	}
	st := Stamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = uint64(sys.Ino)
	}
	return st
}

var (
	_ engine.Store   = (*File)(nil)
	_ engine.Checker = (*File)(nil)
)

// New returns a store for path with mode 0644.
func New(path string) *File { return &File{Path: path, Mode: 0o644} }

// Load parses the file. A missing file is an empty state (first start); a
// file that does not parse is an error naming the file and line, never an
// empty state.
//
// Load also removes temp files a crash left in the middle of a write: at
// start nothing else writes this file, so they are leftovers, and in a
// crash loop they would pile up. (Not when opened with OpenToRead.)
func (f *File) Load() (upstream.State, error) {
	if !f.readOnly {
		f.removeLeftovers()
		// What a crash left between a rename and its directory fsync is
		// made durable before it is pushed.
		if err := syncDirIfAny(filepath.Dir(f.Path)); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return upstream.State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	st, err := upstream.ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", f.Path, err)
	}
	return st, nil
}

func (f *File) removeLeftovers() {
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp-*"))
	for _, p := range left {
		os.Remove(p)
	}
	// The spare of a file that is gone: removed by hand, or a store that
	// was moved elsewhere.
	if _, err := os.Lstat(f.Path); errors.Is(err, fs.ErrNotExist) {
		os.Remove(spareOf(f.Path))
	}
}

// Save renders the state and writes it only when the bytes differ from what
// is on disk. What it wrote last is remembered with the file's size and
// time, so that an unchanged file is not read back each time, while a file
// someone else changed is still rewritten.
//
// With a Verifier, the written file is verified before Save returns. A
// refused file is replaced by the bytes that were there before (or removed
// when there was none) and Save returns an error that wraps
// engine.ErrVerifyFailed and the verifier's error. A refusal is never
// remembered as written: the next Save of the same state writes and
// verifies again, so a retry goes through once the command accepts.
func (f *File) Save(s upstream.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := f.renderer.RenderTo(f.spare, s)
	f.spare = nil
	ours := f.stamp != (Stamp{}) && StampOf(f.Path) == f.stamp // the file holds f.written
	if ours && bytes.Equal(f.written, data) {
		f.spare = data
		return nil
	}
	// before is what a refused file is replaced with.
	before, beforeErr := f.written, error(nil)
	if !ours { // someone else's file, or none: read it only then
		before, beforeErr = os.ReadFile(f.Path)
	}
	same := beforeErr == nil && bytes.Equal(before, data)
	if same && !ours {
		// Bytes this store did not see through to disk (someone else's,
		// or its own write whose directory fsync failed): made durable
		// before they count as persisted, since they are pushed next.
		if err := syncFileAndDir(f.Path); err != nil {
			f.forget()
			return fmt.Errorf("store: %w", err)
		}
	}
	if same && f.Verifier == nil {
		f.written, f.stamp = data, StampOf(f.Path)
		return nil
	}
	// Bytes already on disk that the store did not write are verified
	// like a write of its own: they were never tested.
	if !same {
		if err := f.replace(data); err != nil {
			f.forget()
			return fmt.Errorf("store: %w", err)
		}
	}
	f.written, f.stamp = data, StampOf(f.Path)
	if f.Verifier != nil {
		if err := f.Verifier.Verify(context.Background()); err != nil {
			return f.putBack(before, beforeErr, same, err)
		}
	}
	if ours && !same {
		f.spare = before // the file it held is replaced: nothing refers to it
	}
	return nil
}

// replace writes data to the file atomically and durably, its directory
// fsynced: through the spare when it can, else as a new file renamed in,
// whose predecessor becomes the spare (spares.replace). On a filesystem
// of 0.6 MB files (1,000 upstreams of 10 servers) the spare's blocks are
// written over instead of a new file's allocated and the old one's freed.
func (f *File) replace(data []byte) error {
	if err := f.spares.replace(f.Path, data, f.Mode); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(f.Path)); err != nil {
		return err
	}
	f.spares.synced()
	return nil
}

// Check verifies the file as it is on disk with the Verifier (nil
// without one). The engine calls it before it pushes the state it loaded
// at start, which no Save has verified yet. A refusal wraps
// engine.ErrVerifyFailed; the file stays, since nothing older is known.
func (f *File) Check() error {
	return check(&f.mu, f.Verifier, f.Path, "the file stays")
}

// check is Check of a store locked by mu, named where; stays says what
// is left after a refusal.
func check(mu *sync.Mutex, v Verifier, where, stays string) error {
	if v == nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	if err := v.Verify(context.Background()); err != nil {
		return fmt.Errorf("store: %s: %w: %w; %s, nothing older is known", where, engine.ErrVerifyFailed, err, stays)
	}
	return nil
}

// forget drops what Save remembers, so that the next Save reads the disk.
func (f *File) forget() { f.written, f.stamp = nil, Stamp{} }

// putBack undoes a write the verifier refused: the previous bytes go back,
// or the file goes when there was none before. It returns Save's error.
func (f *File) putBack(before []byte, beforeErr error, same bool, refusal error) error {
	var done string
	switch {
	case same:
		f.forget()
		done = "the file already held these bytes, so it stays; nothing older is known"
	case beforeErr == nil:
		if err := WriteAtomic(f.Path, before, f.Mode); err != nil {
			f.forget()
			done = "putting the previous file back failed, the refused file stays: " + err.Error()
		} else {
			f.written, f.stamp = before, StampOf(f.Path)
			done = "the previous file was put back"
		}
	case errors.Is(beforeErr, fs.ErrNotExist):
		f.forget()
		if err := os.Remove(f.Path); err != nil {
			done = "removing it failed, the refused file stays: " + err.Error()
		} else if err := syncDir(filepath.Dir(f.Path)); err != nil {
			done = "there was no file before, so it was removed (" + err.Error() + ")"
		} else {
			done = "there was no file before, so it was removed"
		}
	default:
		f.forget()
		done = "the previous file could not be read, the refused file stays: " + beforeErr.Error()
	}
	return fmt.Errorf("store: %s: %w: %w; %s", f.Path, engine.ErrVerifyFailed, refusal, done)
}

// Verifier tests the file Save has just written, before anything is
// pushed to nginx: an error means nginx would refuse to load it (for
// example `nginx -t` with an nginx.conf that includes the file). Verify is
// called with the store locked, so it must not call Save.
type Verifier interface {
	Verify(ctx context.Context) error
}

// DefaultVerifyTimeout bounds a Command without a Timeout.
const DefaultVerifyTimeout = 30 * time.Second

// maxOutput is how much of a command's output an error carries.
const maxOutput = 1024

// Verifiers is a Verifier that runs each of its own in order and fails
// with the first refusal: the verify command, then reload mode's test.
type Verifiers []Verifier

// Verify runs every verifier until one refuses.
func (vs Verifiers) Verify(ctx context.Context) error {
	for _, v := range vs {
		if err := v.Verify(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Command is a Verifier that runs a program directly (no shell) and
// passes when it exits 0. The error of a failure names the command and
// carries its output, one line per "; ", cut to about 1 KB. It serves the
// verify command and reload mode's test.
type Command struct {
	Argv    []string
	Timeout time.Duration // 0: DefaultVerifyTimeout
}

// Verify runs the command.
func (c Command) Verify(ctx context.Context) error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return errors.New("verify: no command")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.WaitDelay = time.Second // a child that keeps the output open cannot hold Save
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return fmt.Errorf("%s: %w: %s", strings.Join(c.Argv, " "), err, trimOutput(out))
}

// trimOutput makes a command's output one line fit for a log or a status
// page: lines trimmed and joined with "; ", cut after maxOutput bytes.
func trimOutput(out []byte) string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	s := strings.Join(lines, "; ")
	if len(s) > maxOutput {
		s = fmt.Sprintf("%s… (%d more bytes)", strings.ToValidUTF8(s[:maxOutput], ""), len(s)-maxOutput)
	}
	if s == "" {
		s = "no output"
	}
	return s
}

// WriteAtomic replaces path with data so that a reader, or a crash at any
// moment, sees either the old or the new complete file: a temp file in the
// same directory is written, fsynced and closed, renamed over path, and the
// directory is fsynced so the rename itself survives a power cut.
func WriteAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := writeReplace(path, data, mode); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// writeReplace is WriteAtomic without the directory's fsync, for a caller
// that replaces several files and fsyncs their directory once.
func writeReplace(path string, data []byte, mode fs.FileMode) error {
	tmp, err := writeTemp(path, data, mode, true)
	if err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}

// writeTemp writes data to a new temp file next to path, fsynced when
// sync is set, closed, and returns its name; the caller renames it.
func writeTemp(path string, data []byte, mode fs.FileMode, sync bool) (name string, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return "", fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if sync {
		if err = tmp.Sync(); err != nil {
			return "", fmt.Errorf("fsync %s: %w", tmp.Name(), err)
		}
	}
	if err = tmp.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	return tmp.Name(), nil
}

// syncDirIfAny is syncDir for a directory that may not exist yet.
func syncDirIfAny(dir string) error {
	if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// syncFileAndDir fsyncs the file p and its directory: bytes someone put
// there become durable under that name.
func syncFileAndDir(p string) error {
	fd, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	err = fd.Sync()
	fd.Close()
	if err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return syncDir(filepath.Dir(p))
}

// syncDir fsyncs a directory, so that a rename or removal in it survives
// a power cut.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
