package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulCluster is a real Consul cluster of n servers on loopback, for
// leader-failure tests. Server i binds 127.0.0.(i+1) (Linux routes all of
// 127/8 to lo) with its own free ports and its data on disk, so Kill and
// Start are a crash and a restart of that server, as in production.
type ConsulCluster struct {
	bin     string
	servers []*clusterServer
}

type clusterServer struct {
	name, ip       string
	dataDir, log   string
	http, server   int
	serfLAN, wan   int
	client         *api.Client
	mu             sync.Mutex
	cmd            *exec.Cmd
	exited         chan struct{}
	retryJoinPeers []string
}

// StartConsulCluster starts n servers with -bootstrap-expect=n that
// -retry-join each other, and waits until every server sees the same
// leader and n raft peers. Their processes are killed, by process group,
// when the test ends.
func StartConsulCluster(t testing.TB, n int) *ConsulCluster {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("testenv: consul cluster of %d servers", n)
	}
	c := &ConsulCluster{bin: ConsulBinary(t)}
	base := t.TempDir()
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		// FreePort's ports are this process's alone (no other test binary
		// takes them, on any address); used on ip, not on 127.0.0.1.
		s := &clusterServer{
			name:    fmt.Sprintf("sk-srv-%d", i+1),
			ip:      ip,
			dataDir: filepath.Join(base, fmt.Sprintf("server-%d", i+1)),
			http:    FreePort(t),
			server:  FreePort(t),
			serfLAN: FreePort(t),
			wan:     FreePort(t),
		}
		if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
			t.Fatal(err)
		}
		s.log = filepath.Join(s.dataDir, "consul.log")
		cfg := api.DefaultConfig()
		cfg.Address = net.JoinHostPort(ip, strconv.Itoa(s.http))
		// No keep-alive pool shared with a dead server: each call dials.
		cfg.Transport.DisableKeepAlives = true
		cli, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.client = cli
		c.servers = append(c.servers, s)
	}
	for i, s := range c.servers {
		for j, o := range c.servers {
			if i != j {
				s.retryJoinPeers = append(s.retryJoinPeers, net.JoinHostPort(o.ip, strconv.Itoa(o.serfLAN)))
			}
		}
	}
	t.Cleanup(func() {
		for i := range c.servers {
			c.Kill(i)
		}
	})
	for i := range c.servers {
		c.spawn(t, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		if c.settled(n) {
			return c
		}
		for i, s := range c.servers {
			select {
			case <-s.exitedChan():
				t.Fatalf("testenv: consul server %d exited at start; log %s:\n%s", i, s.log, tail(s.log))
			default:
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: consul cluster not settled after 90s; log of server 0:\n%s", tail(c.servers[0].log))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Len is the number of servers.
func (c *ConsulCluster) Len() int { return len(c.servers) }

// HTTPAddr is server i's HTTP address, host:port.
func (c *ConsulCluster) HTTPAddr(i int) string {
	s := c.servers[i]
	return net.JoinHostPort(s.ip, strconv.Itoa(s.http))
}

// Client is an API client of server i (no keep-alive: every call dials, so
// a killed server fails fast).
func (c *ConsulCluster) Client(i int) *api.Client { return c.servers[i].client }

// Name is server i's node name.
func (c *ConsulCluster) Name(i int) string { return c.servers[i].name }

// LogTail returns the end of server i's log.
func (c *ConsulCluster) LogTail(i int) string { return tail(c.servers[i].log) }

// Running reports whether server i's process is alive.
func (c *ConsulCluster) Running(i int) bool {
	s := c.servers[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Leader returns the index of the server that the running servers agree is
// the leader, or -1 when there is none or they disagree.
func (c *ConsulCluster) Leader() int {
	leader := -1
	for i, s := range c.servers {
		if !c.Running(i) {
			continue
		}
		addr, err := s.client.Status().Leader()
		if err != nil || addr == "" {
			return -1
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return -1
		}
		idx := -1
		for j, o := range c.servers {
			if o.ip == host {
				idx = j
			}
		}
		if idx < 0 || leader >= 0 && idx != leader || !c.Running(idx) {
			return -1
		}
		leader = idx
	}
	return leader
}

// WaitLeader waits until the running servers agree on a live leader, and
// returns it.
func (c *ConsulCluster) WaitLeader(t testing.TB, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := c.Leader(); l >= 0 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: consul cluster: no leader after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled: every server runs, agrees on the leader and lists want raft
// peers.
func (c *ConsulCluster) settled(want int) bool {
	if c.Leader() < 0 {
		return false
	}
	for i, s := range c.servers {
		if !c.Running(i) {
			return false
		}
		peers, err := s.client.Status().Peers()
		if err != nil || len(peers) != want {
			return false
		}
	}
	return true
}

// Kill ends server i with SIGKILL (a crash, not a graceful leave) and waits
// until it is gone. Killing a stopped server does nothing.
func (c *ConsulCluster) Kill(i int) {
	s := c.servers[i]
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

// Start restarts server i (after Kill) from its data directory, and waits
// until it serves and sees a leader.
func (c *ConsulCluster) Start(t testing.TB, i int) {
	t.Helper()
	c.spawn(t, i)
	s := c.servers[i]
	deadline := time.Now().Add(60 * time.Second)
	for {
		if l, err := s.client.Status().Leader(); err == nil && l != "" {
			return
		}
		select {
		case <-s.exitedChan():
			t.Fatalf("testenv: consul server %d exited at start; log %s:\n%s", i, s.log, tail(s.log))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: consul server %d: no leader 60s after start; log:\n%s", i, tail(s.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *clusterServer) exitedChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited == nil {
		return nil
	}
	return s.exited
}

func (c *ConsulCluster) spawn(t testing.TB, i int) {
	t.Helper()
	s := c.servers[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatalf("testenv: consul server %d already running", i)
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"agent", "-server", "-bootstrap-expect=" + strconv.Itoa(len(c.servers)),
		"-node=" + s.name, "-data-dir=" + filepath.Join(s.dataDir, "data"),
		"-bind=" + s.ip, "-client=" + s.ip, "-advertise=" + s.ip,
		"-http-port=" + strconv.Itoa(s.http),
		"-server-port=" + strconv.Itoa(s.server),
		"-serf-lan-port=" + strconv.Itoa(s.serfLAN),
		"-serf-wan-port=" + strconv.Itoa(s.wan),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-log-level=warn", "-disable-host-node-id", "-retry-interval=1s",
		// Production-like raft timing at its fastest setting.
		"-hcl=performance { raft_multiplier = 1 }",
		"-hcl=check_update_interval = \"0s\"",
	}
	for _, p := range s.retryJoinPeers {
		args = append(args, "-retry-join="+p)
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start consul server %d: %v", i, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
}
