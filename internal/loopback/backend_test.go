package loopback

import (
	"io"
	"net/http"
	"testing"
)

func get(t *testing.T, url string) (int, string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// A backend answers its id and its health, counts the requests to / only,
// refuses connections after a crash and comes back on the same port.
func TestBackendAnswersItsIDHealthAndRestartsOnItsPort(t *testing.T) {
	b, err := NewBackend("inst-7")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Crash()
	base := "http://" + b.Addr()
	if code, body, err := get(t, base+"/"); err != nil || code != http.StatusOK || body != "inst-7" {
		t.Fatalf("GET / = %d %q %v, want 200 \"inst-7\"", code, body, err)
	}
	if code, _, err := get(t, base+"/health"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /health = %d %v, want 200", code, err)
	}
	b.SetHealthy(false)
	if code, _, err := get(t, base+"/health"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("GET /health while unhealthy = %d %v, want 503", code, err)
	}
	if n := b.Served(); n != 1 {
		t.Fatalf("Served() = %d after one GET / and three /health, want 1", n)
	}
	if b.LastRequest().IsZero() {
		t.Fatal("LastRequest() is zero after a GET /")
	}

	port := b.Port
	b.Crash()
	if code, body, err := get(t, base+"/"); err == nil {
		t.Fatalf("GET / after Crash answered %d %q, want a refused connection", code, body)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if b.Port != port {
		t.Fatalf("restarted on port %d, want %d", b.Port, port)
	}
	if code, body, err := get(t, base+"/"); err != nil || body != "inst-7" {
		t.Fatalf("GET / after Start = %d %q %v, want \"inst-7\"", code, body, err)
	}
	b.Stop()
}
