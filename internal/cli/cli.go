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
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
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

	cfg, reloadConfig, opts, code := loadConfig(cmd, rest, stderr, getenv)
	if cfg == nil {
		return code
	}
	log := newLogger(stderr, cfg)
	var err error
	switch cmd {
	case "check":
		err = check(cfg, stdout)
	case "render", "once":
		var differs bool
		differs, err = oneShot(ctx, cmd, cfg, opts, log, stdout)
		if err == nil && differs {
			return 2 // render -diff: the registry would change the file
		}
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

	// One-shot commands only (render, once).
	timeout time.Duration // how long to wait for the registry
	diff    bool          // render -diff: compare with the persisted file
	render  bool          // render writes nothing: the file's directory may be missing
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
func loadConfig(cmd string, args []string, stderr io.Writer, getenv func(string) string) (*config.Config, func() (*config.Config, error), *flagValues, int) {
	fs := flag.NewFlagSet("swallowkeeper "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &flagValues{render: cmd == "render"}
	f.register(fs)
	switch cmd {
	case "render":
		fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up when the registry has not answered within this `duration`")
		fs.BoolVar(&f.diff, "diff", false, "print what would change against the persisted file instead of the file;\nexit 0 when nothing would change, 2 when something would, 1 on error")
	case "once":
		fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up when the registry has not answered within this `duration`")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: swallowkeeper %s [flags]\n\nFlags override the configuration file and the environment.\n\n", cmd)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, nil, 0
		}
		return nil, nil, nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "swallowkeeper %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return nil, nil, nil, 2
	}
	if (cmd == "render" || cmd == "once") && f.timeout <= 0 {
		fmt.Fprintf(stderr, "swallowkeeper %s: -timeout must be positive\n", cmd)
		return nil, nil, nil, 2
	}
	assemble := func() (*config.Config, error) { return f.assemble(getenv) }
	cfg, err := assemble()
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", cmd, err)
		return nil, nil, nil, 1
	}
	return cfg, assemble, f, 0
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
	// render writes nothing, so the file's directory need not exist yet
	// (a missing file is an empty previous state): validate the rest with a
	// stand-in path, then put the real one back.
	file := cfg.File
	if fi, err := os.Stat(filepath.Dir(file)); f.render && file != "" && (err != nil || !fi.IsDir()) {
		cfg.File = filepath.Join(os.TempDir(), filepath.Base(file))
	}
	err = cfg.Validate()
	cfg.File = file
	if err != nil {
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

// generation is the pipeline built for one configuration: run builds a
// new one on each SIGHUP, keeping what did not change (see build).
type generation struct {
	engine  *engine.Engine
	sources []httpapi.Source
	src     engine.Source
	srcKey  any // what src was built from
	targets []keyedTarget
	kept    []string // what was taken over from the previous generation
	staged  *stagedRegisterer
}

// build wires a configuration: its source, the store and the sinks, under
// the engine. It is the one place that knows the kinds of sink.
//
// srcLog, when not nil, is the source's logger instead of log. dm holds
// the dyups metrics (kept for the daemon's life). prev, when not nil, is
// the running generation: its source is kept when the source's
// configuration did not change, and each of its targets whose URL,
// options and secret did not change is kept with what it acknowledged, so
// that the new engine pushes only what differs. Build starts nothing;
// the new source's and sinks' metrics are registered by commit.
// withReload builds the store, with its verify commands, and in reload
// mode adds the reload sink. Every version of the file is verified before
// anything is pushed: by the verify command, then in reload mode by
// reload.test (nginx -t), which the store runs as it writes the file; the
// reload sink only reloads.
func withReload(cfg *config.Config, log *slog.Logger, staged prometheus.Registerer, sinks []engine.Sink) (*store.File, []engine.Sink, error) {
	var verify store.Verifiers
	if len(cfg.Verify) > 0 {
		verify = append(verify, store.Command{Argv: cfg.Verify})
	}
	if cfg.Reload.Enabled {
		rs, err := reload.New(reload.Options{Command: cfg.Reload.Command}, log, staged)
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
	return file, sinks, nil
}

func build(cfg *config.Config, log, srcLog *slog.Logger, reg *prometheus.Registry, dm *dyups.Metrics, oneShot bool, prev *generation) (*generation, error) {
	if srcLog == nil {
		srcLog = log
	}
	g := &generation{staged: &stagedRegisterer{}}
	var staged prometheus.Registerer // nil: no metrics (one-shot commands)
	if reg != nil {
		staged = g.staged
	}
	rules := cfg.Rules()
	g.srcKey = struct {
		Source    any
		Consul    config.Consul
		Etcd      any
		ZooKeeper any
		Rules     registry.Rules
	}{cfg.Source, cfg.Consul, cfg.Etcd, cfg.ZooKeeper, rules}
	if prev != nil && reflect.DeepEqual(prev.srcKey, g.srcKey) {
		g.src = prev.src
		g.kept = append(g.kept, "source")
	} else {
		src, err := newSource(cfg, rules, srcLog, staged)
		if err != nil {
			return nil, err
		}
		g.src = src
	}
	var sinks []engine.Sink
	taken := map[int]bool{} // prev's targets kept
	for i, tc := range cfg.Targets {
		opt := cfg.TargetOptions(i, oneShot)
		secret, err := cfg.TargetSecret(i) // read at start (and on SIGHUP); never logged
		if err != nil {
			return nil, err
		}
		key := struct {
			URL    string
			Opt    dyups.Options
			Secret config.Secret
		}{tc.URL, opt, secret}
		t := (*dyups.Target)(nil)
		if prev != nil {
			for j, old := range prev.targets {
				if !taken[j] && reflect.DeepEqual(old.key, key) {
					t, taken[j] = old.t, true // a target runs under one engine
					g.kept = append(g.kept, "target "+t.URL())
					break
				}
			}
		}
		if t == nil {
			t, err = dyups.NewTarget(tc.URL, opt, log, dm)
			if err != nil {
				return nil, err
			}
			if secret != "" {
				t.UseSecret(secret.Reveal())
			}
		}
		g.targets = append(g.targets, keyedTarget{key, t})
		sinks = append(sinks, t)
	}
	file, sinks, err := withReload(cfg, log, staged, sinks)
	if err != nil {
		return nil, err
	}
	w := cfg.SettleWait()
	var ereg prometheus.Registerer // the engine takes over its predecessor's collectors
	if reg != nil {
		ereg = reg
	}
	g.engine = engine.New([]engine.Source{g.src}, file, sinks,
		engine.Guards{
			MinServices:  cfg.Guards.MinServices,
			MaxDrop:      cfg.Guards.MaxDrop,
			MaxTotalDrop: cfg.Guards.MaxTotalDrop,
			ConfirmAfter: time.Duration(cfg.Guards.ConfirmAfter),
			Reserved:     cfg.Upstreams.Reserved,
			Addresses:    cfg.Upstreams.AddressPolicy(),
		},
		engine.Wait{Min: time.Duration(w.Min), Max: time.Duration(w.Max)},
		log, ereg)
	g.sources = []httpapi.Source{{Name: sourceName(cfg), Source: g.src}}
	return g, nil
}

// keyedTarget is a target with what it was built from.
type keyedTarget struct {
	key any
	t   *dyups.Target
}

// stagedRegisterer holds a new generation's collectors until commit, so
// that a build that fails leaves the running generation's metrics alone.
type stagedRegisterer struct{ cs []prometheus.Collector }

func (s *stagedRegisterer) Register(c prometheus.Collector) error {
	s.cs = append(s.cs, c)
	return nil
}
func (s *stagedRegisterer) MustRegister(cs ...prometheus.Collector) { s.cs = append(s.cs, cs...) }
func (s *stagedRegisterer) Unregister(prometheus.Collector) bool    { return false }

// commit registers the generation's new collectors in reg, each in place
// of its predecessor (a rebuilt source or reload sink starts its counters
// again; kept components and the engine's go on).
func (g *generation) commit(reg *prometheus.Registry) error {
	for _, c := range g.staged.cs {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			reg.Unregister(are.ExistingCollector)
			err = reg.Register(c)
		}
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	g.staged.cs = nil
	return nil
}

func check(cfg *config.Config, stdout io.Writer) error {
	st, err := store.New(cfg.File).Load()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration ok: %s, %d target(s), persisted file %s (%d upstreams)\n",
		sourceName(cfg), len(cfg.Targets), cfg.File, len(st))
	if note := cfg.EtcdWrapperNote(); note != "" {
		fmt.Fprintln(stdout, note)
	}
	return nil
}

// oneShot runs render (print the file the registry gives now, or with
// -diff what would change in the persisted file) or once (one full sync:
// registry → file → nginx) through the engine. differs is true when
// render -diff found a change.
//
// The source's retry warnings are not printed (unless -log-level debug):
// a one-shot command that cannot reach the registry fails once, within
// -timeout, with the last error the source saw.
func oneShot(ctx context.Context, cmd string, cfg *config.Config, opts *flagValues, log *slog.Logger, stdout io.Writer) (differs bool, err error) {
	var last *lastError
	srcLog := log
	if level, _ := config.ParseLevel(cfg.Log.Level); level > slog.LevelDebug {
		last = &lastError{}
		srcLog = slog.New(last)
	}
	g, err := build(cfg, log, srcLog, nil, dyups.NewMetrics(nil), true, nil)
	if err != nil {
		return false, err
	}
	e := g.engine
	cause := fmt.Errorf("no complete answer from %s within %s", sourceName(cfg), opts.timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, opts.timeout, cause)
	defer cancel()
	if cmd == "render" {
		prev, next, _, err := e.Desired(ctx)
		if err != nil {
			return false, last.explain(err)
		}
		if !opts.diff {
			_, err = stdout.Write(upstream.RenderFile(next))
			return false, err
		}
		d := diffStates(prev, next)
		if d == "" {
			fmt.Fprintf(stdout, "no change: %s matches the registry (%d upstreams)\n", cfg.File, len(next))
			return false, nil
		}
		fmt.Fprintf(stdout, "--- %s (persisted)\n+++ %s (rendered)\n%s", cfg.File, sourceName(cfg), d)
		return true, nil
	}
	next, err := e.Once(ctx)
	if err != nil {
		return false, last.explain(err)
	}
	fmt.Fprintf(stdout, "synced %d upstreams to %d target(s); file %s\n", len(next), len(cfg.Targets), cfg.File)
	return false, nil
}

// run is the daemon: it runs the pipeline for the configuration, and on
// SIGHUP assembles the configuration again; a configuration that does not
// validate is reported and the running one kept, a good one replaces it in
// place. The listener and the metrics registry live as long as the daemon
// (probes keep answering, counters go on; a new metrics.listen address
// moves the listener), and the new pipeline keeps the source and each
// target whose configuration did not change: a kept target remembers what
// nginx acknowledged and pushes only the upstreams whose rendering changed.
func run(ctx context.Context, cfg *config.Config, reloadConfig func() (*config.Config, error), stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	level := new(slog.LevelVar)
	log := newLevelLogger(stderr, cfg, level)
	version, _ := buildVersion()
	log.Info("swallowkeeper started", "version", version, "source", sourceName(cfg), "file", cfg.File, "targets", len(cfg.Targets))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	dm := dyups.NewMetrics(reg)
	gen, err := build(cfg, log, nil, reg, dm, false, nil)
	if err != nil {
		return err
	}
	if err := gen.commit(reg); err != nil {
		return err
	}
	var handler atomic.Pointer[http.Handler]
	setHandler := func(cfg *config.Config, g *generation) {
		h := httpapi.Handler(&httpapi.Daemon{Version: version, File: cfg.File, Engine: g.engine, Sources: g.sources, Metrics: reg,
			Pprof: cfg.Metrics.Pprof, AllowedHosts: cfg.Metrics.AllowedHosts})
		handler.Store(&h)
	}
	setHandler(cfg, gen)
	lis := &listener{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) })}
	defer lis.close()
	if err := lis.move(ctx, cfg.Metrics.Listen, cfg.Metrics.Pprof, log); err != nil {
		return err
	}
	for {
		genCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- gen.engine.Run(genCtx) }() // returns once the sinks have stopped
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
			ngen, err := build(next, log, nil, reg, dm, false, gen)
			if err != nil {
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			if err := lis.move(ctx, next.Metrics.Listen, next.Metrics.Pprof, log); err != nil {
				log.Error("configuration reload failed; keeping the running configuration", "err", err)
				goto wait
			}
			if next.Log.Format != cfg.Log.Format {
				log.Warn("log.format changes at the next start only", "running", cfg.Log.Format, "configured", next.Log.Format)
			}
			log.Info("configuration reloaded; applying it in place", "kept", ngen.kept)
			cancel()
			if err := <-done; err != nil {
				return err
			}
			if err := ngen.commit(reg); err != nil {
				return err
			}
			l, _ := config.ParseLevel(next.Log.Level) // validated
			level.Set(l)
			setHandler(next, ngen)
			cfg, gen = next, ngen
		}
	}
}

// newLevelLogger is newLogger with a level that a reload can change.
func newLevelLogger(w io.Writer, cfg *config.Config, level *slog.LevelVar) *slog.Logger {
	l, _ := config.ParseLevel(cfg.Log.Level) // validated
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// listener is the daemon's HTTP listener: it serves h until closed, and
// moves only when metrics.listen changes.
type listener struct {
	h      http.Handler
	addr   string // configured; "" when off
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// move makes the listener serve addr ("" stops it). A new address is
// opened before the old one closes; when it cannot be opened the old one
// keeps serving and move returns the error.
func (l *listener) move(ctx context.Context, addr string, pprof bool, log *slog.Logger) error {
	if addr == l.addr && (addr == "" || l.cancel != nil) {
		return nil
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	l.close()
	l.addr = addr
	if ln == nil {
		return nil
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel = cancel
	l.wg.Go(func() { httpapi.Serve(sctx, ln, l.h) })
	log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", pprof)
	return nil
}

func (l *listener) close() {
	if l.cancel != nil {
		l.cancel()
		l.wg.Wait()
		l.cancel = nil
	}
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
