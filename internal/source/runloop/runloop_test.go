package runloop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
)

func TestUsableWaitsForTheEndWhenTheOptionsAreNot(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if !Usable(t.Context(), log, nil) {
		t.Fatal("nil error: not usable")
	}
	if buf.Len() != 0 {
		t.Fatalf("usable options logged %q", buf.String())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan bool)
	go func() { done <- Usable(ctx, log, errors.New("etcd: no endpoints")) }()
	select {
	case ok := <-done:
		t.Fatalf("returned %v before ctx ended", ok)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if <-done {
		t.Fatal("unusable options reported usable")
	}
	if !strings.Contains(buf.String(), "unusable options; sending nothing") || !strings.Contains(buf.String(), "etcd: no endpoints") {
		t.Fatalf("log %q does not say why", buf.String())
	}
}

func TestConnectRetriesUntilOpenSucceeds(t *testing.T) {
	var delays []time.Duration
	calls := 0
	c, ok := Connect(t.Context(), backoff.New(time.Millisecond, 2*time.Millisecond),
		func() (string, error) {
			if calls++; calls < 3 {
				return "", errors.New("refused")
			}
			return "client", nil
		},
		func(err error, d time.Duration) { delays = append(delays, d) })
	if !ok || c != "client" || calls != 3 || len(delays) != 2 {
		t.Fatalf("got %q %v after %d calls and delays %v, want client true after 3 calls and 2 delays", c, ok, calls, delays)
	}
}

func TestConnectGivesUpWhenCtxEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	failures := 0
	c, ok := Connect(ctx, backoff.New(time.Hour, time.Hour),
		func() (*int, error) { n := 1; return &n, errors.New("refused") },
		func(error, time.Duration) { failures++; cancel() })
	if ok || c != nil || failures != 1 {
		t.Fatalf("got %v %v after %d failures, want nil false after 1", c, ok, failures)
	}
}

type validator struct{ err error }

func (v validator) Validate() error { return v.err }

func TestCheckWantsAddressesThenValidOptions(t *testing.T) {
	bad := errors.New("etcd: dial timeout 0s: want a positive duration")
	for _, tt := range []struct {
		addrs []string
		opt   validator
		want  string
	}{
		{nil, validator{}, "etcd: no endpoints"},
		{nil, validator{bad}, "etcd: no endpoints"},
		{[]string{"127.0.0.1:2379"}, validator{bad}, bad.Error()},
		{[]string{"127.0.0.1:2379"}, validator{}, ""},
	} {
		err := Check("etcd", "endpoints", tt.addrs, tt.opt)
		if got := fmt.Sprint(err); (err == nil) != (tt.want == "") || err != nil && got != tt.want {
			t.Errorf("Check(%v, %v) = %v, want %q", tt.addrs, tt.opt.err, err, tt.want)
		}
	}
}

func TestTreeNamesTheOptionAtFault(t *testing.T) {
	good := Tree{Kind: "zookeeper", Layout: "curator", Offered: []layout.Layout{layout.Curator, layout.Plain},
		RootName: "root", Root: "/services", RootNoun: "znode", TimeoutName: "session timeout", Timeout: time.Second}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Tree)
		want string
	}{
		{"layout not offered", func(t *Tree) { t.Layout = "upsync" }, "zookeeper: "},
		{"root", func(t *Tree) { t.Root = "/a//b" }, `zookeeper: root "/a//b": `},
		{"timeout", func(t *Tree) { t.Timeout = 0 }, "zookeeper: session timeout 0s: want a positive duration"},
		{"resync", func(t *Tree) { t.Resync = -time.Second }, "zookeeper: resync -1s: want 0 (off) or a positive period"},
	} {
		tr := good
		tc.edit(&tr)
		err := tr.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error starting %q", tc.name, err, tc.want)
		}
	}
}
