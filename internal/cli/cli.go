// Package cli is the swallowkeeper command line: it parses arguments, loads
// the configuration and wires sources, engine, store and sinks together.
// Run is called in-process by tests, so nothing here exits or reads globals.
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
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/reload"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3".
var Version = "dev"

// DefaultConfigPath is read when -config is not given and the file exists.
const DefaultConfigPath = "/etc/swallowkeeper/swallowkeeper.yml"

const usage = `swallowkeeper keeps nginx upstreams in step with a service registry, without
reloading nginx. It watches Consul, etcd or ZooKeeper, writes every upstream
to the file nginx includes (atomically, first), then pushes each changed
upstream into nginx memory through the dyups API (tengine/dyups, or
nginx/lua in this repo).

Usage:
  swallowkeeper run     [flags]   follow the registry until SIGTERM or SIGINT
  swallowkeeper once    [flags]   one full sync: registry → file → nginx; non-zero exit on failure
  swallowkeeper render  [flags]   print the upstream file the registry gives now; touches nothing
  swallowkeeper check   [flags]   validate the configuration and the persisted file
  swallowkeeper status  [flags]   ask a running daemon what it applied, per target, and what guards hold
  swallowkeeper register [flags] -- CMD [ARGS...]
                                  run an app: register when ready, deregister and drain before it stops
  swallowkeeper version

Configuration comes from, in rising priority: defaults, the YAML file
(-config, else /etc/swallowkeeper/swallowkeeper.yml if present; see
examples/swallowkeeper.yml), Consul's environment variables
(CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT,
CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME,
CONSUL_HTTP_SSL, CONSUL_DATACENTER), then flags.

Safety: a registry outage or an empty answer never empties nginx; a service
whose instances all fail keeps its last servers; min_services holds every
change while the registry reports fewer services.

Run 'swallowkeeper COMMAND -h' for the flags of a command.
`

// Run runs the command line and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run", "once", "render", "check":
	case "status":
		return httpapi.StatusCommand(ctx, args[1:], stdout, stderr)
	case "register":
		return registerCmd(ctx, args[1:], stdout, stderr, getenv)
	case "version", "-version", "--version":
		v, _ := buildVersion()
		fmt.Fprintf(stdout, "swallowkeeper %s (%s %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "swallowkeeper: unknown command %q\n\n%s", cmd, usage)
		return 2
	}

	cfg, reloadConfig, code := loadConfig(cmd, rest, stderr, getenv)
	if cfg == nil {
		return code
	}
	log := newLogger(stderr, cfg)
	var err error
	switch cmd {
	case "check":
		err = check(cfg, stdout)
	case "render", "once":
		err = oneShot(ctx, cmd, cfg, log, stdout)
	case "run":
		err = run(ctx, cfg, reloadConfig, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// flagValues are the flags that override the configuration.
type flagValues struct {
	path, consulAddr, dc, tokenFile, file, logLevel, logFormat, metrics string
	minServices                                                         optionalInt
	targets                                                             stringList
}

func (f *flagValues) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "config", "", "YAML configuration file (default "+DefaultConfigPath+" if it exists)")
	fs.StringVar(&f.consulAddr, "consul-addr", "", "Consul HTTP address, host:port or https://host:port")
	fs.StringVar(&f.dc, "datacenter", "", "Consul datacenter (default: the agent's)")
	fs.StringVar(&f.tokenFile, "consul-token-file", "", "file holding the Consul ACL token")
	fs.StringVar(&f.file, "file", "", "persisted upstream file that nginx includes")
	fs.Var(&f.minServices, "min-services", "hold all changes while the registry reports fewer than `N` services (default: guards.min_services, 1)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "", "text or json")
	fs.StringVar(&f.metrics, "metrics-listen", "", "address for /metrics, /healthz, /readyz, /status and the status page; \"off\" disables")
	fs.Var(&f.targets, "target", "dyups interface: unix:/run/swallowkeeper/dyups.sock or http://host:port (repeatable; replaces the file's targets)")
}

// loadConfig parses the flags and assembles the configuration. It also
// returns a function that assembles it again (file and environment re-read,
// the same flags), for a reload on SIGHUP.
func loadConfig(cmd string, args []string, stderr io.Writer, getenv func(string) string) (*config.Config, func() (*config.Config, error), int) {
	fs := flag.NewFlagSet("swallowkeeper "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flagValues{}
	f.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swallowkeeper %s [flags]\n\nFlags override the configuration file and the environment.\n\n", cmd)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, 0
		}
		return nil, nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "swallowkeeper %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return nil, nil, 2
	}
	assemble := func() (*config.Config, error) { return f.assemble(getenv) }
	cfg, err := assemble()
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", cmd, err)
		return nil, nil, 1
	}
	return cfg, assemble, 0
}

// assemble reads the configuration file (or the defaults), applies the
// environment and the flags, validates the result and resolves the token.
func (f *flagValues) assemble(getenv func(string) string) (*config.Config, error) {
	var cfg *config.Config
	var err error
	switch {
	case f.path != "":
		cfg, err = config.Load(f.path)
	default:
		if _, statErr := os.Stat(DefaultConfigPath); statErr == nil {
			cfg, err = config.Load(DefaultConfigPath)
		} else {
			cfg, err = config.Parse("", nil)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := cfg.ApplyEnv(getenv); err != nil {
		return nil, err
	}
	for _, o := range []struct {
		given bool
		field string
		apply func()
	}{
		{f.consulAddr != "", "consul.address", func() { cfg.Consul.Address = f.consulAddr }},
		{f.dc != "", "consul.datacenter", func() { cfg.Consul.Datacenter = f.dc }},
		{f.tokenFile != "", "consul.token_file", func() { cfg.Consul.TokenFile = f.tokenFile }},
		{f.file != "", "file", func() { cfg.File = f.file }},
		{f.minServices.set, "guards.min_services", func() { cfg.Guards.MinServices = f.minServices.n }},
		{f.logLevel != "", "log.level", func() { cfg.Log.Level = f.logLevel }},
		{f.logFormat != "", "log.format", func() { cfg.Log.Format = f.logFormat }},
		{f.metrics != "", "metrics.listen", func() {
			cfg.Metrics.Listen = f.metrics
			if f.metrics == "off" {
				cfg.Metrics.Listen = ""
			}
		}},
	} {
		if o.given {
			o.apply()
			cfg.MarkOverridden(o.field, "flag")
		}
	}
	if len(f.targets) > 0 {
		cfg.Targets = nil
		for i, t := range f.targets {
			cfg.Targets = append(cfg.Targets, config.Target{URL: t})
			cfg.MarkOverridden(fmt.Sprintf("targets[%d].url", i), "flag -target")
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.ResolveToken(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(w io.Writer, cfg *config.Config) *slog.Logger {
	level, _ := config.ParseLevel(cfg.Log.Level) // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// build wires a configuration: its source, the store and the sinks, under
// the engine. It is the one place that knows the kinds of sink.
func build(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, oneShot bool) (*engine.Engine, []httpapi.Source, error) {
	src, err := newSource(cfg, cfg.Rules(), log, reg)
	if err != nil {
		return nil, nil, err
	}
	var sinks []engine.Sink
	dm := dyups.NewMetrics(reg)
	for i, tc := range cfg.Targets {
		t, err := dyups.NewTarget(tc.URL, cfg.TargetOptions(i, oneShot), log, dm)
		if err != nil {
			return nil, nil, err
		}
		secret, err := cfg.TargetSecret(i) // read at start (and on SIGHUP); never logged
		if err != nil {
			return nil, nil, err
		}
		if secret != "" {
			t.UseSecret(secret.Reveal())
		}
		sinks = append(sinks, t)
	}
	// Every version of the file is verified before anything is pushed: by
	// the verify command, then in reload mode by reload.test (nginx -t),
	// which the store runs as it writes the file; the reload sink only
	// reloads.
	var verify store.Verifiers
	if len(cfg.Verify) > 0 {
		verify = append(verify, store.Command{Argv: cfg.Verify})
	}
	if cfg.Reload.Enabled {
		rs, err := reload.New(reload.Options{Command: cfg.Reload.Command}, log, reg)
		if err != nil {
			return nil, nil, err
		}
		sinks = append(sinks, rs)
		if len(cfg.Reload.Test) > 0 && !slices.Equal(cfg.Reload.Test, cfg.Verify) {
			verify = append(verify, store.Command{Argv: cfg.Reload.Test})
		}
	}
	file := store.New(cfg.File)
	if len(verify) > 0 {
		file.Verifier = verify
	}
	w := cfg.SettleWait()
	e := engine.New([]engine.Source{src}, file, sinks,
		engine.Guards{
			MinServices:  cfg.Guards.MinServices,
			MaxDrop:      cfg.Guards.MaxDrop,
			MaxTotalDrop: cfg.Guards.MaxTotalDrop,
			ConfirmAfter: time.Duration(cfg.Guards.ConfirmAfter),
			Reserved:     cfg.Upstreams.Reserved,
			Addresses:    cfg.Upstreams.AddressPolicy(),
		},
		engine.Wait{Min: time.Duration(w.Min), Max: time.Duration(w.Max)},
		log, reg)
	return e, []httpapi.Source{{Name: sourceName(cfg), Source: src}}, nil
}

func check(cfg *config.Config, stdout io.Writer) error {
	st, err := store.New(cfg.File).Load()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration ok: %s, %d target(s), persisted file %s (%d upstreams)\n",
		sourceName(cfg), len(cfg.Targets), cfg.File, len(st))
	return nil
}

// oneShotTimeout bounds how long once and render wait for the registry.
const oneShotTimeout = 30 * time.Second

// oneShot runs render (print the file the registry gives now) or once
// (one full sync: registry → file → nginx) through the engine.
func oneShot(ctx context.Context, cmd string, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	e, _, err := build(cfg, log, nil, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, oneShotTimeout, errors.New("no complete answer from the registry within "+oneShotTimeout.String()))
	defer cancel()
	if cmd == "render" {
		_, next, _, err := e.Desired(ctx)
		if err == nil {
			_, err = stdout.Write(upstream.RenderFile(next))
		}
		return err
	}
	next, err := e.Once(ctx)
	if err == nil {
		fmt.Fprintf(stdout, "synced %d upstreams to %d target(s); file %s\n", len(next), len(cfg.Targets), cfg.File)
	}
	return err
}

// run is the daemon: it runs the pipeline for the configuration, and on
// SIGHUP assembles the configuration again; a configuration that does not
// validate is reported and the running one kept, a good one replaces it.
func run(ctx context.Context, cfg *config.Config, reloadConfig func() (*config.Config, error), stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := newLogger(stderr, cfg)
	version, _ := buildVersion()
	log.Info("swallowkeeper started", "version", version, "source", sourceName(cfg), "file", cfg.File, "targets", len(cfg.Targets))
	for {
		genCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- runPipeline(genCtx, cfg, log) }()
	wait:
		select {
		case err := <-done:
			cancel()
			if err == nil && ctx.Err() != nil {
				log.Info("swallowkeeper stopped")
			}
			return err
		case <-hup:
			next, err := reloadConfig()
			if err != nil {
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			log.Info("configuration reloaded; restarting the pipeline")
			cancel()
			if err := <-done; err != nil {
				return err
			}
			cfg, log = next, newLogger(stderr, next)
		}
	}
}

// runPipeline runs sources, engine and sinks for one configuration, and
// the listener, until ctx ends.
func runPipeline(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	e, sources, err := build(cfg, log, reg, false)
	if err != nil {
		return err
	}
	// Everything stops when the engine returns, also when it returns an
	// error while the caller's ctx is still live.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		h := httpapi.Handler(&httpapi.Daemon{Version: func() string { v, _ := buildVersion(); return v }(), File: cfg.File, Engine: e, Sources: sources, Metrics: reg,
			Pprof: cfg.Metrics.Pprof, AllowedHosts: cfg.Metrics.AllowedHosts})
		wg.Go(func() { httpapi.Serve(ctx, ln, h) })
		log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", cfg.Metrics.Pprof)
	}
	err = e.Run(ctx) // returns once the sinks have stopped (a push in flight may finish)
	cancel()
	wg.Wait()
	return err
}

// optionalInt is an int flag that knows whether it was given, so that
// its help shows no made-up default.
type optionalInt struct {
	n   int
	set bool
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.n)
}

func (o *optionalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("want a whole number from 0")
	}
	o.n, o.set = n, true
	return nil
}
