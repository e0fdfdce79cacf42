package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// ConsulVersion is the version scripts/build-consul.sh builds and caches.
const ConsulVersion = "1.20.1"

// Consul is a real Consul agent, a single server on loopback.
type Consul struct {
	bin, dataDir, logPath string
	ports                 map[string]int
	process
	hcl       []string // extra agent configuration
	CAFile    string   // the CA of the https certificate (StartConsulTLS)
	Client    *api.Client
	transport *http.Transport // Client's
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

// StartConsulTLS starts a Consul that also serves its API over https
// (HTTPSAddr), with a certificate for 127.0.0.1 from a CA made for the
// test (CAFile); over https it speaks HTTP/2.
func StartConsulTLS(t testing.TB) *Consul {
	t.Helper()
	c := newConsul(t)
	c.ports["https"] = FreePort(t)
	hcl, ca, err := loopback.ConsulTLS(c.bin, filepath.Join(c.dataDir, "tls"), c.ports["https"])
	if err != nil {
		t.Fatal(err)
	}
	c.CAFile, c.hcl = ca, append(c.hcl, hcl...)
	return c.open(t, "")
}

// HTTPSAddr is the agent's https address, host:port (StartConsulTLS).
func (c *Consul) HTTPSAddr() string { return Addr(c.ports["https"]) }

func startConsul(t testing.TB, aclToken string) *Consul {
	t.Helper()
	return newConsul(t).open(t, aclToken)
}

func newConsul(t testing.TB) *Consul {
	t.Helper()
	c := &Consul{
		bin:     ConsulBinary(t),
		dataDir: t.TempDir(),
		ports: map[string]int{
			"http": FreePort(t), "server": FreePort(t), "serf_lan": FreePort(t), "serf_wan": FreePort(t),
		},
	}
	c.logPath = filepath.Join(c.dataDir, "consul.log")
	return c
}

// open makes c's client (with the management token aclToken, if any) and
// starts the agent.
func (c *Consul) open(t testing.TB, aclToken string) *Consul {
	t.Helper()
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
	c.start(t, "consul", exec.Command(c.bin, args...), c.logPath, 60*time.Second, c.waitReady)
}

// waitReady waits until the agent has a leader and has registered its own
// node with a passing serfHealth, so that tests start from a settled
// catalog.
func (c *Consul) waitReady(ctx context.Context) error {
	return retryUntil(ctx, func() error {
		leader, err := c.Client.Status().Leader()
		if err != nil {
			return err
		}
		if leader == "" {
			return errors.New("no leader yet")
		}
		checks, _, err := c.Client.Health().Node("sk-test", nil)
		if err == nil && (len(checks) == 0 || checks[0].Status != api.HealthPassing) {
			err = errors.New("the node's serfHealth is not passing yet")
		}
		return err
	})
}

// Stop kills the agent (SIGKILL: an outage, not a graceful leave).
func (c *Consul) Stop(t testing.TB) {
	t.Helper()
	c.kill()
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
