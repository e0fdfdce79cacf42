package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// DirGlob is how a persisted path names a directory store: the same glob
// nginx.conf includes, `DIR/*.conf`.
const DirGlob = "*.conf"

// IsDirGlob reports whether the persisted path p is a directory store's
// glob (DIR/*.conf) rather than one file.
func IsDirGlob(p string) bool { return filepath.Base(p) == DirGlob }

// Persisted is what the daemon persists into: one file, or a directory of
// one file per upstream.
type Persisted interface {
	engine.Store
	engine.Checker
	// SetVerifier sets the command run on every version Save writes.
	SetVerifier(Verifier)
	// Where names the file or the directory, for messages.
	Where() string
}

var (
	_ Persisted = (*File)(nil)
	_ Persisted = (*Dir)(nil)
)

// Open returns the store for a configured persisted path: a Dir for
// DIR/*.conf, else a File.
func Open(p string) Persisted {
	if IsDirGlob(p) {
		return NewDir(filepath.Dir(p))
	}
	return New(p)
}

// OpenToRead is Open for a command that only reads what a daemon may be
// writing at the same moment (check, drain): its Load removes nothing,
// since a temp file there may be the running daemon's write in progress.
func OpenToRead(p string) Persisted {
	if IsDirGlob(p) {
		d := NewDir(filepath.Dir(p))
		d.readOnly = true
		return d
	}
	f := New(p)
	f.readOnly = true
	return f
}

// SetVerifier sets f's Verifier.
func (f *File) SetVerifier(v Verifier) { f.Verifier = v }

// Where is the file's path.
func (f *File) Where() string { return f.Path }

// Dir persists the state as one file per upstream in a directory that
// nginx includes with a glob (`include DIR/*.conf;`), so that a change
// writes and fsyncs the upstreams that changed, not the whole state: a
// single-instance change at 10,000 upstreams writes one small file.
//
// Each file is named after its upstream's folded name (lowercase) and
// holds exactly that upstream, rendered as File renders it. Each file is
// replaced atomically (its spare, the previous version, rewritten, fsynced
// and exchanged in, see spare.go; else a temp file, fsync, rename) and
// the directory is fsynced once per Save, after every write and removal.
// A crash in the middle of a Save leaves some upstreams at their new
// version and the others at their old one; nginx accepts any such mix,
// because every version of every file does (a primary server, no
// reserved name, a method that takes its servers) and names that differ
// only in case share one file name, so no two files can hold the same
// upstream. Temp files and spares start with a dot, which the glob does
// not match.
//
// Dir remembers what it wrote, with each file's size and time, and reads
// or rewrites only the files of the upstreams that changed; once every
// FullCheck it also looks at every file's stamp, so that a file someone
// else changed or removed is put back.
type Dir struct {
	Path string
	Mode fs.FileMode
	// Verifier, as File's, tests the whole directory after each Save
	// that wrote anything; a refusal puts back every file the Save
	// changed.
	Verifier Verifier
	// FullCheck is how often Save stats every file rather than only the
	// changed ones; 0 is DefaultFullCheck.
	FullCheck time.Duration

	mu       sync.Mutex
	last     upstream.State      // of the last successful Save or Load
	files    map[string]*dirFile // by file stem: the folded upstream name
	gen      uint64              // of the current Save, to find what it did not visit
	lastFull time.Time
	spares   spares // how each file is replaced (spare.go)
	readOnly bool   // OpenToRead: Load removes no leftovers
}

// DefaultFullCheck is how often a Dir looks at every file's stamp.
const DefaultFullCheck = time.Minute

type dirFile struct {
	name  string            // the upstream's name, as the file holds it
	u     upstream.Upstream // what data renders; zero Name: known only by its bytes
	data  []byte
	stamp Stamp
	gen   uint64
}

// NewDir returns a directory store for dir with mode 0644 files.
func NewDir(dir string) *Dir { return &Dir{Path: dir, Mode: 0o644} }

// SetVerifier sets d's Verifier.
func (d *Dir) SetVerifier(v Verifier) { d.Verifier = v }

// Where names the glob nginx includes.
func (d *Dir) Where() string { return filepath.Join(d.Path, DirGlob) }

func (d *Dir) fileOf(stem string) string { return filepath.Join(d.Path, stem+".conf") }

// Load reads every file the glob matches. A missing or empty directory
// is an empty state; a file that does not parse, or that holds anything
// but the one upstream its name says, is an error naming the file, never
// an empty state. Load also removes the temp files a crash left, and
// spares whose file is gone.
func (d *Dir) Load() (upstream.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.readOnly {
		d.removeLeftovers()
		// What a crash left between a rename or exchange and the
		// directory's fsync is made durable before it is pushed.
		if err := syncDirIfAny(d.Path); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	d.files = nil
	entries, err := os.ReadDir(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return upstream.State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	st := upstream.State{}
	files := map[string]*dirFile{}
	for _, e := range entries {
		stem, ok := strings.CutSuffix(e.Name(), ".conf")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue // not matched by the glob nginx includes
		}
		p := d.fileOf(stem)
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		one, err := upstream.ParseFile(data)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", p, err)
		}
		names := one.Names()
		if len(names) != 1 || upstream.FoldKey(names[0]) != stem {
			return nil, fmt.Errorf("store: %s: holds %s; each file here holds only the upstream it is named after (its name in lowercase, then .conf): move other files out of %s, which nginx includes whole",
				p, describeNames(names), d.Path)
		}
		u := one[names[0]]
		st[u.Name] = u
		files[stem] = &dirFile{name: u.Name, u: u, data: data, stamp: StampOf(p)}
	}
	d.files, d.last = files, st
	return st, nil
}

func describeNames(names []string) string {
	switch len(names) {
	case 0:
		return "no upstream"
	case 1:
		return "upstream " + names[0]
	}
	return fmt.Sprintf("%d upstreams (%s)", len(names), strings.Join(names, ", "))
}

func (d *Dir) removeLeftovers() {
	left, _ := filepath.Glob(filepath.Join(d.Path, ".*.conf.tmp-*"))
	for _, p := range left {
		os.Remove(p)
	}
	// Spares of files that are gone (a crash between the two removals).
	spares, _ := filepath.Glob(filepath.Join(d.Path, ".*.conf.spare"))
	for _, sp := range spares {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(sp), "."), ".spare")
		if _, err := os.Lstat(filepath.Join(d.Path, name)); errors.Is(err, fs.ErrNotExist) {
			os.Remove(sp)
		}
	}
}

// dirChange is one file a Save replaces or removes, with what it held
// before, for a refusal to put back.
type dirChange struct {
	stem      string
	before    []byte // nil: there was no file
	beforeErr error  // reading the file before failed (not absence)
	after     *dirFile
}

// Save writes the files of the upstreams that changed since the last
// Save (or Load), removes the files of the upstreams that went, and
// fsyncs the directory once. With a Verifier, as for File: a refusal puts
// back every file this Save changed and returns an error that wraps
// engine.ErrVerifyFailed.
func (d *Dir) Save(s upstream.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.save(s, nil)
}

// SaveDelta is Save told how s differs from prev (c, the Diff of prev
// and s): when prev is the state of the last successful Save, it looks
// only at the upstreams c names, not at every upstream of s. Otherwise,
// and once every FullCheck, it saves as Save does.
func (d *Dir) SaveDelta(prev, s upstream.State, c upstream.Changes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.files == nil || !upstream.SameState(prev, d.last) || d.fullDue() {
		return d.save(s, nil)
	}
	return d.save(s, append(slices.Clone(c.Set), c.Removed...))
}

var _ engine.DeltaSaver = (*Dir)(nil)

func (d *Dir) fullDue() bool {
	every := d.FullCheck
	if every <= 0 {
		every = DefaultFullCheck
	}
	return time.Since(d.lastFull) >= every
}

// save saves s; only, when not nil, names every upstream in which s may
// differ from the last state saved, and save looks at no other.
func (d *Dir) save(s upstream.State, only []string) error {
	if d.files == nil {
		// Nothing remembered (no Load, or a Save that failed part way):
		// look at the disk, every file the glob matches, so that one of
		// an upstream that went is removed too.
		if err := d.listDisk(); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		d.lastFull = time.Time{}
		only = nil
	}
	full := only == nil && d.fullDue()
	d.gen++
	var changes []dirChange
	adopted := false // a file found on disk as it should be, not known to be ours
	stage := func(name string, u upstream.Upstream) error {
		stem := upstream.FoldKey(name)
		f := d.files[stem]
		if f != nil && f.gen == d.gen {
			return fmt.Errorf("store: %s: upstreams %s and %s differ only in case; nginx takes them for one", d.Path, f.name, name)
		}
		if f != nil {
			f.gen = d.gen // visited: not removed below
		}
		if f != nil && f.name == name && f.u.Name != "" && f.u.Equal(u) && (!full || StampOf(d.fileOf(stem)) == f.stamp) {
			return nil
		}
		data := upstream.RenderFile(upstream.State{name: u})
		c := dirChange{stem: stem, after: &dirFile{name: name, u: u, data: data, gen: d.gen}}
		if f != nil && StampOf(d.fileOf(stem)) == f.stamp {
			c.before = f.data // ours, as we left it
			if bytes.Equal(f.data, data) {
				f.name, f.u = name, u
				return nil
			}
		} else {
			c.before, c.beforeErr = readIfAny(d.fileOf(stem))
		}
		if c.beforeErr == nil && bytes.Equal(c.before, data) && d.Verifier == nil {
			c.after.stamp = StampOf(d.fileOf(stem))
			d.files[stem] = c.after
			adopted = true
			return nil
		}
		changes = append(changes, c)
		return nil
	}
	remove := func(stem string, f *dirFile) {
		if f.gen == d.gen {
			return // visited: written, or unchanged
		}
		c := dirChange{stem: stem}
		c.before, c.beforeErr = readIfAny(d.fileOf(stem))
		if c.before == nil && c.beforeErr == nil {
			delete(d.files, stem) // gone already
			return
		}
		changes = append(changes, c)
	}
	if only == nil {
		for name, u := range s {
			if err := stage(name, u); err != nil {
				return err
			}
		}
		if full {
			d.lastFull = time.Now()
		}
		for stem, f := range d.files {
			remove(stem, f)
		}
	} else {
		for _, name := range only {
			if u, ok := s[name]; ok {
				if err := stage(name, u); err != nil {
					return err
				}
			}
		}
		for _, name := range only {
			if _, ok := s[name]; !ok {
				if f := d.files[upstream.FoldKey(name)]; f != nil {
					remove(upstream.FoldKey(name), f)
				}
			}
		}
	}
	if len(changes) == 0 {
		// A file taken as it is may be a write of ours whose directory
		// fsync failed: durable before it counts as persisted (apply
		// fsyncs the directory when there are changes).
		if adopted {
			if err := syncDir(d.Path); err != nil {
				d.files = nil
				return fmt.Errorf("store: %w", err)
			}
			d.synced()
		}
		d.last = s
		return nil
	}
	// In name order, so that a run of Saves touches files in a stable
	// order (and tests can follow it).
	slices.SortFunc(changes, func(a, b dirChange) int { return strings.Compare(a.stem, b.stem) })
	for i := 1; i < len(changes); i++ {
		if a, b := changes[i-1], changes[i]; a.stem == b.stem {
			return fmt.Errorf("store: %s: upstreams %s and %s differ only in case; nginx takes them for one", d.Path, a.after.name, b.after.name)
		}
	}
	if err := d.apply(changes); err != nil {
		d.files = nil // read the disk again next time
		return fmt.Errorf("store: %w", err)
	}
	if d.Verifier != nil {
		if err := d.Verifier.Verify(context.Background()); err != nil {
			return d.putBack(changes, err)
		}
	}
	d.last = s
	return nil
}

// listDisk remembers every file the glob matches, known by its name
// only: a Save reads, compares and rewrites or removes each.
func (d *Dir) listDisk() error {
	d.files = map[string]*dirFile{}
	entries, err := os.ReadDir(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if stem, ok := strings.CutSuffix(e.Name(), ".conf"); ok && !strings.HasPrefix(e.Name(), ".") {
			d.files[stem] = &dirFile{} // no stamp: never taken for ours as it is
		}
	}
	return nil
}

// apply writes or removes each change's file, then fsyncs the directory
// once, and records what is on disk now.
func (d *Dir) apply(changes []dirChange) error {
	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return err
	}
	writes := 0
	for _, c := range changes {
		if c.after != nil {
			writes++
		}
	}
	if writes >= batchWrites {
		return d.applyBatch(changes)
	}
	for _, c := range changes {
		p := d.fileOf(c.stem)
		if c.after == nil {
			if err := d.remove(c.stem); err != nil {
				return err
			}
			continue
		}
		if err := d.replace(p, c.after.data); err != nil {
			return err
		}
		c.after.stamp = StampOf(p)
		d.files[c.stem] = c.after
	}
	if err := syncDir(d.Path); err != nil {
		return err
	}
	d.synced()
	return nil
}

// replace writes data to the file p atomically and durably (the
// directory's fsync is the caller's, then synced): see spares.replace.
func (d *Dir) replace(p string, data []byte) error { return d.spares.replace(p, data, d.Mode) }

// synced records a successful fsync of the directory.
func (d *Dir) synced() { d.spares.synced() }

// remove removes the file of stem and forgets it (the directory's fsync
// is the caller's).
func (d *Dir) remove(stem string) error {
	if err := os.Remove(d.fileOf(stem)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	os.Remove(spareOf(d.fileOf(stem))) // outside the glob: a failure is harmless
	delete(d.files, stem)
	return nil
}

// batchWrites is how many files a Save writes before it flushes them
// with one syncfs rather than one fsync each: the first Save of thousands
// of upstreams would otherwise wait for thousands of fsyncs.
const batchWrites = 16

// applyBatch is apply for many writes: every temp file is written, one
// syncfs makes them all durable, and only then are they renamed in, so
// that a crash leaves each file old or new and complete, as apply does.
func (d *Dir) applyBatch(changes []dirChange) (err error) {
	temps := make([]string, len(changes))
	defer func() {
		for _, t := range temps {
			if t != "" {
				os.Remove(t) // not renamed in: an error cut the batch short
			}
		}
	}()
	for i, c := range changes {
		if c.after == nil {
			continue
		}
		if temps[i], err = writeTemp(d.fileOf(c.stem), c.after.data, d.Mode, false); err != nil {
			return err
		}
	}
	if err := syncFS(d.Path); err != nil {
		return err
	}
	for i, c := range changes {
		p := d.fileOf(c.stem)
		if c.after == nil {
			if err := d.remove(c.stem); err != nil {
				return err
			}
			continue
		}
		if err := os.Rename(temps[i], p); err != nil {
			return fmt.Errorf("rename %s to %s: %w", temps[i], p, err)
		}
		temps[i] = ""
		c.after.stamp = StampOf(p)
		d.files[c.stem] = c.after
	}
	if err := syncDir(d.Path); err != nil {
		return err
	}
	d.synced()
	return nil
}

// syncFS flushes the filesystem that holds dir (syncfs(2)).
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// putBack undoes the changes of a Save the verifier refused and returns
// Save's error.
func (d *Dir) putBack(changes []dirChange, refusal error) error {
	var undo []dirChange
	failed := 0
	for _, c := range changes {
		if c.beforeErr != nil {
			failed++ // unreadable before: what this Save wrote stays
			continue
		}
		back := dirChange{stem: c.stem}
		if c.before != nil {
			back.after = &dirFile{data: c.before} // known by its bytes only
		}
		undo = append(undo, back)
	}
	done := fmt.Sprintf("the previous version of the %d file(s) it changed was put back", len(undo))
	if err := d.apply(undo); err != nil {
		d.files = nil
		done = "putting the previous files back failed, the refused files stay: " + err.Error()
	} else if failed > 0 {
		d.files = nil
		done += fmt.Sprintf("; %d file(s) could not be read before and stay as written", failed)
	}
	// What was put back is known by its bytes only (no upstream): the
	// next Save of the same state renders and writes it again, and
	// verifies again, so a retry goes through once the command accepts.
	return fmt.Errorf("store: %s: %w: %w; %s", d.Where(), engine.ErrVerifyFailed, refusal, done)
}

// Check verifies the directory as it is with the Verifier (nil without
// one), as File's Check.
func (d *Dir) Check() error {
	return check(&d.mu, d.Verifier, d.Where(), "the files stay")
}

// readIfAny reads p; a missing file is nil data and no error.
func readIfAny(p string) ([]byte, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{} // an empty file is a file
	}
	return data, nil
}
