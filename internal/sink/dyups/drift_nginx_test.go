package dyups

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestOneDriftLogsOneLine (issue 16.9): an upstream deleted behind the
// daemon's back in a real nginx with the Lua module is repaired, and the
// repair is logged once, not again by the drift checks that follow.
func TestOneDriftLogsOneLine(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	logs := &syncBuffer{}
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{Resync: 100 * time.Millisecond, DetailReads: 3, DetailMaxReads: 12}),
		slog.New(slog.NewTextHandler(logs, nil)), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	state := upstream.State{
		"web": named("web", testenv.StartBackend(t, "web").Addr()),
		"api": named("api", testenv.StartBackend(t, "api").Addr()),
	}
	tg.Update(engine.Change{State: state})
	waitFor(t, "the first sync's 2 POSTs", func() bool { return posts(t, ngx) == 2 })
	checks := func(n int) {
		t.Helper()
		after := tg.Status().LastCheck
		for range n {
			waitFor(t, "a drift check", func() bool { return tg.Status().LastCheck.After(after) })
			after = tg.Status().LastCheck
		}
	}
	checks(2)

	req, _ := http.NewRequest(http.MethodDelete, ngx.APIURL()+"/upstream/web", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manual DELETE: %d", resp.StatusCode)
	}
	waitFor(t, "web repaired", func() bool { return posts(t, ngx) == 3 && strings.Contains(apiGet(t, ngx, "/list"), "web") })
	checks(5) // the checks after the repair find nothing more to say

	const line = "drift: nginx does not hold what it should"
	if n := strings.Count(logs.String(), line); n != 1 {
		t.Errorf("one drift logged %d times, want once:\n%s", n, logs)
	}
	if st := tg.Status(); st.DriftRepairs != 1 {
		t.Errorf("drift_repairs %d, want 1 (posts to nginx: %d)", st.DriftRepairs, posts(t, ngx))
	}
}

// TestLuaNginxShowsWhatWasPosted: whatever shape an upstream has (down,
// backup, max_conns, no keepalive, zero max_fails or fail_timeout, a
// balancing method, IPv6, many servers), the drift checks after its sync
// find nothing: a form nginx shows differently from the one posted would be
// "repaired" and logged on every check.
func TestLuaNginxShowsWhatWasPosted(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	logs := &syncBuffer{}
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{MaxAttempts: 3, DetailReads: 3, DetailMaxReads: 12}),
		slog.New(slog.NewTextHandler(logs, nil)), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := func(addr string, edit func(*upstream.Server)) upstream.Server {
		s := upstream.Server{Addr: netip.MustParseAddrPort(addr), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}
		if edit != nil {
			edit(&s)
		}
		return s
	}
	many := upstream.Upstream{Name: "many", Keepalive: 16}
	for i := range 50 {
		many.Servers = append(many.Servers, srv(fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1), nil))
	}
	state := upstream.State{
		"plain":  {Name: "plain", Servers: []upstream.Server{srv("10.0.0.1:80", nil)}, Keepalive: 16},
		"nokeep": {Name: "nokeep", Servers: []upstream.Server{srv("10.0.0.1:80", nil)}},
		"down": {Name: "down", Servers: []upstream.Server{srv("10.0.0.1:80", nil),
			srv("10.0.0.2:80", func(s *upstream.Server) { s.Down = true })}},
		"backup": {Name: "backup", Servers: []upstream.Server{srv("10.0.0.1:80", nil),
			srv("10.0.0.2:80", func(s *upstream.Server) { s.Backup = true })}},
		"zeros": {Name: "zeros", Servers: []upstream.Server{srv("10.0.0.1:80", func(s *upstream.Server) { s.MaxFails, s.FailTimeout = 0, 0 })}},
		"limits": {Name: "limits", Servers: []upstream.Server{srv("10.0.0.1:80", func(s *upstream.Server) {
			s.Weight, s.MaxFails, s.FailTimeout, s.MaxConns = 100, 10, time.Hour, 500
		})}},
		"v6":        {Name: "v6", Servers: []upstream.Server{srv("[2001:db8::1]:80", nil), srv("[::ffff:10.0.0.9]:80", nil)}},
		"leastconn": {Name: "leastconn", Servers: []upstream.Server{srv("10.0.0.1:80", nil)}, Balance: upstream.Balance{Method: upstream.LeastConn}},
		"iphash":    {Name: "iphash", Servers: []upstream.Server{srv("10.0.0.1:80", nil)}, Balance: upstream.Balance{Method: upstream.IPHash}},
		"hash": {Name: "hash", Servers: []upstream.Server{srv("10.0.0.1:80", nil)},
			Balance: upstream.Balance{Method: upstream.Hash, Key: "$request_uri", Consistent: true}},
		"Mixed.Case-1": {Name: "Mixed.Case-1", Servers: []upstream.Server{srv("10.0.0.1:80", nil)}},
		"many":         many,
	}
	for name, u := range state {
		u.Sort()
		if err := u.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		state[name] = u
	}
	ctx := context.Background()
	if err := tg.Sync(ctx, state); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := tg.Reconcile(ctx, state); err != nil {
			t.Fatal(err)
		}
	}
	if st := tg.Status(); st.DriftRepairs != 0 {
		t.Errorf("3 drift checks after the sync repaired %d upstreams (last %v); nginx shows:\n%s", st.DriftRepairs, st.Drift, apiGet(t, ngx, "/detail"))
	}
}
