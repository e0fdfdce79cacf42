package dyups

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// These tests replay answers recorded on a real dyups build (see
// docs/DYUPS-API.md) to check how the client classifies them. They test
// our client's logic, not nginx: the same client runs against real nginx
// in the integration tests.

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

// fakeDyups stores upstreams like dyups does (names match
// case-insensitively; ups keys keep the case of the last POST), and can be
// told to answer 409 a number of times or to refuse a given upstream.
type fakeDyups struct {
	mu      sync.Mutex
	ups     map[string]string
	locked  int
	refuse  string
	calls   []string // every request, answered or not
	applied []string // the POSTs and DELETEs that changed what f holds, in order
	blocked chan struct{}
	// GET /detail: detailReads counts the reads; detail, when set, gives
	// the answer to the read-th one (from 1) instead of what f holds (now),
	// as a worker with another state would.
	detailReads int
	detail      func(read int, now string) string
}

// detailNow is /detail for what f holds, in name order.
func (f *fakeDyups) detailNow() string {
	s := upstream.State{}
	for name, body := range f.ups {
		u, err := upstream.ParseBody(name, body)
		if err != nil {
			panic(fmt.Sprintf("fake dyups holds %s { %s }: %v", name, body, err))
		}
		s[name] = u
	}
	return detailText(s, sortedNames(s))
}

// stored is the key under which f holds name, case-insensitively.
func (f *fakeDyups) stored(name string) (string, bool) {
	for n := range f.ups {
		if strings.EqualFold(n, name) {
			return n, true
		}
	}
	return "", false
}

func (f *fakeDyups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	name := strings.TrimPrefix(r.URL.Path, "/upstream/")
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == "GET" && r.URL.Path == "/detail" {
		f.detailReads++
		body := f.detailNow()
		if f.detail != nil {
			body = f.detail(f.detailReads, body)
		}
		if body == "" {
			w.WriteHeader(204)
		}
		io.WriteString(w, body)
		return
	}
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
		if old, ok := f.stored(name); ok {
			delete(f.ups, old)
		}
		f.ups[name] = string(b)
		f.applied = append(f.applied, "POST "+name)
		io.WriteString(w, "success")
	case r.Method == "DELETE":
		old, ok := f.stored(name)
		if !ok {
			w.WriteHeader(404)
			io.WriteString(w, "not found uptream")
			return
		}
		delete(f.ups, old)
		f.applied = append(f.applied, "DELETE "+name)
		io.WriteString(w, "success")
	}
}

// newServer serves f on loopback until the test ends, and returns its URL.
func newServer(t *testing.T, f *fakeDyups) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func newTarget(t *testing.T, f *fakeDyups) *Target {
	tg, err := NewTarget(newServer(t, f), withDefaults(Options{RetryBase: time.Millisecond, RetryCap: 5 * time.Millisecond, MaxAttempts: 10}),
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
	// a is being retried against the lock: seen twice by nginx.
	waitFor(t, "POST a retried against the lock", func() bool { return f.count("POST a") >= 2 })
	tg.Update(engine.Change{State: upstream.State{"b": named("b", "10.0.0.2:80")}})
	f.mu.Lock()
	f.locked = 0
	f.mu.Unlock()
	waitFor(t, "nginx holding b alone", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		_, hasB := f.ups["b"]
		return hasB && len(f.ups) == 1
	})
	// a may have got through in the moment the lock went (then it was
	// deleted for b), but never after b.
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.applied, "POST b"); i < 0 || slices.Contains(f.applied[i:], "POST a") {
		t.Fatalf("nginx applied %v: a superseded state after the newer one", f.applied)
	}
}

// TestSyncPlansCaseOnlyRenames: dyups matches names case-insensitively, and
// a POST of Rn replaces rn. So Sync never DELETEs an owned name that folds
// to a desired one (that DELETE would remove the new name: 502s); the POST
// of the new name replaces it, and the old name is forgotten.
func TestSyncPlansCaseOnlyRenames(t *testing.T) {
	const A, B = "10.0.0.1:80", "10.0.0.2:80"
	st := func(kv ...string) upstream.State {
		s := upstream.State{}
		for i := 0; i < len(kv); i += 2 {
			s[kv[i]] = named(kv[i], kv[i+1])
		}
		return s
	}
	tests := []struct {
		name      string
		persisted upstream.State // in nginx and owned (Own) before the first sync
		first     upstream.State // synced first: acknowledged and owned
		next      upstream.State
		refuse    string
		wantCalls string
		wantErr   bool
		wantHolds upstream.State // what nginx holds after next, names in nginx's case
		wantOwned string
	}{
		{name: "rn renamed Rn", first: st("rn", A), next: st("Rn", B),
			wantCalls: "POST Rn", wantHolds: st("Rn", B), wantOwned: "Rn"},
		{name: "Rn renamed back rn, same servers", first: st("Rn", A), next: st("rn", A),
			wantCalls: "POST rn", wantHolds: st("rn", A), wantOwned: "rn"},
		{name: "persisted rn renamed Rn at start", persisted: st("rn", A), next: st("Rn", B),
			wantCalls: "POST Rn", wantHolds: st("Rn", B), wantOwned: "Rn"},
		{name: "persisted rn and RN, Rn desired", persisted: st("rn", A, "RN", A), next: st("Rn", B),
			wantCalls: "POST Rn", wantHolds: st("Rn", B), wantOwned: "Rn"},
		{name: "rename next to a removal", first: st("rn", A, "x", A), next: st("Rn", A),
			wantCalls: "POST Rn,DELETE x", wantHolds: st("Rn", A), wantOwned: "Rn"},
		{name: "a name no desired one folds to is still deleted", first: st("rn", A), next: st("other", B),
			wantCalls: "POST other,DELETE rn", wantHolds: st("other", B), wantOwned: "other"},
		{name: "refused rename: nginx keeps rn, nothing deleted", first: st("rn", A), next: st("Rn", B), refuse: "Rn",
			wantCalls: "POST Rn", wantErr: true, wantHolds: st("rn", A), wantOwned: "Rn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDyups{ups: map[string]string{}}
			for name, u := range tt.persisted { // as POSTs would leave them: one per case-folded name
				if old, ok := f.stored(name); ok {
					delete(f.ups, old)
				}
				f.ups[name] = u.Body()
			}
			tg := newTarget(t, f)
			tg.Own(tt.persisted)
			if tt.first != nil {
				if err := tg.Sync(context.Background(), tt.first); err != nil {
					t.Fatal(err)
				}
			}
			f.calls, f.refuse = nil, tt.refuse
			err := tg.Sync(context.Background(), tt.next)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got := strings.Join(f.calls, ","); got != tt.wantCalls {
				t.Errorf("calls %q, want %q", got, tt.wantCalls)
			}
			want := map[string]string{}
			for name, u := range tt.wantHolds {
				want[name] = u.Body()
			}
			if fmt.Sprint(f.ups) != fmt.Sprint(want) {
				t.Errorf("nginx holds %v, want %v", f.ups, want)
			}
			if got := strings.Join(sortedKeys(tg.owned), ","); got != tt.wantOwned {
				t.Errorf("owned %q, want %q", got, tt.wantOwned)
			}
			for name := range tg.acked {
				if _, ok := tt.next[name]; !ok {
					t.Errorf("acknowledged %s, which is not desired", name)
				}
			}
			// Removing the new name later removes the one upstream nginx
			// holds under any case.
			f.calls, f.refuse = nil, ""
			if err := tg.Sync(context.Background(), upstream.State{}); err != nil {
				t.Fatal(err)
			}
			if len(f.ups) != 0 {
				t.Errorf("after removing everything nginx holds %v (calls %v)", f.ups, f.calls)
			}
		})
	}
}

// withDefaults fills what a test leaves zero from DefaultOptions, as the
// configuration does for the daemon (NewTarget itself takes no zero value
// for a default).
func withDefaults(o Options) Options {
	d := DefaultOptions()
	for _, f := range []struct{ v, def *time.Duration }{
		{&o.Timeout, &d.Timeout}, {&o.RetryBase, &d.RetryBase}, {&o.RetryCap, &d.RetryCap},
		{&o.DetailBudget, &d.DetailBudget}, {&o.WorkerPoll, &d.WorkerPoll},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if o.RetryCap < o.RetryBase {
		o.RetryCap = o.RetryBase
	}
	if o.DetailReads == 0 {
		o.DetailReads = d.DetailReads
	}
	if o.DetailMaxReads == 0 {
		o.DetailMaxReads = 4 * o.DetailReads
		if o.NginxPID != "" || o.Processes != nil {
			o.DetailMaxReads = o.DetailReads
		}
	}
	return o
}

// A transport error names the request once: not
// `POST http://…/upstream/web: Post "http://…/upstream/web": dial …`.
func TestTransportErrorsAreWrappedOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	base, err := ParseBaseURL("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	err = NewClient(base, time.Second).Set(context.Background(), upstream.Upstream{Name: "web", Servers: []upstream.Server{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}}})
	if err == nil {
		t.Fatal("POST to a closed port succeeded")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "POST http://"+addr+"/upstream/web: ") || strings.Contains(msg, `Post "`) || !strings.Contains(msg, "connection refused") {
		t.Errorf("error %q, want the request named once, then the dial error", msg)
	}
}
