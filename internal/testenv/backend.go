package testenv

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// Backend is a real HTTP server on loopback that answers every request but
// /health (reading its body first: POSTs carry one) with its id; the demo
// and the benchmark run the same one.
type Backend = loopback.Backend

// StartBackend starts a Backend; it closes when the test ends.
func StartBackend(t testing.TB, id string) *Backend {
	t.Helper()
	b, err := loopback.NewBackend(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Crash)
	return b
}

// freshClient opens a new connection per request, so that requests spread
// over nginx workers.
var freshClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Route sends n GETs for host through the nginx proxy, each on a fresh
// connection, and returns the ids that answered (with counts) and the
// number of failures (transport errors and non-200 answers).
func Route(proxyURL, host string, n int) (map[string]int, int) {
	seen := map[string]int{}
	failed := 0
	for range n {
		req, _ := http.NewRequest(http.MethodGet, proxyURL+"/", nil)
		req.Host = host
		resp, err := freshClient.Do(req)
		if err != nil {
			failed++
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
			continue
		}
		seen[string(body)]++
	}
	return seen, failed
}
