package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestStatusShowsBalanceAndKnownService: an upstream's balancing method
// (when not round robin) is in /status, in `swallowkeeper status` and on
// the page; an upstream whose service is unknown (loaded from the file at
// start, where it is not recorded) prints no empty "service" field; the
// page's reload row says what the reload did.
func TestStatusShowsBalanceAndKnownService(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := func(addr string) upstream.Server {
		return upstream.Server{Addr: netip.MustParseAddrPort(addr), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}
	}
	web := upstream.Upstream{Name: "web", Keepalive: 64, Balance: upstream.Balance{Method: upstream.LeastConn}, Servers: []upstream.Server{srv("127.0.0.1:8080")}}
	api := upstream.Upstream{Name: "api", Service: "api", Keepalive: 16, Servers: []upstream.Server{srv("127.0.0.1:9090")}}
	shop := upstream.Upstream{Name: "shop", Service: "shop", Balance: upstream.Balance{Method: upstream.Hash, Key: "$cookie_sid", Consistent: true}, Servers: []upstream.Server{srv("127.0.0.1:7070")}}
	src := onceSource{engine.Snapshot{Upstreams: upstream.State{"web": web, "api": api, "shop": shop}, Services: 3}}
	rs := &fakeSink{}
	rs.set(engine.SinkStatus{Kind: "reload", Name: "reload: nginx -s reload", InSync: true, LastSync: time.Now().Add(-2 * time.Second), Ready: true})
	e := engine.New([]engine.Source{src}, memStore{}, []engine.Sink{rs}, engine.Guards{MinServices: 1, Addresses: upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, engine.Wait{}, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); e.Status() == nil || len(e.Status().Applied) < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not apply the three upstreams: %+v", e.Status())
		}
	}
	d := &Daemon{Version: "test", File: "/f", Engine: e, Sources: []Source{{"consul x", src}}, Metrics: prometheus.NewRegistry()}
	code, body := get(t, Handler(d), "/status")
	if code != http.StatusOK {
		t.Fatalf("/status answered %d: %s", code, body)
	}

	var raw struct {
		Upstreams []map[string]any `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	balance := map[string]any{}
	for _, u := range raw.Upstreams {
		if b, ok := u["balance"]; ok {
			balance[u["name"].(string)] = b
		}
	}
	if len(balance) != 2 || balance["web"] != "least_conn" || balance["shop"] != "hash $cookie_sid consistent" {
		t.Errorf("/status upstreams[].balance: %v, want web least_conn, shop hash $cookie_sid consistent and none for api (round robin)\n%s", balance, body)
	}

	var out strings.Builder
	if err := Print(&out, []byte(body)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n  api (service api, keepalive 16)\n", "\n  web (least_conn, keepalive 64)\n", "\n  shop (service shop, hash $cookie_sid consistent, keepalive 0)\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status does not print %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "service ,") {
		t.Errorf("status prints an empty service:\n%s", out.String())
	}

	var page strings.Builder
	if err := statuspage.Render(&page, d.page()); err != nil {
		t.Fatal(err)
	}
	html := page.String()
	for _, want := range []string{`<code class="balance">least_conn</code>`, `<code class="balance">hash $cookie_sid consistent</code>`, `3 <span class="old">(file reloaded)</span>`} {
		if !strings.Contains(html, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if strings.Count(html, `class="balance"`) != 2 {
		t.Errorf("the page shows %d balancing methods, want 2 (none for round robin)", strings.Count(html, `class="balance"`))
	}
}
