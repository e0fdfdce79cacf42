package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// answers reports whether addr serves the listener's handler, and the
// error when not.
func answers(addr string) error {
	// A new connection each time: one kept alive could outlive a close.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// TestListenerMovesOnlyWhenTheAddressChanges: the same address keeps the
// listener as it is; a new one is opened before the old one closes, and
// one that cannot be opened leaves the old one serving; "" stops it.
func TestListenerMovesOnlyWhenTheAddressChanges(t *testing.T) {
	var logs testenv.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	l := &listener{h: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	defer l.close()
	ctx := context.Background()
	a := testenv.Addr(testenv.FreePort(t))
	if err := l.move(ctx, a, false, log); err != nil {
		t.Fatal(err)
	}
	if err := answers(a); err != nil {
		t.Fatalf("%s after move: %v", a, err)
	}
	if err := l.move(ctx, a, false, log); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "metrics listening"); n != 1 {
		t.Errorf("the same address opened the listener %d times; log:\n%s", n, logs.String())
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := l.move(ctx, taken.Addr().String(), false, log); err == nil {
		t.Errorf("move to %s, which is taken, returned no error", taken.Addr())
	}
	if err := answers(a); err != nil {
		t.Errorf("%s stopped serving after a move that failed: %v", a, err)
	}

	b := testenv.Addr(testenv.FreePort(t))
	if err := l.move(ctx, b, false, log); err != nil {
		t.Fatal(err)
	}
	if err := answers(b); err != nil {
		t.Errorf("%s after the move: %v", b, err)
	}
	if err := answers(a); err == nil {
		t.Errorf("%s still answers after the listener moved to %s", a, b)
	}
	if err := l.move(ctx, "", false, log); err != nil {
		t.Fatal(err)
	}
	if err := answers(b); err == nil {
		t.Errorf("%s still answers after metrics.listen was turned off", b)
	}
}
