package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

func ups(name string, addrs ...string) upstream.Upstream {
	u := upstream.Upstream{Name: name}
	for _, a := range addrs {
		u.Servers = append(u.Servers, upstream.Server{Addr: netip.MustParseAddrPort(a), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second})
	}
	return u
}

func stateOf(us ...upstream.Upstream) upstream.State {
	s := upstream.State{}
	for _, u := range us {
		s[u.Name] = u
	}
	return s
}

// listing is the directory's entries with their contents.
func listing(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name()] = read(t, filepath.Join(dir, e.Name()))
	}
	return out
}

// withoutSpares is a listing without the spares (temp files stay).
func withoutSpares(l map[string]string) map[string]string {
	maps.DeleteFunc(l, func(name, _ string) bool {
		return strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".conf.spare")
	})
	return l
}

// wantFiles checks that dir holds exactly one file per upstream of s,
// named by its folded name, each exactly what RenderFile gives for it;
// besides them, only the spares of those files (no temp file, no spare of
// a file that went).
func wantFiles(t *testing.T, dir string, s upstream.State) {
	t.Helper()
	got := listing(t, dir)
	want := map[string]string{}
	for name, u := range s {
		want[upstream.FoldKey(name)+".conf"] = string(upstream.RenderFile(upstream.State{name: u}))
	}
	for name := range got {
		if conf, ok := strings.CutSuffix(strings.TrimPrefix(name, "."), ".spare"); ok && strings.HasPrefix(name, ".") {
			if _, wanted := want[conf]; !wanted {
				t.Fatalf("directory holds %s, the spare of %s, which is not wanted", name, conf)
			}
			delete(got, name)
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("directory holds %v\nwant %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}

func TestOpenPicksTheLayoutFromThePath(t *testing.T) {
	if _, ok := Open("/x/upstreams.conf").(*File); !ok {
		t.Error("a file path did not give a File")
	}
	d, ok := Open("/x/upstreams.d/*.conf").(*Dir)
	if !ok || d.Path != "/x/upstreams.d" || d.Where() != "/x/upstreams.d/*.conf" {
		t.Errorf("DIR/*.conf gave %#v", d)
	}
}

func TestDirSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "upstreams.d")
	d := NewDir(dir)
	if st, err := d.Load(); err != nil || len(st) != 0 {
		t.Fatalf("Load of a missing directory = %v, %v; want an empty state", st, err)
	}
	s := stateOf(ups("web", "10.0.0.1:80", "10.0.0.2:80"), ups("API", "10.0.1.1:80"), ups("db.main", "10.0.2.1:5432"))
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, s)
	got, err := NewDir(dir).Load()
	if err != nil || !got.Equal(s) {
		t.Fatalf("Load = %v, %v; want %v", got, err, s)
	}
}

// A single-upstream change replaces that upstream's file and no other: the
// others keep their inode and time.
func TestDirSaveWritesOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir)
	s := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.2:80"), ups("c", "10.0.0.3:80"))
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	before := map[string]Stamp{}
	for _, n := range []string{"a", "b", "c"} {
		before[n] = StampOf(filepath.Join(dir, n+".conf"))
	}
	next := maps.Clone(s)
	next["b"] = ups("b", "10.0.0.2:80", "10.0.0.9:80")
	delete(next, "c")
	next["d"] = ups("d", "10.0.0.4:80")
	if err := d.Save(next); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, next)
	if StampOf(filepath.Join(dir, "a.conf")) != before["a"] {
		t.Error("a.conf was rewritten though upstream a did not change")
	}
	if StampOf(filepath.Join(dir, "b.conf")) == before["b"] {
		t.Error("b.conf kept its stamp though upstream b changed")
	}
	// The same state again writes nothing.
	stamps := map[string]Stamp{}
	for name := range listing(t, dir) {
		stamps[name] = StampOf(filepath.Join(dir, name))
	}
	if err := d.Save(next); err != nil {
		t.Fatal(err)
	}
	for name, st := range stamps {
		if StampOf(filepath.Join(dir, name)) != st {
			t.Errorf("%s was rewritten by a Save of the same state", name)
		}
	}
}

// Names that differ only in case are one upstream to nginx: a rename
// replaces the same file, so that the directory never holds both.
func TestDirCaseOnlyRenameReplacesTheSameFile(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir)
	if err := d.Save(stateOf(ups("api", "10.0.1.1:80"))); err != nil {
		t.Fatal(err)
	}
	renamed := stateOf(ups("Api", "10.0.1.1:80"))
	if err := d.Save(renamed); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, renamed)
	if !strings.Contains(read(t, filepath.Join(dir, "api.conf")), "upstream Api {") {
		t.Fatalf("api.conf does not hold the renamed upstream:\n%s", read(t, filepath.Join(dir, "api.conf")))
	}
	err := d.Save(stateOf(ups("api", "10.0.1.1:80"), ups("API", "10.0.1.2:80")))
	if err == nil || !strings.Contains(err.Error(), "differ only in case") {
		t.Fatalf("Save of two names that fold alike = %v; want a refusal", err)
	}
	wantFiles(t, dir, renamed)
}

func TestDirLoadRefusesWhatItCannotTrust(t *testing.T) {
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"a corrupt file", "web.conf", "upstream web {\n    server 10.0.0.1:80\n", "web.conf: line"},
		{"an upstream under another name", "web.conf", "upstream api {\n    server 10.0.0.1:80;\n}\n", "holds upstream api"},
		{"two upstreams", "web.conf", "upstream web {\n    server 10.0.0.1:80;\n}\nupstream web2 {\n    server 10.0.0.2:80;\n}\n", "holds 2 upstreams (web, web2)"},
		{"an empty file", "web.conf", "", "holds no upstream"},
		{"a name in capitals", "Web.conf", "upstream Web {\n    server 10.0.0.1:80;\n}\n", "holds upstream Web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			st, err := NewDir(dir).Load()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) {
				t.Fatalf("Load = %v, %v; want an error naming %s with %q", st, err, tc.file, tc.want)
			}
		})
	}
}

// What the glob does not match is not nginx's and not ours to read; temp
// files a crash left are removed.
func TestDirLoadSkipsWhatTheGlobDoesNotMatchAndRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"web.conf":                 "upstream web {\n    server 10.0.0.1:80;\n}\n",
		"README":                   "not nginx's",
		".web.conf.tmp-123":        "upstream web {\n",
		".hidden.conf":             "upstream x {",
		"web.conf.dpkg-old":        "anything",
		".api.conf.tmp-left-crash": "",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := NewDir(dir).Load()
	if err != nil || len(st) != 1 || st["web"].Servers[0].Addr.String() != "10.0.0.1:80" {
		t.Fatalf("Load = %v, %v; want upstream web only", st, err)
	}
	got := slices.Sorted(maps.Keys(listing(t, dir)))
	want := []string{".hidden.conf", "README", "web.conf", "web.conf.dpkg-old"}
	if !slices.Equal(got, want) {
		t.Fatalf("after Load the directory holds %v, want %v (the temp files removed)", got, want)
	}
}

// A file someone else removed or changed is put back at the next full
// check, and the first Save after Load writes nothing that is already
// on disk.
func TestDirPutsBackFilesChangedBehindItsBack(t *testing.T) {
	dir := t.TempDir()
	s := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.2:80"))
	if err := NewDir(dir).Save(s); err != nil {
		t.Fatal(err)
	}
	d := NewDir(dir)
	loaded, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	stamp := StampOf(filepath.Join(dir, "a.conf"))
	if err := d.Save(loaded); err != nil {
		t.Fatal(err)
	}
	if StampOf(filepath.Join(dir, "a.conf")) != stamp {
		t.Error("the first Save after Load rewrote a file that held the same upstream")
	}
	if err := os.Remove(filepath.Join(dir, "a.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.conf"), []byte("# edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.FullCheck = time.Nanosecond // every Save is a full check
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, s)
}

// dirRefuser refuses the directory while any file in it holds bad.
type dirRefuser struct {
	dir  string
	mu   sync.Mutex
	bad  string
	seen int
}

func (r *dirRefuser) Verify(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue // as nginx's glob: temp files and spares are not read
		}
		data, err := os.ReadFile(filepath.Join(r.dir, e.Name()))
		if err != nil {
			return err
		}
		if r.bad != "" && strings.Contains(string(data), r.bad) {
			return fmt.Errorf("nginx: [emerg] refused %s", e.Name())
		}
	}
	return nil
}

// A Save the verifier refuses puts every file it touched back: the
// changed one, the removed one and the created one; a retry of the same
// state writes and verifies again.
func TestDirSaveRefusedPutsEveryTouchedFileBack(t *testing.T) {
	dir := t.TempDir()
	r := &dirRefuser{dir: dir}
	d := NewDir(dir)
	d.Verifier = r
	s := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.2:80"), ups("c", "10.0.0.3:80"))
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	before := withoutSpares(listing(t, dir))
	next := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.66:80"), ups("d", "10.0.0.4:80"))
	r.bad = "10.0.0.66"
	err := d.Save(next)
	if !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), "refused b.conf") || !strings.Contains(err.Error(), "3 file(s)") {
		t.Fatalf("Save = %v; want a verify refusal that put 3 files back", err)
	}
	if got := withoutSpares(listing(t, dir)); !maps.Equal(got, before) {
		t.Fatalf("after the refusal the directory holds %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(before)))
	}
	r.mu.Lock()
	r.bad = ""
	calls := r.seen
	r.mu.Unlock()
	if err := d.Save(next); err != nil {
		t.Fatal(err)
	}
	if r.seen != calls+1 {
		t.Fatalf("the retry ran the verifier %d times, want once", r.seen-calls)
	}
	wantFiles(t, dir, next)
}

func TestDirCheckVerifiesTheDirectoryAsItIs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.conf"), []byte("upstream web {\n    server 10.0.0.66:80;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := NewDir(dir)
	d.Verifier = &dirRefuser{dir: dir, bad: "10.0.0.66"}
	if err := d.Check(); !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), filepath.Join(dir, "*.conf")) {
		t.Fatalf("Check = %v; want a refusal naming the glob", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "web.conf")); err != nil {
		t.Fatalf("Check removed the file: %v", err)
	}
}

// BenchmarkDirSaveOneChange is the store's part of a single-instance
// change at scale, as the engine asks for it (SaveDelta): one upstream's
// file replaced among n, fsyncs included. cpu-ms/op is the process's
// CPU (user + system) per Save: the kernel's work for the replace counts,
// and it is what the scale bench's CPU per change pays.
func BenchmarkDirSaveOneChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := upstream.State{}
			for i := range n {
				name := fmt.Sprintf("svc_%05d", i)
				var addrs []string
				for k := range 10 {
					addrs = append(addrs, fmt.Sprintf("10.%d.%d.%d:8080", i>>8&255, i&255, k+1))
				}
				s[name] = ups(name, addrs...)
			}
			d := NewDir(b.TempDir())
			if err := d.Save(s); err != nil {
				b.Fatal(err)
			}
			prev := s
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer() // the source's copy, not the store's work
				next := maps.Clone(prev)
				b.StartTimer()
				c0 := processCPU()
				next["svc_00007"] = ups("svc_00007", fmt.Sprintf("10.9.9.9:%d", 9000+i%2))
				if err := d.SaveDelta(prev, next, upstream.Changes{Set: []string{"svc_00007"}}); err != nil {
					b.Fatal(err)
				}
				cpu += processCPU() - c0
				prev = next
			}
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

// SaveDelta looks only at the upstreams its diff names when prev is the
// state saved last; given any other prev it saves as Save does.
func TestDirSaveDeltaLooksOnlyAtTheDiffFromTheLastSave(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir)
	s := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.2:80"), ups("Api", "10.0.0.3:80"))
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	// b differs too, but the diff does not say so: a delta save trusts
	// the diff and leaves b.conf alone.
	next := stateOf(ups("a", "10.0.0.9:80"), ups("b", "10.0.0.8:80"), ups("api", "10.0.0.3:80"), ups("c", "10.0.0.4:80"))
	c := upstream.Changes{Set: []string{"a", "api", "c"}, Removed: []string{"Api"}}
	if err := d.SaveDelta(s, next, c); err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(next)
	want["b"] = s["b"]
	wantFiles(t, dir, want)
	// From a prev that is not the state saved last: every upstream.
	if err := d.SaveDelta(s, next, upstream.Changes{Set: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, next)
}

// A Save of many upstreams (the first at start) writes them all and
// flushes them with one syncfs before any is renamed in; it leaves no
// temp file, and a later Save of many changes does the same.
func TestDirSavesManyUpstreamsInOneBatch(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir)
	s := upstream.State{}
	for i := range 3 * batchWrites {
		name := fmt.Sprintf("svc-%02d", i)
		s[name] = ups(name, fmt.Sprintf("10.0.%d.1:80", i))
	}
	if err := d.Save(s); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, s)
	next := upstream.State{}
	for name, u := range s {
		if name < "svc-40" {
			u.Servers = append(slices.Clone(u.Servers), ups("x", "10.9.9.9:80").Servers...)
			next[name] = u
		}
	}
	if err := d.Save(next); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, next)
	if got, err := NewDir(dir).Load(); err != nil || !got.Equal(next) {
		t.Fatalf("Load after the batches = %v, %v", got, err)
	}
}

// After a Save that failed part way, the next Save looks at the disk
// again, every file the glob matches: the file of an upstream that went
// meanwhile is removed, not left for nginx to bring back at its next
// start. (Found by review; a directory where b.conf goes stands for a
// full disk.)
func TestDirSaveAfterAFailureRemovesWhatWent(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir)
	if _, err := d.Load(); err != nil {
		t.Fatal(err)
	}
	s1 := stateOf(ups("a", "10.0.0.1:80"), ups("old", "10.0.0.9:80"))
	if err := d.Save(s1); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, "b.conf")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	s2 := stateOf(ups("a", "10.0.0.1:80"), ups("b", "10.0.0.2:80"))
	if err := d.SaveDelta(s1, s2, upstream.Diff(s1, s2)); err == nil {
		t.Fatal("the write of b.conf went through a directory in its place")
	}
	if err := os.RemoveAll(blocker); err != nil { // the disk recovers
		t.Fatal(err)
	}
	// The engine tries again from the state it saved last.
	if err := d.SaveDelta(s1, s2, upstream.Diff(s1, s2)); err != nil {
		t.Fatal(err)
	}
	wantFiles(t, dir, s2)
}

// processCPU is this process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
