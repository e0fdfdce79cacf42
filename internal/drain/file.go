// Package drain keeps the servers an operator drained by hand
// (`swallowkeeper drain` / `undrain`): a small JSON file next to the
// persisted upstream file, written atomically by the command and watched
// by the daemon, whose engine lays the marks over every state it plans
// (engine.ApplyDrains). The registry is never touched.
package drain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// PathFor is the marks file kept next to the persisted upstream file: a
// hidden name, so that no `include` glob of nginx's can pick it up. For a
// directory of upstream files (DIR/*.conf) it sits next to the directory,
// outside what nginx includes.
func PathFor(upstreamFile string) string {
	if store.IsDirGlob(upstreamFile) {
		upstreamFile = filepath.Dir(upstreamFile)
	}
	return filepath.Join(filepath.Dir(upstreamFile), "."+filepath.Base(upstreamFile)+".drains.json")
}

// DefaultPoll is how often the daemon looks at the file for a change.
const DefaultPoll = 500 * time.Millisecond

// File is the marks file.
type File struct {
	Path string
	// Poll is how often Watch stats the file; 0 is DefaultPoll. A stat
	// is cheap, and unlike a directory watch it needs no dependency and
	// sees every way the file can be replaced (rename, edit, restore).
	Poll time.Duration

	canRead func(path string) bool // nil: readable; a test sets it
}

var _ engine.DrainStore = (*File)(nil)

// doc is the file's JSON.
type doc struct {
	Drains []mark `json:"drains"`
}

type mark struct {
	Upstream string    `json:"upstream"`
	Address  string    `json:"address"`
	Since    time.Time `json:"since"`
}

// Load reads the marks. An absent file is no marks; a file that does not
// parse, or holds a mark with a bad name or address, is an error.
func (f *File) Load() ([]engine.Drain, error) {
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	var d doc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("drain: %s: %w", f.Path, err)
	}
	out := make([]engine.Drain, 0, len(d.Drains))
	for i, m := range d.Drains {
		if err := upstream.ValidName(m.Upstream); err != nil {
			return nil, fmt.Errorf("drain: %s: drains[%d]: %w", f.Path, i, err)
		}
		addr, err := ParseAddress(m.Address)
		if err != nil {
			return nil, fmt.Errorf("drain: %s: drains[%d]: %w", f.Path, i, err)
		}
		out = append(out, engine.Drain{Upstream: m.Upstream, Addr: addr, Since: m.Since})
	}
	return out, nil
}

// Save writes the marks atomically and durably, sorted, so that the same
// marks are always the same bytes.
func (f *File) Save(marks []engine.Drain) error {
	marks = slices.Clone(marks)
	slices.SortFunc(marks, func(a, b engine.Drain) int {
		if c := strings.Compare(a.Upstream, b.Upstream); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	d := doc{Drains: []mark{}}
	for _, m := range marks {
		d.Drains = append(d.Drains, mark{Upstream: m.Upstream, Address: m.Addr.String(), Since: m.Since.UTC()})
	}
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if err := store.WriteAtomic(f.Path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// Lock takes an exclusive lock that serialises the commands' read,
// change and write of the file (the daemon only reads it, and a rename
// never shows it half written). unlock releases it.
//
// The lock file is opened read-only (flock needs no more) and created
// readable by all: one created by `sudo swallowkeeper drain` is root's,
// and a mode of 0600 or a read-write open would then lock the daemon's
// own user out of draining. Whoever can read the directory can hold the
// lock, so keep it 0750 (docs/SECURITY.md).
func (f *File) Lock() (unlock func(), err error) {
	lf, err := os.OpenFile(f.Path+".lock", os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("drain: lock %s: %w", lf.Name(), err)
	}
	return func() { lf.Close() }, nil // closing releases the lock
}

// lockAndLoad takes the lock (see Lock) and reads the marks under it, for
// a command's read, change and write; the caller calls unlock when done.
func (f *File) lockAndLoad() (have []engine.Drain, unlock func(), err error) {
	unlock, err = f.Lock()
	if err != nil {
		return nil, nil, err
	}
	have, err = f.Load()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return have, unlock, nil
}

// Watch sends on changed whenever the file's identity, size or time
// changes, until ctx ends.
func (f *File) Watch(ctx context.Context, changed chan<- struct{}) {
	poll := f.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	// chmod and chown move none of the stamp's fields: readability is
	// watched beside it, so that a file made readable again is read.
	canRead := f.canRead
	if canRead == nil {
		canRead = readable
	}
	last, lastReadable := store.StampOf(f.Path), canRead(f.Path)
	// A change between the caller's first Load and the first stamp would
	// go unseen: one cue now makes the caller look again.
	select {
	case changed <- struct{}{}:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now, r := store.StampOf(f.Path), canRead(f.Path); now != last || r != lastReadable {
			last, lastReadable = now, r
			select {
			case changed <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// readable says whether path can be opened for reading now (a missing
// file counts as readable: it means no marks).
func readable(path string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	fh.Close()
	return true
}

// ParseAddress reads a server address as ip:port, by the same rules as a
// registry's address: an IP literal (IPv6 in brackets), never a host name.
func ParseAddress(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: want ip:port ([ipv6]:port): %w", s, err)
	}
	ip, err := upstream.ParseIP(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port %q is not a number", s, port)
	}
	if err := upstream.ValidPort(p); err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}
