package layout

import (
	"context"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// The Publisher sends a snapshot only when it differs from the last one
// sent, a change of Doubt alone included (the engine must learn that a
// doubt cleared), and reports a dropped entry once while it stays dropped.
func TestPublisherSendsChangesOnly(t *testing.T) {
	var reported []registry.Dropped
	sent := 0
	p := Publisher{Report: func(d registry.Dropped) { reported = append(reported, d) }, Sent: func() { sent++ }}
	out := make(chan engine.Snapshot, 10)
	bad := registry.Dropped{Service: "web", Instance: "web-1", Reason: "bad port"}
	steps := []struct {
		name string
		snap engine.Snapshot
		send bool
	}{
		{"first", engine.Snapshot{Services: 1, Dropped: []registry.Dropped{bad}}, true},
		{"same again", engine.Snapshot{Services: 1, Dropped: []registry.Dropped{bad}}, false},
		{"doubted", engine.Snapshot{Services: 1, Dropped: []registry.Dropped{bad}, Doubt: "no leader"}, true},
		{"still doubted", engine.Snapshot{Services: 1, Dropped: []registry.Dropped{bad}, Doubt: "no leader"}, false},
		{"doubt cleared", engine.Snapshot{Services: 1, Dropped: []registry.Dropped{bad}}, true},
		{"services changed", engine.Snapshot{Services: 2, Dropped: []registry.Dropped{bad}}, true},
		{"drop gone", engine.Snapshot{Services: 2}, true},
		{"drop back", engine.Snapshot{Services: 2, Dropped: []registry.Dropped{bad}}, true},
	}
	for i, st := range steps {
		if !p.Publish(context.Background(), out, st.snap) {
			t.Fatalf("%s: Publish reported an ended context", st.name)
		}
		select {
		case got := <-out:
			if !st.send {
				t.Fatalf("%s: sent %+v, want nothing sent (same as the last one)", st.name, got)
			}
			if got.Doubt != st.snap.Doubt || got.Services != st.snap.Services {
				t.Fatalf("%s: sent %+v, want %+v", st.name, got, st.snap)
			}
		default:
			if st.send {
				t.Fatalf("%s (step %d): nothing sent, want %+v", st.name, i, st.snap)
			}
		}
	}
	if !p.HasSent() || sent != 6 {
		t.Fatalf("HasSent %v, Sent called %d times; want true, 6", p.HasSent(), sent)
	}
	// Reported at the first step and again when it came back after going.
	if len(reported) != 2 || reported[0] != bad || reported[1] != bad {
		t.Fatalf("reported %v, want %v twice", reported, bad)
	}
}

// Publish gives up when ctx ends before the engine takes the snapshot.
func TestPublisherStopsWithContext(t *testing.T) {
	var p Publisher
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if p.Publish(ctx, make(chan engine.Snapshot), engine.Snapshot{Services: 1}) {
		t.Fatal("Publish reported true with an ended context and no reader")
	}
	if p.HasSent() {
		t.Fatal("HasSent is true though nothing was taken")
	}
}
