package bench

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStatsCountsFailuresByMethodAndWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	req := func(ms int, post bool, status int, backend, err string, lat time.Duration) Request {
		s := t0.Add(time.Duration(ms) * time.Millisecond)
		return Request{Sched: s, End: s.Add(lat), Post: post, Status: status, Backend: backend, Err: err}
	}
	reqs := []Request{
		req(-1, false, 200, "inst-1", "", time.Millisecond), // before the window
		req(0, false, 200, "inst-1", "", 2*time.Millisecond),
		req(100, true, 200, "inst-2", "", 4*time.Millisecond),
		req(200, false, 502, "", "", 1*time.Millisecond),
		req(300, true, 0, "", "EOF", 3*time.Millisecond),
		req(400, false, 200, "", "", 1*time.Millisecond),      // 200 but from no backend
		req(1000, false, 200, "inst-1", "", time.Millisecond), // at the end: outside
	}
	s := Stats(reqs, t0, t0.Add(time.Second))
	if s.Requests != 5 || s.Failed != 3 || s.FailedGET != 2 || s.FailedPOST != 1 {
		t.Errorf("stats %+v", s)
	}
	if s.OKPerSec != 2 || s.Seconds != 1 {
		t.Errorf("ok/s %v over %v s, want 2 over 1", s.OKPerSec, s.Seconds)
	}
	if s.Latency.Max != 4 || s.Latency.N != 5 {
		t.Errorf("latency %+v", s.Latency)
	}
	joined := strings.Join(s.Errors, "|")
	for _, want := range []string{"GET: status 502 (×1)", "POST: EOF (×1)", "GET: answer from no known backend (×1)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q lack %q", joined, want)
		}
	}
}

func TestRequestFailed(t *testing.T) {
	cases := []struct {
		name string
		r    Request
		want bool
	}{
		{"a 200 from a backend succeeded", Request{Status: http.StatusOK, Backend: "inst-1"}, false},
		{"a transport error failed", Request{Err: "EOF"}, true},
		{"a 502 failed", Request{Status: 502}, true},
		{"a 200 with an unknown body failed", Request{Status: 200}, true},
	}
	for _, c := range cases {
		if got := c.r.Failed(); got != c.want {
			t.Errorf("%s: Failed() = %v", c.name, got)
		}
	}
}

func TestMergePoolsRuns(t *testing.T) {
	a := LoadStats{Requests: 100, Failed: 1, FailedPOST: 1, Seconds: 10, OKPerSec: 9.9, Errors: []string{"POST: EOF (×1)"}}
	b := LoadStats{Requests: 300, Failed: 2, FailedGET: 2, Seconds: 10, OKPerSec: 29.8, Errors: []string{"GET: status 502 (×2)", "POST: EOF (×3)"}}
	m := Merge([]LoadStats{a, b}, []float64{1, 2, 3, 100})
	if m.Requests != 400 || m.Failed != 3 || m.FailedGET != 2 || m.FailedPOST != 1 || m.Seconds != 20 {
		t.Errorf("merged %+v", m)
	}
	if m.OKPerSec < 19.84 || m.OKPerSec > 19.86 {
		t.Errorf("ok/s %v, want 19.85 (weighted by time)", m.OKPerSec)
	}
	if strings.Join(m.Errors, "; ") != "POST: EOF (×4); GET: status 502 (×2)" {
		t.Errorf("errors of the runs add up: %q", m.Errors)
	}
	if m.Latency.Max != 100 || m.Latency.N != 4 {
		t.Errorf("latency from the pooled requests: %+v", m.Latency)
	}
}

func TestShortErrDropsTheURL(t *testing.T) {
	err := &testErr{`Post "http://127.0.0.1:1234/": EOF`}
	if got := shortErr(err); got != "EOF" {
		t.Errorf("shortErr = %q", got)
	}
}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

func TestRecountErrors(t *testing.T) {
	m := LoadMode{Runs: []LoadRun{
		{During: LoadStats{Errors: []string{"POST: EOF (×27)"}}},
		{During: LoadStats{Errors: []string{"POST: EOF (×3)", "GET: status 502 (×1)"}}},
	}}
	m.During.Errors = []string{"POST: EOF (×27) (×1)"} // as an older version pooled them
	m.RecountErrors()
	if got := strings.Join(m.During.Errors, "; "); got != "POST: EOF (×30); GET: status 502 (×1)" {
		t.Errorf("errors %q", got)
	}
}

func TestSplitByEventsPutsRequestsJustAfterAnEventApart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	req := func(ms int, lat time.Duration) Request { return Request{Sched: at(ms), End: at(ms).Add(lat)} }
	events := []time.Time{at(100), at(500)}
	reqs := []Request{
		req(-10, 50*time.Millisecond), // before the phase
		req(50, 1*time.Millisecond),   // before the first event
		req(100, 2*time.Millisecond),  // at an event: near
		req(199, 3*time.Millisecond),  // 99 ms after: near
		req(200, 4*time.Millisecond),  // 100 ms after: away
		req(499, 5*time.Millisecond),  // just before the second: away
		req(550, 6*time.Millisecond),  // near the second
		req(1000, 7*time.Millisecond), // at the end: outside
	}
	for _, tc := range []struct {
		name       string
		events     []time.Time
		near, away []float64
	}{
		{"two events", events, []float64{2, 3, 6}, []float64{1, 4, 5}},
		{"no events", nil, nil, []float64{1, 2, 3, 4, 5, 6}},
	} {
		near, away := SplitByEvents(reqs, t0, at(1000), tc.events, 100*time.Millisecond)
		if !slices.Equal(near, tc.near) || !slices.Equal(away, tc.away) {
			t.Errorf("%s: near %v away %v, want %v and %v", tc.name, near, away, tc.near, tc.away)
		}
	}
}

// The scenarios stop their load where they read it and defer a Stop for
// the early returns: the second Stop must return at once with the same
// requests.
func TestLoadStopTwiceReturnsTheSameRequests(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { served.Add(1) }))
	defer srv.Close()
	load := StartLoad(srv.URL, "web", 200, 0)
	if !poll(t.Context(), 10*time.Second, time.Millisecond, func() bool { return served.Load() >= 3 }) {
		load.Stop()
		t.Fatalf("the load sent %d requests in 10s, want 3", served.Load())
	}
	first := load.Stop()
	after := served.Load()
	done := make(chan []Request)
	go func() { done <- load.Stop() }()
	select {
	case second := <-done:
		if len(second) != len(first) || len(first) < 3 {
			t.Fatalf("second Stop returned %d requests, first %d", len(second), len(first))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Stop still blocked after 5s")
	}
	if n := served.Load(); n != after {
		t.Fatalf("the server got %d requests after the first Stop", n-after)
	}
}
