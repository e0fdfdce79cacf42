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
	"testing"
	"time"

	"github.com/hashicorp/consul/sdk/freeport"
)

// FreePort returns a TCP port on 127.0.0.1 that no other test holds, in
// this process or in another one, until t ends.
//
// Picking a port by listening on port 0 is not enough: go test runs several
// packages' test binaries at once, and the kernel hands such a port out
// again, to another binary's server or as an outgoing connection's source
// port. CI failed a test whose Consul agent ended 80ms after its start; an
// agent whose server port is taken ends after 80ms ("bind: address already
// in use"). Consul's freeport reserves a block of ports below the ephemeral
// range for each process (a listener on the block's first port is the lock
// between processes) and gives a port back only once it is free again.
// With this machine's ephemeral range (from 32768) there are 15 blocks of
// 1,500 ports. freeport panics when 10 random tries find no free block:
// with go test's default -p (the number of CPUs) of 8, the last binary to
// start fails so with a chance of (7/15)^10, 0.05%; CI has 2 cores.
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.GetOne(t)
}

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
