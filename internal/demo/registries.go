package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
	"github.com/swallowkeeper/swallowkeeper/internal/wrapper"
)

// registryKind is one of the registries the demo can run with. Consul
// checks health itself; etcd and ZooKeeper do not, so for them the demo
// does what `swallowkeeper register` does for an app: it registers the
// instance (a key under a lease, an ephemeral znode), checks /health every
// second and takes the instance out while the check fails.
type registryKind interface {
	start(ctx context.Context, d *demo) error
	section(d *demo) string // the daemon's configuration for it
	register(b *loopback.Backend) error
	deregister(b *loopback.Backend) error
	checkNote() string
}

func newRegistry(name string) (registryKind, error) {
	switch name {
	case "consul":
		return &consulRegistry{}, nil
	case "etcd":
		return &localChecked{kind: "etcd"}, nil
	case "zookeeper":
		return &localChecked{kind: "zookeeper"}, nil
	}
	return nil, fmt.Errorf("-registry %q: want consul, etcd or zookeeper", name)
}

type consulRegistry struct{ client *api.Client }

func (c *consulRegistry) start(ctx context.Context, d *demo) error {
	d.say("Starting Consul (dev agent) on 127.0.0.1:%d", d.ports["registry"])
	if err := d.startConsul(ctx); err != nil {
		return err
	}
	c.client = d.consul
	return nil
}

func (c *consulRegistry) section(d *demo) string {
	return fmt.Sprintf("consul:\n  address: 127.0.0.1:%d\n", d.ports["registry"])
}

func (c *consulRegistry) register(b *loopback.Backend) error {
	return c.client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: b.ID, Name: "web", Address: loopback.Host, Port: b.Port,
		Check: &api.AgentServiceCheck{HTTP: "http://" + b.Addr() + "/health", Interval: "1s", Timeout: "500ms"},
	})
}

func (c *consulRegistry) deregister(b *loopback.Backend) error {
	return c.client.Agent().ServiceDeregister(b.ID)
}
func (c *consulRegistry) checkNote() string { return "(mostly Consul's HTTP check interval, 1s)" }

// localChecked registers in etcd or ZooKeeper, with the wrapper's local
// health checking.
type localChecked struct {
	kind   string
	etcd   *clientv3.Client
	zkAddr string
	mu     sync.Mutex
	regs   map[string]*instance
}

type instance struct {
	reg    wrapper.Registrar
	opt    wrapper.Options
	cancel context.CancelFunc
}

func (l *localChecked) checkNote() string {
	return "(mostly the registering side's 1s health check; " + l.kind + " has none of its own)"
}

func (l *localChecked) start(ctx context.Context, d *demo) error {
	l.regs = map[string]*instance{}
	switch l.kind {
	case "etcd":
		d.say("Starting etcd on 127.0.0.1:%d", d.ports["registry"])
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", d.ports["registry"]), fmt.Sprintf("http://127.0.0.1:%d", d.ports["registry_peer"])
		server, err := d.startProc("etcd", d.opt.Etcd, "--name", "demo", "--data-dir", filepath.Join(d.dir, "etcd"),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "demo="+peer, "--log-level", "warn", "--logger", "zap")
		if err != nil {
			return err
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		l.etcd = c
		return d.waitUp(ctx, server, "etcd", "", 30*time.Second, func() bool {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := c.Get(cctx, "/")
			return err == nil
		})
	default:
		d.say("Starting ZooKeeper on 127.0.0.1:%d", d.ports["registry"])
		cfg := filepath.Join(d.dir, "zoo.cfg")
		conf := fmt.Sprintf("tickTime=500\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
			filepath.Join(d.dir, "zookeeper"), d.ports["registry"])
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			return err
		}
		server, err := d.startProc("zookeeper", d.opt.Java, "-Xmx256m", "-XX:+UseSerialGC", "-cp", d.opt.ZooKeeperClasspath,
			"org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg)
		if err != nil {
			return err
		}
		l.zkAddr = fmt.Sprintf("127.0.0.1:%d", d.ports["registry"])
		return d.waitUp(ctx, server, "zookeeper", "", 60*time.Second, func() bool {
			conn, _, err := zk.Connect([]string{l.zkAddr}, 4*time.Second, zk.WithLogger(quiet{}))
			if err != nil {
				return false
			}
			defer conn.Close()
			_, _, err = conn.Children("/")
			return err == nil
		})
	}
}

func (l *localChecked) section(d *demo) string {
	if l.kind == "etcd" {
		return fmt.Sprintf("source: etcd\netcd:\n  endpoints: [127.0.0.1:%d]\n  layout: service\n", d.ports["registry"])
	}
	return fmt.Sprintf("source: zookeeper\nzookeeper:\n  servers: [127.0.0.1:%d]\n  session_timeout: 4s\n", d.ports["registry"])
}

func (l *localChecked) register(b *loopback.Backend) error {
	o := wrapper.Options{Service: "web", ID: b.ID, Address: loopback.Host, Port: b.Port, Upstream: "web"}
	var reg wrapper.Registrar
	if l.kind == "etcd" {
		reg = &wrapper.Etcd{Client: l.etcd, Layout: "service", TTL: 5 * time.Second}
	} else {
		reg = &wrapper.ZooKeeper{Servers: []string{l.zkAddr}, SessionTimeout: 4 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{reg: reg, opt: o, cancel: cancel}
	l.mu.Lock()
	l.regs[b.ID] = in
	l.mu.Unlock()
	go l.check(ctx, b, in)
	return nil // registered by the checker once /health answers
}

// check registers the instance while its /health passes, and takes it out
// while it fails, every second.
func (l *localChecked) check(ctx context.Context, b *loopback.Backend, in *instance) {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	registered := false
	for {
		resp, err := client.Get("http://" + b.Addr() + "/health")
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
		}
		l.mu.Lock()
		if ctx.Err() != nil {
			l.mu.Unlock()
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		switch {
		case ok && !registered:
			registered = in.reg.Register(rctx, in.opt) == nil
		case !ok && registered:
			registered = in.reg.Deregister(rctx, in.opt.ID) != nil
		}
		cancel()
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (l *localChecked) deregister(b *loopback.Backend) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	in, ok := l.regs[b.ID]
	if !ok {
		return nil
	}
	in.cancel()
	delete(l.regs, b.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return in.reg.Deregister(ctx, in.opt.ID)
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}
