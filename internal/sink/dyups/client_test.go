package dyups

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// These tests replay the answers recorded in shared/DYUPS-API.md to check
// how the client classifies them. They test our client's logic, not nginx:
// the same client runs against real nginx in the integration tests.

func web() upstream.Upstream {
	return upstream.Upstream{Name: "web", Keepalive: 8, Servers: []upstream.Server{
		{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 2, MaxFails: 1, FailTimeout: 10 * time.Second},
	}}
}

func TestParseBaseURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8081", "https://nginx.local:8443/", "http://[::1]:8081"} {
		if _, err := ParseBaseURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"127.0.0.1:8081", "ftp://x:1", "http://", "http://x:1/dyups", "http://x:1/?a=b", "http://u:p@x:1"} {
		if _, err := ParseBaseURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestClientClassifiesRecordedAnswers(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		status    int
		body      string
		wantErr   bool
		wantRetry bool
	}{
		{"POST accepted", "POST", 200, "success", false, false},
		{"POST body refused", "POST", 500, "add server failed", true, false},
		{"POST while locked (dyups_trylock)", "POST", 409, "wait and try again\n", true, true},
		{"POST to a wrong path", "POST", 404, "not support this api", true, false},
		{"POST body too large", "POST", 413, "<html>413</html>", true, false},
		{"POST through a proxy that failed", "POST", 502, "", true, true},
		{"DELETE done", "DELETE", 200, "success", false, false},
		{"DELETE of an upstream already gone", "DELETE", 404, "not found uptream", false, false},
		{"DELETE while locked", "DELETE", 409, "wait and try again\n", true, true},
		{"DELETE on a wrong path", "DELETE", 405, "not support this interface", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotBody, gotPath, gotMethod string
			var gotLen int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody, gotPath, gotMethod, gotLen = string(b), r.URL.Path, r.Method, r.ContentLength
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			base, _ := ParseBaseURL(srv.URL)
			c := NewClient(base, time.Second)
			var err error
			if tt.method == "POST" {
				err = c.Set(context.Background(), web())
				if gotBody != web().Body() || gotLen != int64(len(web().Body())) {
					t.Errorf("sent body %q (Content-Length %d), want %q", gotBody, gotLen, web().Body())
				}
			} else {
				err = c.Delete(context.Background(), "web")
			}
			if gotPath != "/upstream/web" || gotMethod != tt.method {
				t.Errorf("sent %s %s", gotMethod, gotPath)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && Retryable(err) != tt.wantRetry {
				t.Errorf("Retryable(%v) = %v, want %v", err, Retryable(err), tt.wantRetry)
			}
		})
	}
}

func TestTransportErrorsAreRetryable(t *testing.T) {
	base, _ := ParseBaseURL("http://127.0.0.1:1") // nothing listens on port 1
	err := NewClient(base, time.Second).Set(context.Background(), web())
	if err == nil || !Retryable(err) {
		t.Fatalf("err %v, want a retryable transport error", err)
	}
}

// fakeDyups stores upstreams like dyups does, and can be told to answer
// 409 a number of times or to refuse a given upstream.
type fakeDyups struct {
	mu      sync.Mutex
	ups     map[string]string
	locked  int
	refuse  string
	calls   []string
	blocked chan struct{}
}

func (f *fakeDyups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	name := strings.TrimPrefix(r.URL.Path, "/upstream/")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+name)
	if f.locked > 0 {
		f.locked--
		w.WriteHeader(409)
		io.WriteString(w, "wait and try again\n")
		return
	}
	switch {
	case r.Method == "POST" && name == f.refuse:
		w.WriteHeader(500)
		io.WriteString(w, "add server failed")
	case r.Method == "POST":
		f.ups[name] = string(b)
		io.WriteString(w, "success")
	case r.Method == "DELETE":
		if _, ok := f.ups[name]; !ok {
			w.WriteHeader(404)
			io.WriteString(w, "not found uptream")
			return
		}
		delete(f.ups, name)
		io.WriteString(w, "success")
	}
}

func newTarget(t *testing.T, f *fakeDyups) *Target {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tg, err := NewTarget(srv.URL, Options{RetryBase: time.Millisecond, RetryCap: 5 * time.Millisecond, MaxAttempts: 10},
		slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func named(name, addr string) upstream.Upstream {
	u := web()
	u.Name = name
	u.Servers[0].Addr = netip.MustParseAddrPort(addr)
	return u
}

func TestSyncSendsOnlyTheDifference(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}}
	tg := newTarget(t, f)
	a, b := named("a", "10.0.0.1:80"), named("b", "10.0.0.2:80")
	if err := tg.Sync(context.Background(), upstream.State{"a": a, "b": b}); err != nil {
		t.Fatal(err)
	}
	b2 := named("b", "10.0.0.3:80")
	f.calls = nil
	if err := tg.Sync(context.Background(), upstream.State{"b": b2}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, ",") != "POST b,DELETE a" {
		t.Errorf("calls %v, want POST b then DELETE a", f.calls)
	}
	if f.ups["b"] != b2.Body() || len(f.ups) != 1 {
		t.Errorf("target holds %v", f.ups)
	}
	f.calls = nil
	if err := tg.Sync(context.Background(), upstream.State{"b": b2}); err != nil || len(f.calls) != 0 {
		t.Errorf("an unchanged state sent %v (%v)", f.calls, err)
	}
}

func TestSyncRetriesLockAndGoesOnAfterARefusal(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}, locked: 3, refuse: "a"}
	tg := newTarget(t, f)
	err := tg.Sync(context.Background(), upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.2:80")})
	if err == nil || !strings.Contains(err.Error(), "POST /upstream/a: 500") {
		t.Fatalf("err = %v, want the refusal of a", err)
	}
	if _, ok := f.ups["b"]; !ok {
		t.Fatalf("b was not applied after a's refusal: %v", f.calls)
	}
	// The refused upstream is retried at the next sync.
	f.refuse = ""
	if err := tg.Sync(context.Background(), upstream.State{"a": named("a", "10.0.0.1:80"), "b": named("b", "10.0.0.2:80")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ups["a"]; !ok {
		t.Fatal("a not applied on the next sync")
	}
}

func TestOwnDeletesPersistedUpstreamsNoLongerWanted(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{"old": "server 10.0.0.9:80;"}}
	tg := newTarget(t, f)
	tg.Own(upstream.State{"old": named("old", "10.0.0.9:80")})
	if err := tg.Sync(context.Background(), upstream.State{"a": named("a", "10.0.0.1:80")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ups["old"]; ok {
		t.Fatal("old upstream not deleted")
	}
	// An upstream we never owned is left alone.
	f.ups["someone-elses"] = "server 10.9.9.9:80;"
	if err := tg.Sync(context.Background(), upstream.State{"a": named("a", "10.0.0.1:80")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.ups["someone-elses"]; !ok {
		t.Fatal("deleted an upstream it never owned")
	}
}

func TestRunAppliesOnlyTheNewestStateWhileRetrying(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}, locked: 1 << 30}
	tg := newTarget(t, f)
	tg.opt.MaxAttempts = 0 // Run retries until superseded
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx, ctx); close(done) }()
	defer func() { cancel(); <-done }()
	tg.Update(engine.Change{State: upstream.State{"a": named("a", "10.0.0.1:80")}})
	time.Sleep(30 * time.Millisecond) // a is being retried against the lock
	tg.Update(engine.Change{State: upstream.State{"b": named("b", "10.0.0.2:80")}})
	f.mu.Lock()
	f.locked = 0
	f.mu.Unlock()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		_, hasB := f.ups["b"]
		_, hasA := f.ups["a"]
		f.mu.Unlock()
		if hasB {
			if hasA {
				t.Fatal("a superseded state was applied after a newer one")
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("newest state not applied")
}
