package store

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// refuser is a fake verify command: it reads the file as nginx -t would
// and refuses it while it holds bad; every file it was shown is kept.
type refuser struct {
	path string
	mu   sync.Mutex
	bad  string // "" accepts everything
	seen []string
}

func (r *refuser) Verify(context.Context) error {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, string(data))
	if r.bad != "" && strings.Contains(string(data), r.bad) {
		return errors.New(`nginx: [emerg] duplicate upstream "web"`)
	}
	return nil
}

func (r *refuser) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *refuser) accept() {
	r.mu.Lock()
	r.bad = ""
	r.mu.Unlock()
}

func withWeb() upstream.State {
	s := sample()
	s["web2"] = upstream.Upstream{Name: "web2", Servers: []upstream.Server{
		{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second},
	}}
	return s
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A file the verify command refuses is replaced by the one it replaced,
// and Save says why; the refusal is not cached: the same state is written
// and verified again on the next Save, and goes through once the command
// accepts it.
func TestSaveRefusedByTheVerifierPutsThePreviousFileBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	v := &refuser{path: path, bad: "upstream web2"}
	f := New(path)
	f.Verifier = v
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	good := read(t, path)
	if v.calls() != 1 || v.seen[0] != good {
		t.Fatalf("the first write was verified %d times (%q), want once, on the written file", v.calls(), v.seen)
	}

	for try := 1; try <= 2; try++ {
		err := f.Save(withWeb())
		if err == nil {
			t.Fatalf("try %d: a refused file was saved", try)
		}
		if !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), `duplicate upstream "web"`) ||
			!strings.Contains(err.Error(), "put back") || !strings.Contains(err.Error(), path) {
			t.Fatalf("try %d: Save = %v; want ErrVerifyFailed naming the file, the command's output and the restore", try, err)
		}
		if got := read(t, path); got != good {
			t.Fatalf("try %d: after the refusal the file holds:\n%s\nwant the previous one:\n%s", try, got, good)
		}
		if v.calls() != 1+try || !strings.Contains(v.seen[try], "upstream web2") {
			t.Fatalf("try %d: verifier saw %d files, the last %q; want the new file verified on every try", try, v.calls(), v.seen[len(v.seen)-1])
		}
		if st, err := f.Load(); err != nil || !st.Equal(sample()) {
			t.Fatalf("try %d: Load after the refusal = %v, %v; want the previous state", try, st.Names(), err)
		}
	}
	// The previous state again: the file already holds it, nothing to do.
	if err := f.Save(sample()); err != nil || v.calls() != 3 {
		t.Fatalf("Save of the state on disk = %v after %d verifications; want no write and no verification", err, v.calls())
	}

	v.accept() // the operator fixed nginx.conf
	if err := f.Save(withWeb()); err != nil {
		t.Fatalf("Save once the command accepts = %v", err)
	}
	if got := read(t, path); !strings.Contains(got, "upstream web2") || v.calls() != 4 {
		t.Fatalf("after the fix the file holds (after %d verifications):\n%s", v.calls(), got)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "upstreams.conf" && e.Name() != ".upstreams.conf.spare" {
			t.Fatalf("%s left behind", e.Name())
		}
	}
}

// With no file before, a refused first write leaves no file: Save leaves
// the disk as it found it, and Load then gives the empty state it gave
// before.
func TestSaveRefusedFirstWriteLeavesNoFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	v := &refuser{path: path, bad: "upstream web"}
	f := New(path)
	f.Verifier = v
	err := f.Save(sample())
	if !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("Save = %v; want ErrVerifyFailed saying the new file was removed", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused file is still there (%v)", err)
	}
	if v.calls() != 1 {
		t.Fatalf("verified %d times", v.calls())
	}
	if st, err := f.Load(); err != nil || len(st) != 0 {
		t.Fatalf("Load = %v, %v; want the empty state", st, err)
	}
}

// A file someone else wrote with exactly the bytes Save would write was
// never verified by the store: it is verified before Save reports success,
// and a refusal there leaves it (there is nothing older to put back) and
// is not remembered as written.
func TestSaveVerifiesIdenticalBytesItDidNotWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := New(path).Save(sample()); err != nil { // another writer
		t.Fatal(err)
	}
	v := &refuser{path: path, bad: "upstream web"}
	f := New(path)
	f.Verifier = v
	for try := 1; try <= 2; try++ {
		err := f.Save(sample())
		if !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), "stays") {
			t.Fatalf("try %d: Save = %v; want ErrVerifyFailed saying the refused file stays", try, err)
		}
		if v.calls() != try {
			t.Fatalf("try %d: verified %d times", try, v.calls())
		}
	}
	v.accept()
	if err := f.Save(sample()); err != nil || v.calls() != 3 {
		t.Fatalf("Save = %v after %d verifications", err, v.calls())
	}
	if err := f.Save(sample()); err != nil || v.calls() != 3 {
		t.Fatalf("a second identical Save = %v after %d verifications; want no new one", err, v.calls())
	}
}

// A refused write puts back the bytes that were on disk before it, also
// when they were not the store's own.
func TestSaveRefusedPutsBackAFileSomeoneElseWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	f := New(path)
	if err := f.Save(sample()); err != nil {
		t.Fatal(err)
	}
	theirs := "# theirs\nupstream other {\n    server 10.9.9.9:80;\n}\n"
	if err := os.WriteFile(path, []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	f.Verifier = &refuser{path: path, bad: "upstream web2"}
	if err := f.Save(withWeb()); !errors.Is(err, engine.ErrVerifyFailed) {
		t.Fatalf("Save = %v", err)
	}
	if got := read(t, path); got != theirs {
		t.Fatalf("after the refusal the file holds:\n%s\nwant what was there:\n%s", got, theirs)
	}
}

func TestCommandVerifier(t *testing.T) {
	ok := Command{Argv: []string{"sh", "-c", "exit 0"}}
	if err := ok.Verify(context.Background()); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	bad := Command{Argv: []string{"sh", "-c", "echo '  nginx: [emerg] duplicate upstream \"web\"' >&2; echo 'test failed'; head -c 10000 /dev/zero | tr '\\0' x; exit 1"}}
	err := bad.Verify(context.Background())
	if err == nil {
		t.Fatal("exit 1 passed")
	}
	msg := err.Error()
	for _, want := range []string{"sh -c", "exit status 1", `nginx: [emerg] duplicate upstream "web"; test failed`, "more bytes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %.300q lacks %q", msg, want)
		}
	}
	if len(msg) > 3000 {
		t.Errorf("error is %d bytes; the output should be cut", len(msg))
	}

	start := time.Now()
	hung := Command{Argv: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond}
	err = hung.Verify(context.Background())
	if err == nil || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("hung command: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a hung command held Save for %v", took)
	}
	if err := (Command{}).Verify(context.Background()); err == nil {
		t.Fatal("an empty command passed")
	}
}

// TestCheckVerifiesTheFileAsItIs: Check runs the verifier on the file on
// disk and changes nothing, whatever the answer; without a verifier it
// passes.
func TestCheckVerifiesTheFileAsItIs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := New(path).Save(withWeb()); err != nil {
		t.Fatal(err)
	}
	before := read(t, path)
	if err := New(path).Check(); err != nil {
		t.Fatalf("Check without a verifier: %v", err)
	}
	v := &refuser{path: path, bad: "upstream web2"}
	f := New(path)
	f.Verifier = v
	err := f.Check()
	if !errors.Is(err, engine.ErrVerifyFailed) || !strings.Contains(err.Error(), `duplicate upstream "web"`) {
		t.Fatalf("Check = %v, want the refusal", err)
	}
	if v.calls() != 1 || read(t, path) != before {
		t.Fatalf("Check ran the verifier %d times and left:\n%s", v.calls(), read(t, path))
	}
	v.accept()
	if err := f.Check(); err != nil {
		t.Fatalf("Check once accepted: %v", err)
	}
}

// TestVerifiersRunInOrderUntilOneRefuses: the verify command runs before
// reload mode's test, and a refusal by the first spares the second.
func TestVerifiersRunInOrderUntilOneRefuses(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	step := func(name string, code int) Command {
		return Command{Argv: []string{"sh", "-c", "echo " + name + " >> " + log + "; exit " + string(rune('0'+code))}}
	}
	if err := (Verifiers{step("verify", 0), step("test", 0)}).Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := (Verifiers{step("verify", 1), step("test", 0)}).Verify(context.Background())
	if err == nil || !strings.Contains(err.Error(), "echo verify") {
		t.Fatalf("Verify = %v, want the first command's refusal", err)
	}
	if got := read(t, log); got != "verify\ntest\nverify\n" {
		t.Fatalf("commands ran: %q", got)
	}
}
