package testenv

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// Backend is a real HTTP server on loopback that answers every request
// (reading its body first: POSTs carry one) with its id.
type Backend struct {
	ID   string
	Port int
}

// StartBackend starts a Backend; it closes when the test ends.
func StartBackend(t testing.TB, id string) *Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, id)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &Backend{ID: id, Port: ln.Addr().(*net.TCPAddr).Port}
}

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

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
