package wrapper

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
)

const usage = `Usage: swallowkeeper register [flags] -- CMD [ARGS...]
       swallowkeeper register [flags]            (sidecar: no command)

Wraps an app of any language so that restarts cost no failed request:
starts CMD in a process group of its own, waits until its -check answers,
registers it in Consul with that check; on SIGTERM/SIGINT deregisters
first, waits until nginx no longer routes to it (-drain-url, then
-drain-grace for requests in flight; else a fixed -drain), then sends the
-stop-signal to the app's group and exits with the app's exit code. If the
app dies, it deregisters at once. HUP, QUIT, USR1 and USR2 are passed on to
the app's group. If the wrapper dies, even by SIGKILL, the app is killed
with it. A wrapper that finds the app's port taken before it starts the app
exits 1 and leaves the registry alone.

Without -address, Consul registers the instance without an address and
gives readers the node's (the agent's advertise address). etcd and
ZooKeeper have no agent: the wrapper uses this host's address on the route
to the registry, and wants -address when that route is loopback.

-registry etcd registers a key under a lease of -ttl, by default in the
upsync layout the daemon reads by default (<prefix>/<upstream>/<ip>:<port>
under /upstreams; the daemon's etcd.layout: upsync), or with -etcd-layout
service as <prefix>/<service>/<id> under /services (then set the daemon's
etcd.layout: service); -registry zookeeper an
ephemeral znode in the Curator / Spring Cloud Zookeeper layout (or
-zookeeper-layout plain, <root>/<upstream>/<ip>:<port>) with a session of
-ttl. Neither registry runs health checks, so the wrapper runs
-check itself every -check-interval and takes the instance out while it
fails; a wrapper killed with SIGKILL leaves when its lease or session ends.
With ZooKeeper credentials (-zookeeper-auth-file or
$SWALLOWKEEPER_ZOOKEEPER_AUTH, "digest:user:password") the znodes it
creates are writable by those credentials only and readable by all.

Example (systemd ExecStart, or a supervisor program's command):
  swallowkeeper register -service web -port 8080 \
      -check http://127.0.0.1:8080/health -drain-url unix:/run/swallowkeeper/dyups.sock \
      -- /usr/local/bin/web-server --port 8080

Flags:
`

// Command is the register command: args are its flags, then "--" and the
// app's command line (none: a sidecar). It returns the exit code.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &registerLine{getenv: getenv}
	fs := c.flags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	c.argv = fs.Args()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
		return 2
	}
	for _, step := range []func() error{c.consul, c.instance, c.stop, c.secrets} {
		if err := step(); err != nil {
			return fail(err)
		}
	}
	if err := c.o.Validate(); err != nil {
		return fail(err)
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if c.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h).With("wrapper", c.o.ID)
	reg, closeReg, err := c.registrar(log)
	if err != nil {
		return fail(err)
	}
	defer closeReg()
	return Run(ctx, c.o, c.argv, reg, log, stdout, stderr)
}

// registerLine is the register command line: the wrapper's options, the
// app's argv and the flags that say where and how to register.
type registerLine struct {
	o          Options
	argv       []string
	tags, meta flagList
	getenv     func(string) string

	registry, consulAddr                    string
	etcdEPs, etcdLayout, etcdPrefix         string
	zkServers, zkRoot, zkLayout, zkAuthFile string
	drainSecret, stopSig, logFormat         string
	ttl                                     time.Duration
	consulHostPort, consulScheme            string
	consulToken, zkAuth                     config.Secret
}

// flags defines the command's flags on c.
func (c *registerLine) flags(stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("swallowkeeper register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &c.o
	fs.StringVar(&c.consulAddr, "consul-addr", "", "Consul agent HTTP address (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	fs.StringVar(&c.registry, "registry", "consul", "where to register: consul, etcd or zookeeper")
	fs.StringVar(&c.etcdEPs, "etcd-endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated (-registry etcd)")
	fs.StringVar(&c.etcdLayout, "etcd-layout", "upsync", "etcd layout: upsync (the daemon's default etcd.layout) or service; the daemon's etcd.layout must match (-registry etcd)")
	fs.StringVar(&c.etcdPrefix, "etcd-prefix", "", "etcd key prefix (default /upstreams for upsync, /services for service: the daemon's defaults)")
	fs.StringVar(&c.zkServers, "zookeeper-servers", "127.0.0.1:2181", "ZooKeeper servers, comma-separated (-registry zookeeper)")
	fs.StringVar(&c.zkRoot, "zookeeper-root", "/services", "ZooKeeper root of the service znodes (-registry zookeeper)")
	fs.StringVar(&c.zkLayout, "zookeeper-layout", "curator", "ZooKeeper layout: curator, or plain (<root>/<upstream>/<ip>:<port>) (-registry zookeeper)")
	fs.StringVar(&c.zkAuthFile, "zookeeper-auth-file", "", "file holding ZooKeeper credentials, digest:user:password (default $SWALLOWKEEPER_ZOOKEEPER_AUTH); the znodes are then writable with them only")
	fs.StringVar(&c.drainSecret, "drain-secret-file", "", "file holding the Lua API's shared secret (its secret_file), sent with -drain-url's requests")
	fs.DurationVar(&c.ttl, "ttl", 10*time.Second, "etcd lease TTL / ZooKeeper session timeout: how soon a wrapper killed with SIGKILL leaves")
	fs.StringVar(&c.stopSig, "stop-signal", "TERM", "signal forwarded to the app after draining: TERM, INT, QUIT, HUP, USR1, USR2")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&o.Service, "service", "", "service name (required)")
	fs.StringVar(&o.ID, "id", "", "instance id (default <service>-<hostname>-<port>)")
	fs.StringVar(&o.Address, "address", "", "IP address nginx should use (default: Consul fills in the node's address; etcd, ZooKeeper: this host's address on the route to the registry, required when that is loopback)")
	fs.IntVar(&o.Port, "port", 0, "the app's port (required)")
	fs.Var(&c.tags, "tag", "service tag, e.g. gray=canary (repeatable)")
	fs.Var(&c.meta, "meta", "service meta key=value, e.g. weight=3 (repeatable)")
	fs.StringVar(&o.Check, "check", "", "health check: http://host:port/path or tcp://host:port (default tcp://<address>:<port>, or tcp://127.0.0.1:<port> when Consul fills in the address)")
	fs.DurationVar(&o.CheckInterval, "check-interval", time.Second, "how often the check runs (by the Consul agent; for etcd and ZooKeeper by the wrapper)")
	fs.DurationVar(&o.CheckTimeout, "check-timeout", time.Second, "timeout of each check")
	fs.DurationVar(&o.DeregisterAfter, "deregister-after", time.Minute, "Consul deletes the registration after its check has failed this long, e.g. when the wrapper and its app were both killed (the failing check already takes the instance out of nginx)")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", time.Minute, "how long to wait for the app's first passing check")
	fs.DurationVar(&o.RegisterTimeout, "register-timeout", 0, "give up registering after this (the app keeps running); 0 = keep trying")
	fs.DurationVar(&o.Drain, "drain", 5*time.Second, "wait after deregistering before stopping the app (with -drain-url: the longest wait for nginx to drop the instance)")
	fs.StringVar(&o.DrainURL, "drain-url", "", "dyups API of an nginx, http://host:port or unix:/path: stop the app once an answer 200 no longer lists the instance (errors and 404s: keep polling)")
	fs.DurationVar(&o.DrainGrace, "drain-grace", time.Second, "with -drain-url: wait this long after nginx dropped the instance, for requests in flight (at least your longest request; on real dyups add dyups_read_msg_timeout)")
	fs.StringVar(&o.Upstream, "upstream", "", "upstream name in nginx (default: the service, or <service>_<x> with tag <canary-tag>=<x>)")
	fs.StringVar(&o.CanaryTag, "canary-tag", "gray", "the daemon's upstreams.canary_tag: an instance tagged <canary-tag>=<x> is in upstream <service>_<x>")
	fs.DurationVar(&o.StopTimeout, "stop-timeout", 30*time.Second, "then the app's process group is killed")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// consul resolves the Consul agent's address and token, as the consul CLI
// does: the environment, then -consul-addr.
func (c *registerLine) consul() error {
	cfg := config.Default()
	if err := cfg.ApplyEnv(c.getenv); err != nil {
		return err
	}
	if c.consulAddr != "" {
		cfg.Consul.Address = c.consulAddr
	}
	addr, scheme, err := config.SplitConsulAddress(cfg.Consul.Address, cfg.Consul.Scheme)
	if err != nil {
		return fmt.Errorf("-consul-addr: %v", err)
	}
	if err := cfg.ResolveToken(); err != nil {
		return err
	}
	c.consulHostPort, c.consulScheme, c.consulToken = addr, scheme, cfg.Consul.Token
	return nil
}

// instance completes the instance's options: tags and meta, the address
// where no agent fills it in, the default check.
func (c *registerLine) instance() error {
	o := &c.o
	o.Tags = c.tags
	o.Meta = map[string]string{}
	for _, kv := range c.meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("-meta %q: want key=value", kv)
		}
		o.Meta[k] = v
	}
	switch c.registry {
	case "consul", "etcd", "zookeeper":
	default:
		return fmt.Errorf("-registry %q: want consul, etcd or zookeeper", c.registry)
	}
	if o.Address == "" && c.registry != "consul" {
		// No agent to fill the address in: this host's address on the
		// route to the registry, unless that is loopback, which nginx on
		// another host would take for its own.
		towards := strings.Split(c.zkServers, ",")[0]
		if c.registry == "etcd" {
			towards, _, _ = config.SplitEtcdEndpoint(strings.Split(c.etcdEPs, ",")[0])
		}
		a, err := localAddressTowards(towards)
		if err != nil {
			return fmt.Errorf("-address is required: %v", err)
		}
		o.Address = a
	}
	if o.Check == "" && o.Port > 0 {
		host := o.Address
		if host == "" {
			host = "127.0.0.1" // Consul fills the address in; the agent runs on this host
		}
		o.Check = "tcp://" + net.JoinHostPort(host, fmt.Sprint(o.Port))
	}
	return nil
}

// stop sets how the app is stopped, and whether the wrapper reaps orphans.
func (c *registerLine) stop() error {
	sig, ok := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
		"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}[strings.TrimPrefix(strings.ToUpper(c.stopSig), "SIG")]
	if !ok {
		return fmt.Errorf("-stop-signal %q: want TERM, INT, QUIT, HUP, USR1 or USR2", c.stopSig)
	}
	c.o.StopSignal = sig
	c.o.Reap = os.Getpid() == 1 // a container's init: orphans of the app come to us
	return nil
}

// secrets reads the drain's API secret and the ZooKeeper credentials; no
// error quotes them.
func (c *registerLine) secrets() error {
	if c.drainSecret != "" {
		b, err := os.ReadFile(c.drainSecret)
		if err != nil {
			return fmt.Errorf("-drain-secret-file: %v", err)
		}
		if c.o.DrainSecret = config.Secret(strings.TrimSpace(string(b))); c.o.DrainSecret == "" {
			return fmt.Errorf("-drain-secret-file %s is empty", c.drainSecret)
		}
	}
	if c.registry != "zookeeper" {
		return nil
	}
	c.zkAuth = config.Secret(c.getenv(ZooKeeperAuthEnv))
	if c.zkAuthFile != "" {
		b, err := os.ReadFile(c.zkAuthFile)
		if err != nil {
			return fmt.Errorf("-zookeeper-auth-file: %v", err)
		}
		c.zkAuth = config.Secret(strings.TrimSpace(string(b)))
	}
	if c.zkAuth != "" {
		if _, _, err := ParseZooKeeperAuth(c.zkAuth); err != nil {
			return err
		}
	}
	return nil
}

// registrar builds the chosen registry's registrar, checking that it can
// encode the instance, and what to close when the wrapper is done.
func (c *registerLine) registrar(log *slog.Logger) (Registrar, func(), error) {
	switch c.registry {
	case "etcd":
		return c.etcdRegistrar(log)
	case "zookeeper":
		z := &ZooKeeper{Servers: strings.Split(c.zkServers, ","), Layout: c.zkLayout, Root: c.zkRoot, SessionTimeout: c.ttl, Auth: c.zkAuth, Log: log}
		if _, _, err := z.Entry(c.o); err != nil {
			return nil, nil, err
		}
		return z, func() {}, nil
	}
	acfg := api.DefaultConfig()
	acfg.Address, acfg.Scheme = c.consulHostPort, c.consulScheme
	acfg.Token, acfg.TokenFile = c.consulToken.Reveal(), ""
	client, err := api.NewClient(acfg)
	if err != nil {
		return nil, nil, fmt.Errorf("consul: %v", err)
	}
	return Consul{Client: client}, func() {}, nil
}

func (c *registerLine) etcdRegistrar(log *slog.Logger) (Registrar, func(), error) {
	var eps []string
	for _, ep := range strings.Split(c.etcdEPs, ",") {
		if _, _, err := config.SplitEtcdEndpoint(ep); err != nil {
			return nil, nil, fmt.Errorf("-etcd-endpoints: %v", err)
		}
		eps = append(eps, ep)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: %v", err)
	}
	e := &Etcd{Client: client, Layout: c.etcdLayout, Prefix: c.etcdPrefix, TTL: c.ttl, Log: log}
	if _, _, err := e.Entry(c.o); err != nil {
		client.Close()
		return nil, nil, err
	}
	return e, func() { client.Close() }, nil
}

// localAddressTowards returns this host's address on the route to the
// registry (no packet is sent), which is what nginx on another host would
// reach. A loopback route (the registry runs on this host) says nothing
// about that, and is an error.
func localAddressTowards(registry string) (string, error) {
	c, err := net.Dial("udp", registry)
	if err != nil {
		return "", fmt.Errorf("cannot tell this host's address towards %s: %v", registry, err)
	}
	defer c.Close()
	host, _, _ := net.SplitHostPort(c.LocalAddr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsLoopback() {
		return "", fmt.Errorf("the route to %s is loopback, and nginx on another host cannot reach this host's loopback (pass -address 127.0.0.1 if nginx runs on this host)", registry)
	}
	return host, nil
}

// flagList is a repeatable flag.
type flagList []string

func (s *flagList) String() string     { return strings.Join(*s, ",") }
func (s *flagList) Set(v string) error { *s = append(*s, v); return nil }

// ZooKeeperAuthEnv holds ZooKeeper credentials when no -zookeeper-auth-file
// is given. The wrapped app does not inherit it.
const ZooKeeperAuthEnv = "SWALLOWKEEPER_ZOOKEEPER_AUTH"
