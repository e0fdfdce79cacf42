// Package store persists the upstream state as the nginx file that nginx
// includes, atomically and durably, so that nginx can always start from the
// last known state and a registry crash loses nothing.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

	mu       sync.Mutex
	renderer upstream.FileRenderer
	written  []byte    // what the last Save wrote or found on disk
	stamp    fileStamp // the file's size and time right after
}

// fileStamp tells whether the file is still the one Save wrote: every
// write renames a new file in, so the inode changes with any replacement;
// size and time catch a rewrite in place.
type fileStamp struct {
	inode uint64
	size  int64
	mtime time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = uint64(sys.Ino)
	}
	return st
}

var _ engine.Store = (*File)(nil)

// New returns a store for path with mode 0644.
func New(path string) *File { return &File{Path: path, Mode: 0o644} }

// Load parses the file. A missing file is an empty state (first start); a
// file that does not parse is an error naming the file and line, never an
// empty state.
//
// Load also removes temp files a crash left in the middle of a write: at
// start nothing else writes this file, so they are leftovers, and in a
// crash loop they would pile up.
func (f *File) Load() (upstream.State, error) {
	f.removeLeftovers()
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
}

// Save renders the state and writes it only when the bytes differ from what
// is on disk. What it wrote last is remembered with the file's size and
// time, so that an unchanged file is not read back each time, while a file
// someone else changed is still rewritten.
func (f *File) Save(s upstream.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := f.renderer.Render(s)
	ours := f.stamp != (fileStamp{}) && stampOf(f.Path) == f.stamp // the file holds f.written
	if ours && bytes.Equal(f.written, data) {
		return nil
	}
	if !ours { // someone else's file, or none: read it only then
		if old, err := os.ReadFile(f.Path); err == nil && bytes.Equal(old, data) {
			f.written, f.stamp = data, stampOf(f.Path)
			return nil
		}
	}
	if err := WriteAtomic(f.Path, data, f.Mode); err != nil {
		f.written = nil
		return fmt.Errorf("store: %w", err)
	}
	f.written, f.stamp = data, stampOf(f.Path)
	return nil
}

// WriteAtomic replaces path with data so that a reader, or a crash at any
// moment, sees either the old or the new complete file: a temp file in the
// same directory is written, fsynced and closed, renamed over path, and the
// directory is fsynced so the rename itself survives a power cut.
func WriteAtomic(path string, data []byte, mode fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err = tmp.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
