package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// EtcdTick is the heartbeat of test servers; the election timeout is five
// of them, so a restarted server leads again within a second and the
// shortest lease it grants lasts under a second.
const EtcdTick = 50 * time.Millisecond

// Etcd is a real single-member etcd on loopback: Debian's etcd-server
// package (3.4), whose binary is etcd.
type Etcd struct {
	bin, dir, dataDir, logPath string
	clientPort, peerPort       int
	process
}

// StartEtcd starts a member with its data under t.TempDir(), so that Stop
// and Start keep keys, leases and revisions, as a real restart does. $ETCD
// overrides the binary.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{
		bin:        Binary(t, "ETCD", "etcd", "Debian package etcd-server"),
		dir:        t.TempDir(),
		clientPort: FreePort(t),
		peerPort:   FreePort(t),
	}
	e.dataDir = filepath.Join(e.dir, "data")
	e.logPath = filepath.Join(e.dir, "etcd.log")
	t.Cleanup(e.kill)
	e.Start(t)
	return e
}

// Addr is the client address, host:port.
func (e *Etcd) Addr() string { return Addr(e.clientPort) }

// Endpoints are the client endpoints, as clientv3.Config wants them.
func (e *Etcd) Endpoints() []string { return []string{"http://" + e.Addr()} }

// Start (re)starts the member on the same ports and data directory and
// waits, at most 30s, until it serves a linearizable read (it has a
// leader).
func (e *Etcd) Start(t testing.TB) {
	t.Helper()
	client, peer := "http://"+e.Addr(), "http://"+Addr(e.peerPort)
	cmd := exec.Command(e.bin,
		"--name", "test",
		"--data-dir", e.dataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer, "--initial-cluster-state", "new",
		"--heartbeat-interval", fmt.Sprint(EtcdTick.Milliseconds()),
		"--election-timeout", fmt.Sprint(5*EtcdTick.Milliseconds()),
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
	)
	cmd.Env = etcdEnv() // only the flags above configure it
	e.start(t, "etcd", cmd, e.logPath, 30*time.Second, e.waitServing)
}

// waitServing polls the member's status, each call bounded, until it
// answers and knows a leader. Status needs no credentials, so this works
// after a test enabled authentication too.
func (e *Etcd) waitServing(ctx context.Context) error {
	cli, err := e.newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return retryUntil(ctx, func() error {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := cli.Status(rctx, e.Endpoints()[0])
		if err == nil && st.Leader == 0 {
			err = errors.New("no leader yet")
		}
		return err
	})
}

// Stop kills the member (SIGKILL: a crash, not a shutdown). Acknowledged
// writes survive: etcd fsyncs its log before it answers.
func (e *Etcd) Stop(t testing.TB) {
	t.Helper()
	e.kill()
}

// Wipe deletes the stopped member's data, so that the next Start begins a
// new cluster, at revision 1, on the same address: a rebuilt or restored
// etcd.
func (e *Etcd) Wipe(t testing.TB) {
	t.Helper()
	if e.cmd != nil {
		t.Fatal("testenv: wipe a running etcd")
	}
	if err := os.RemoveAll(e.dataDir); err != nil {
		t.Fatal(err)
	}
}

// Client returns a client of the member, as an application would use,
// closed at the end of the test. It reconnects within half a second of a
// restart.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := e.newClient()
	if err != nil {
		t.Fatalf("testenv: etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// etcdEnv is the environment without etcd's own ETCD_* settings, which
// etcd would read as flags.
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

func (e *Etcd) newClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   e.Endpoints(),
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
}
