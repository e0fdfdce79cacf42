package store

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

func sample() upstream.State {
	u := upstream.Upstream{Name: "web", Keepalive: 8, Servers: []upstream.Server{
		{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, MaxFails: 2, FailTimeout: 5 * time.Second},
	}}
	return upstream.State{"web": u}
}

func TestLoadMissingFileIsEmptyState(t *testing.T) {
	st, err := New(filepath.Join(t.TempDir(), "absent.conf")).Load()
	if err != nil || st == nil || len(st) != 0 {
		t.Fatalf("Load = %v, %v; want an empty state", st, err)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	f := New(path)
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(sample()) {
		t.Fatalf("loaded %v", got)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

func TestSaveSkipsIdenticalContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	f := New(path)
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if !fi.ModTime().Equal(old) {
		t.Fatalf("identical save rewrote the file (mtime %v, want %v)", fi.ModTime(), old)
	}
}

// Save remembers what it wrote, but a file someone changed or removed
// behind its back is written again, even when the state did not change.
func TestSaveRewritesAFileChangedBehindItsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	f := New(path)
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	for _, damage := range []func() error{
		func() error { return os.WriteFile(path, []byte("upstream web { server 6.6.6.6:80; }\n"), 0o644) },
		func() error { return os.WriteFile(path, append([]byte(nil), want[:len(want)-2]...), 0o644) },
		func() error { return os.Remove(path) },
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
		if err := f.Save(sample()); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(want) {
			t.Fatalf("after the file was changed, Save left:\n%s\nwant:\n%s", got, want)
		}
	}
}

func TestLoadCorruptFileIsAnErrorNamingFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	os.WriteFile(path, []byte("upstream web {\n  server 10.0.0.1:80;\n  server 10.0\n"), 0o644)
	st, err := New(path).Load()
	if err == nil {
		t.Fatalf("corrupt file loaded as %v", st)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("error %q does not name the file and line 3", err)
	}
}

func TestSaveIntoMissingDirectoryFailsWithoutTouchingAnything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "upstreams.conf")
	if err := New(path).Save(sample()); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Save = %v", err)
	}
}

func TestLoadRemovesTempFilesACrashLeft(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "upstreams.conf")
	left := filepath.Join(dir, ".upstreams.conf.tmp-12345")
	other := filepath.Join(dir, ".other.conf.tmp-1")
	for _, p := range []string{left, other} {
		if err := os.WriteFile(p, []byte("upstream half {"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(path).Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("leftover %s still there (%v)", left, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another file's temp was removed: %v", err)
	}
}
