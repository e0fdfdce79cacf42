package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulVersion is the version scripts/build-consul.sh builds and caches.
const ConsulVersion = "1.20.1"

// Consul is a real Consul agent, a single server on loopback.
type Consul struct {
	bin, dataDir, logPath string
	ports                 map[string]int
	cmd                   *exec.Cmd
	exited                chan struct{}
	hcl                   []string // extra agent configuration
	Client                *api.Client
	transport             *http.Transport // Client's
}

// ConsulBinary finds the consul binary: $CONSUL_BIN, the cache that
// scripts/build-consul.sh fills, then PATH.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	if os.Getenv("CONSUL_BIN") == "" {
		cache := os.Getenv("SWALLOWKEEPER_CACHE")
		if cache == "" {
			if dir, err := os.UserCacheDir(); err == nil {
				cache = filepath.Join(dir, "swallowkeeper")
			}
		}
		p := filepath.Join(cache, "consul-"+ConsulVersion, "consul")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return Binary(t, "CONSUL_BIN", "consul", "build it with scripts/build-consul.sh")
}

// StartConsul starts a single-server Consul with its data on disk, so that
// Stop and Start keep the catalog, as a real server restart does.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	return startConsul(t, "")
}

// StartConsulACL starts a Consul whose ACLs deny by default; token is the
// management token, which c.Client uses.
func StartConsulACL(t testing.TB, token string) *Consul {
	t.Helper()
	return startConsul(t, token)
}

func startConsul(t testing.TB, aclToken string) *Consul {
	c := &Consul{
		bin:     ConsulBinary(t),
		dataDir: t.TempDir(),
		ports: map[string]int{
			"http": FreePort(t), "server": FreePort(t), "serf_lan": FreePort(t), "serf_wan": FreePort(t),
		},
	}
	c.logPath = filepath.Join(c.dataDir, "consul.log")
	cfg := api.DefaultConfig()
	cfg.Address = c.HTTPAddr()
	if aclToken != "" {
		cfg.Token = aclToken
		c.hcl = append(c.hcl, fmt.Sprintf(`acl { enabled = true default_policy = "deny" tokens { initial_management = %q agent = %q } }`, aclToken, aclToken))
	}
	cli, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Client, c.transport = cli, cfg.Transport
	t.Cleanup(func() { c.kill() })
	c.Start(t)
	return c
}

// CloseIdleConnections closes Client's idle connections to the agent, so
// that a test counting the connections of the code under test does not
// count the test's own.
func (c *Consul) CloseIdleConnections() { c.transport.CloseIdleConnections() }

// HTTPAddr is the agent's HTTP address, host:port.
func (c *Consul) HTTPAddr() string { return Addr(c.ports["http"]) }

// Start (re)starts the agent and waits until it has a leader.
func (c *Consul) Start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"agent", "-server", "-bootstrap-expect=1", "-node=sk-test",
		"-data-dir=" + filepath.Join(c.dataDir, "data"),
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port=" + strconv.Itoa(c.ports["http"]),
		"-server-port=" + strconv.Itoa(c.ports["server"]),
		"-serf-lan-port=" + strconv.Itoa(c.ports["serf_lan"]),
		"-serf-wan-port=" + strconv.Itoa(c.ports["serf_wan"]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-log-level=warn", "-disable-host-node-id",
		// Fast failure detection and raft on one loopback node.
		"-hcl=performance { raft_multiplier = 1 }",
		"-hcl=check_update_interval = \"0s\"",
	}
	for _, h := range c.hcl {
		args = append(args, "-hcl="+h)
	}
	c.cmd = exec.Command(c.bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("testenv: start consul: %v", err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(c.cmd, c.exited)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		leader, err := c.Client.Status().Leader()
		if err == nil && leader != "" {
			// The node registers itself shortly after the election; wait
			// for its serfHealth so tests start from a settled catalog.
			checks, _, err := c.Client.Health().Node("sk-test", nil)
			if err == nil && len(checks) > 0 && checks[0].Status == api.HealthPassing {
				return
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("testenv: consul exited at start; log %s:\n%s", c.logPath, tail(c.logPath))
		case <-ctx.Done():
			t.Fatalf("testenv: consul not ready after 60s; log %s:\n%s", c.logPath, tail(c.logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills the agent (SIGKILL: an outage, not a graceful leave).
func (c *Consul) Stop(t testing.TB) {
	t.Helper()
	c.kill()
}

func (c *Consul) kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.exited
	c.cmd = nil
}

// Register registers a service instance with a TTL check that starts
// passing. The check's ID is "service:<id>".
func (c *Consul) Register(t testing.TB, service, id, addr string, port int, tags []string, meta map[string]string) {
	t.Helper()
	err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: addr, Port: port, Tags: tags, Meta: meta,
		Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatalf("testenv: register %s/%s: %v", service, id, err)
	}
}

// SetHealth sets an instance's TTL check to passing, warning or critical.
func (c *Consul) SetHealth(t testing.TB, id, status string) {
	t.Helper()
	if err := c.Client.Agent().UpdateTTL("service:"+id, "set by test", status); err != nil {
		t.Fatalf("testenv: set health of %s to %s: %v", id, status, err)
	}
}

// Deregister removes an instance.
func (c *Consul) Deregister(t testing.TB, id string) {
	t.Helper()
	if err := c.Client.Agent().ServiceDeregister(id); err != nil {
		t.Fatalf("testenv: deregister %s: %v", id, err)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return fmt.Sprintf("%s", b)
}
