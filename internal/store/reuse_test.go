package store

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestSaveRendersIntoTheFileItReplaced: Save renders each file into the
// buffer of the one it last replaced. A buffer still referred to (the
// file on disk, to compare with) must never be written over: after every
// Save of a series that goes back and forth, with saves of an unchanged
// state and a file changed behind the store's back between them, the
// file holds exactly the state saved last.
func TestSaveRendersIntoTheFileItReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "upstreams.conf")
	f := New(path)
	states := make([]upstream.State, 3)
	for i := range states {
		u := upstream.Upstream{Name: "web"}
		for k := range 50 { // files of one size: each fits in the buffer of another
			u.Servers = append(u.Servers, upstream.Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), byte(k + 1)}), 80), Weight: 1, MaxFails: 1, FailTimeout: time.Second})
		}
		states[i] = upstream.State{"web": u, "api": {Name: "api", Servers: u.Servers[:3]}}
	}
	for n, i := range []int{0, 1, 1, 0, 2, 2, 0, 1, -1, 1, 2, 0} {
		if i < 0 { // someone else's edit: the next Save reads the disk
			if err := os.WriteFile(path, []byte("# edited\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := f.Save(states[i]); err != nil {
			t.Fatalf("save %d: %v", n, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := upstream.RenderFile(states[i]); !bytes.Equal(got, want) {
			t.Fatalf("save %d of state %d: the file holds\n%s\nwant\n%s", n, i, got, want)
		}
		if !bytes.Equal(f.written, got) {
			t.Fatalf("save %d of state %d: the store remembers\n%s\nas written, the file holds\n%s", n, i, f.written, got)
		}
	}
}
