package httpapi

import (
	"testing"
	"time"
)

func TestHostAllowList(t *testing.T) {
	allowed := hostAllowList([]string{"sk.internal", "Status.Example.COM."})
	for host, want := range map[string]bool{
		"127.0.0.1":                true,
		"127.0.0.1:9145":           true,
		"10.1.2.3:80":              true,
		"[::1]:9145":               true,
		"[::1]":                    true,
		"[fe80::1%25eth0]:9145":    true, // a literal with a zone: still no DNS involved
		"localhost":                true,
		"LocalHost:9145":           true,
		"localhost.":               true,
		"sk.internal":              true,
		"SK.INTERNAL:9145":         true,
		"status.example.com":       true,
		"evil.example":             false,
		"evil.example:9145":        false,
		"localhost.evil.example":   false,
		"sk.internal.evil.example": false,
		"127.0.0.1.nip.io":         false,
		"0x7f000001":               false,
		"":                         false,
		":9145":                    false,
	} {
		if got := allowed(host); got != want {
			t.Errorf("Host %q: allowed %v, want %v", host, got, want)
		}
	}
}

// TestListenerServerDeadlines: every deadline is set, the write deadline
// short (pprof's profile and trace move their own deadline out by their
// duration; TestListenerServesPprofWhenEnabled runs one).
func TestListenerServerDeadlines(t *testing.T) {
	srv := NewServer(nil)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Fatalf("deadlines: header %v read %v write %v idle %v, max header %d", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	if srv.WriteTimeout > 30*time.Second || srv.ReadTimeout > 30*time.Second {
		t.Errorf("read %v, write %v: want them short", srv.ReadTimeout, srv.WriteTimeout)
	}
}
