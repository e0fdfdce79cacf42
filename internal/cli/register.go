package cli

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
	"github.com/swallowkeeper/swallowkeeper/internal/wrapper"
)

const registerUsage = `Usage: swallowkeeper register [flags] -- CMD [ARGS...]
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

-registry etcd registers a key under a lease of -ttl (service layout
<prefix>/<service>/<id>, or -etcd-layout upsync); -registry zookeeper an
ephemeral znode in the Curator / Spring Cloud Zookeeper layout with a
session of -ttl. Neither registry runs health checks, so the wrapper runs
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

func registerCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("swallowkeeper register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o            wrapper.Options
		tags, meta   stringList
		consulAddr   = fs.String("consul-addr", "", "Consul agent HTTP address (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
		registryName = fs.String("registry", "consul", "where to register: consul, etcd or zookeeper")
		etcdEPs      = fs.String("etcd-endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated (-registry etcd)")
		etcdLayout   = fs.String("etcd-layout", "service", "etcd layout: service or upsync (-registry etcd)")
		etcdPrefix   = fs.String("etcd-prefix", "", "etcd key prefix (default /services, or /upstreams for upsync)")
		zkServers    = fs.String("zookeeper-servers", "127.0.0.1:2181", "ZooKeeper servers, comma-separated (-registry zookeeper)")
		zkRoot       = fs.String("zookeeper-root", "/services", "ZooKeeper root of the service znodes (-registry zookeeper)")
		zkAuthFile   = fs.String("zookeeper-auth-file", "", "file holding ZooKeeper credentials, digest:user:password (default $SWALLOWKEEPER_ZOOKEEPER_AUTH); the znodes are then writable with them only")
		drainSecret  = fs.String("drain-secret-file", "", "file holding the Lua API's shared secret (its secret_file), sent with -drain-url's requests")
		ttl          = fs.Duration("ttl", 10*time.Second, "etcd lease TTL / ZooKeeper session timeout: how soon a wrapper killed with SIGKILL leaves")
		stopSig      = fs.String("stop-signal", "TERM", "signal forwarded to the app after draining: TERM, INT, QUIT, HUP, USR1, USR2")
		logFormat    = fs.String("log-format", "text", "text or json")
	)
	fs.StringVar(&o.Service, "service", "", "service name (required)")
	fs.StringVar(&o.ID, "id", "", "instance id (default <service>-<hostname>-<port>)")
	fs.StringVar(&o.Address, "address", "", "IP address nginx should use (default: Consul fills in the node's address; etcd, ZooKeeper: this host's address on the route to the registry, required when that is loopback)")
	fs.IntVar(&o.Port, "port", 0, "the app's port (required)")
	fs.Var(&tags, "tag", "service tag, e.g. gray=canary (repeatable)")
	fs.Var(&meta, "meta", "service meta key=value, e.g. weight=3 (repeatable)")
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
		fmt.Fprint(stderr, registerUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	argv := fs.Args()

	cfg := config.Default()
	if err := cfg.ApplyEnv(getenv); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
		return 2
	}
	if *consulAddr != "" {
		cfg.Consul.Address = *consulAddr
	}
	addr, scheme, err := config.SplitConsulAddress(cfg.Consul.Address, cfg.Consul.Scheme)
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper register: -consul-addr: %v\n", err)
		return 2
	}
	if err := cfg.ResolveToken(); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
		return 2
	}
	o.Tags = tags
	o.Meta = map[string]string{}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "swallowkeeper register: -meta %q: want key=value\n", kv)
			return 2
		}
		o.Meta[k] = v
	}
	switch *registryName {
	case "consul", "etcd", "zookeeper":
	default:
		fmt.Fprintf(stderr, "swallowkeeper register: -registry %q: want consul, etcd or zookeeper\n", *registryName)
		return 2
	}
	if o.Address == "" && *registryName != "consul" {
		// No agent to fill the address in: this host's address on the
		// route to the registry, unless that is loopback, which nginx on
		// another host would take for its own.
		towards := strings.Split(*zkServers, ",")[0]
		if *registryName == "etcd" {
			towards, _, _ = config.SplitEtcdEndpoint(strings.Split(*etcdEPs, ",")[0])
		}
		a, err := localAddressTowards(towards)
		if err != nil {
			fmt.Fprintf(stderr, "swallowkeeper register: -address is required: %v\n", err)
			return 2
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
	sig, ok := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
		"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}[strings.TrimPrefix(strings.ToUpper(*stopSig), "SIG")]
	if !ok {
		fmt.Fprintf(stderr, "swallowkeeper register: -stop-signal %q: want TERM, INT, QUIT, HUP, USR1 or USR2\n", *stopSig)
		return 2
	}
	o.StopSignal = sig
	o.Reap = os.Getpid() == 1 // a container's init: orphans of the app come to us
	if *drainSecret != "" {
		b, err := os.ReadFile(*drainSecret)
		if err != nil {
			fmt.Fprintf(stderr, "swallowkeeper register: -drain-secret-file: %v\n", err)
			return 2
		}
		if o.DrainSecret = config.Secret(strings.TrimSpace(string(b))); o.DrainSecret == "" {
			fmt.Fprintf(stderr, "swallowkeeper register: -drain-secret-file %s is empty\n", *drainSecret)
			return 2
		}
	}
	var zkAuth config.Secret
	if *registryName == "zookeeper" {
		zkAuth = config.Secret(getenv("SWALLOWKEEPER_ZOOKEEPER_AUTH"))
		if *zkAuthFile != "" {
			b, err := os.ReadFile(*zkAuthFile)
			if err != nil {
				fmt.Fprintf(stderr, "swallowkeeper register: -zookeeper-auth-file: %v\n", err)
				return 2
			}
			zkAuth = config.Secret(strings.TrimSpace(string(b)))
		}
		if zkAuth != "" {
			if _, _, err := wrapper.ParseZooKeeperAuth(zkAuth); err != nil {
				fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
				return 2
			}
		}
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
		return 2
	}

	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h).With("wrapper", o.ID)

	var reg wrapper.Registrar
	switch *registryName {
	case "etcd":
		var eps []string
		for _, ep := range strings.Split(*etcdEPs, ",") {
			if _, _, err := config.SplitEtcdEndpoint(ep); err != nil {
				fmt.Fprintf(stderr, "swallowkeeper register: -etcd-endpoints: %v\n", err)
				return 2
			}
			eps = append(eps, ep)
		}
		client, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			fmt.Fprintf(stderr, "swallowkeeper register: etcd: %v\n", err)
			return 2
		}
		defer client.Close()
		e := &wrapper.Etcd{Client: client, Layout: *etcdLayout, Prefix: *etcdPrefix, TTL: *ttl, Log: log}
		if _, _, err := e.Entry(o); err != nil {
			fmt.Fprintf(stderr, "swallowkeeper register: %v\n", err)
			return 2
		}
		reg = e
	case "zookeeper":
		reg = &wrapper.ZooKeeper{Servers: strings.Split(*zkServers, ","), Root: *zkRoot, SessionTimeout: *ttl, Auth: zkAuth, Log: log}
	default:
		acfg := api.DefaultConfig()
		acfg.Address, acfg.Scheme = addr, scheme
		acfg.Token, acfg.TokenFile = cfg.Consul.Token.Reveal(), ""
		client, err := api.NewClient(acfg)
		if err != nil {
			fmt.Fprintf(stderr, "swallowkeeper register: consul: %v\n", err)
			return 2
		}
		reg = wrapper.Consul{Client: client}
	}
	return wrapper.Run(ctx, o, argv, reg, log, stdout, stderr)
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
