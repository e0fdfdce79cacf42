package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// onceSource sends one snapshot, then waits.
type onceSource struct{ snap engine.Snapshot }

func (o onceSource) Run(ctx context.Context, out chan<- engine.Snapshot) {
	select {
	case out <- o.snap:
	case <-ctx.Done():
		return
	}
	<-ctx.Done()
}

// TestStatusShowsAppliedChanges: a registry answer applied by a real
// engine shows in /status as history rows and a timeline, with
// fail_timeout as a duration string, and `swallowkeeper status` and the
// page read them back.
func TestStatusShowsAppliedChanges(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	web := upstream.Upstream{Name: "web", Servers: []upstream.Server{
		{Addr: netip.MustParseAddrPort("127.0.0.1:8080"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Instance: "web-1"},
		{Addr: netip.MustParseAddrPort("127.0.0.2:8080"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Instance: "web-2"},
	}}
	web.Sort()
	src := onceSource{engine.Snapshot{Upstreams: upstream.State{"web": web}, Services: 1}}
	e := engine.New([]engine.Source{src}, memStore{}, nil, engine.Guards{MinServices: 1, Addresses: upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, engine.Wait{}, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); e.Status() == nil || len(e.Status().Applied) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the engine applied nothing: %+v", e.Status())
		}
	}
	d := &Daemon{Version: "test", File: "/f", Engine: e, Sources: []Source{{"etcd x", src}}, Metrics: prometheus.NewRegistry()}
	code, body := get(t, Handler(d), "/status")
	if code != http.StatusOK {
		t.Fatalf("/status answered %d: %s", code, body)
	}
	var doc Doc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	var got []string
	for _, c := range doc.History {
		if c.At.IsZero() {
			t.Errorf("change without a time: %+v", c)
		}
		got = append(got, c.Upstream+" "+c.Change+" "+c.Detail+" "+c.Cause)
	}
	want := []string{"web + server 127.0.0.1:8080 weight=1 registry", "web + server 127.0.0.2:8080 weight=1 registry", "web + upstream 2 servers registry"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(doc.Timeline) != 1 || doc.Timeline[0].Upstream != "web" || len(doc.Timeline[0].Points) != 2 ||
		doc.Timeline[0].Points[0].Servers != 0 || doc.Timeline[0].Points[1].Servers != 2 {
		t.Errorf("timeline %+v, want web from 0 to 2 servers", doc.Timeline)
	}
	if !strings.Contains(body, `"fail_timeout": "10s"`) || strings.Contains(body, "fail_timeout_ns") {
		t.Errorf("/status does not show fail_timeout as \"10s\":\n%s", body)
	}

	var out strings.Builder
	if err := Print(&out, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Recent changes") || !regexp.MustCompile(`\+ server +127\.0\.0\.2:8080 weight=1 +\(registry\)`).MatchString(out.String()) {
		t.Errorf("swallowkeeper status lacks the changes:\n%s", out.String())
	}
	p := d.page()
	if len(p.History) != 3 || len(p.Upstreams) != 1 || len(p.Upstreams[0].Counts) != 2 || p.Upstreams[0].Servers[0].FailTimeout != 10*time.Second {
		t.Errorf("page history %+v, upstreams %+v", p.History, p.Upstreams)
	}
}
