package store

import (
	"fmt"
	"maps"
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

// BenchmarkFileSaveOneChange: one upstream of 1,000 (10 servers each, a
// 0.6 MB file) changes per Save, written through the spare and, for
// comparison, as a new file renamed in (what a filesystem without spares
// gets). cpu-ms/op is the process's CPU, the kernel's work included.
func BenchmarkFileSaveOneChange(b *testing.B) {
	for _, way := range []string{"spare", "new-file"} {
		b.Run(way, func(b *testing.B) {
			s := upstream.State{}
			for i := range 1000 {
				name := fmt.Sprintf("svc_%05d", i)
				var addrs []string
				for k := range 10 {
					addrs = append(addrs, fmt.Sprintf("10.%d.%d.%d:8080", i>>8&255, i&255, k+1))
				}
				s[name] = ups(name, addrs...)
			}
			f := New(filepath.Join(b.TempDir(), "upstreams.conf"))
			if way == "new-file" {
				f.spares.checked, f.spares.off = true, true
			}
			// The first change has no spare yet: two Saves before timing.
			for i := range 2 {
				next := maps.Clone(s)
				next["svc_00007"] = ups("svc_00007", fmt.Sprintf("10.9.9.9:%d", 9000+i%2))
				if err := f.Save(next); err != nil {
					b.Fatal(err)
				}
			}
			if way == "spare" && f.spares.off {
				b.Fatalf("no spares on the filesystem of %s: this would measure new files", f.Path)
			}
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer() // the source's copy, not the store's work
				next := maps.Clone(s)
				next["svc_00007"] = ups("svc_00007", fmt.Sprintf("10.9.9.9:%d", 9000+i%2))
				b.StartTimer()
				c0 := processCPU()
				if err := f.Save(next); err != nil {
					b.Fatal(err)
				}
				cpu += processCPU() - c0
			}
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}
