// Package testenv starts the real servers that SwallowKeeper integrates with
// (Consul, nginx, etcd, ZooKeeper) as unprivileged processes on loopback,
// for integration tests. Every helper picks free ports, writes its state
// under t.TempDir() and kills what it started, by pid, in t.Cleanup.
//
// A missing component is a test failure, never a skip: the project's test
// command (scripts/test.sh) installs everything, so a missing binary means
// the environment is broken and the run must say so.
package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// The listener is closed before returning, so a race with another process is
// possible but unlikely on a test machine.
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may hand the same port out again once it is closed,
		// and two ports of one server that collide fail its start (seen:
		// Consul's server and HTTP ports). Never give a port out twice.
		givenMu.Lock()
		seen := given[port]
		given[port] = true
		givenMu.Unlock()
		if !seen {
			return port
		}
	}
}

var (
	givenMu sync.Mutex
	given   = map[int]bool{} // ports FreePort returned in this process
)

// Binary returns the path of an executable, looked up in the environment
// variable env first (when set) and then in PATH. It fails the test when the
// binary is missing, naming how to get it.
func Binary(t testing.TB, env, name, hint string) string {
	t.Helper()
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("testenv: %s=%s: %v", env, p, err)
			}
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s not found in PATH (%s); run scripts/test.sh, which installs it", name, hint)
	}
	return p
}

// WaitHTTP polls url until it answers with any HTTP status or the timeout
// passes.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := retryUntil(ctx, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", url, err)
	}
	return nil
}

// WaitTCP polls addr until it accepts a TCP connection or the timeout passes.
func WaitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	err := retryUntil(ctx, func() error {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", addr, err)
	}
	return nil
}

// Addr joins 127.0.0.1 and a port.
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
