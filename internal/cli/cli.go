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
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
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
reloading nginx. It watches Consul, writes every upstream to the file nginx
includes (atomically, first), then pushes each changed upstream into nginx
memory through the dyups API (tengine/dyups, or nginx/lua in this repo).

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
		return status(ctx, args[1:], stdout, stderr)
	case "register":
		return registerCmd(ctx, args[1:], stdout, stderr, getenv)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "swallowkeeper %s (%s %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
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
	case "render":
		err = render(ctx, cfg, log, stdout)
	case "once":
		err = once(ctx, cfg, log, stdout)
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

// loadConfig parses the flags and assembles the configuration. It also
// returns a function that assembles it again (file and environment re-read,
// the same flags), for a reload on SIGHUP.
func loadConfig(cmd string, args []string, stderr io.Writer, getenv func(string) string) (*config.Config, func() (*config.Config, error), int) {
	fs := flag.NewFlagSet("swallowkeeper "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		path        = fs.String("config", "", "YAML configuration file (default "+DefaultConfigPath+" if it exists)")
		consulAddr  = fs.String("consul-addr", "", "Consul HTTP address, host:port or https://host:port")
		dc          = fs.String("datacenter", "", "Consul datacenter (default: the agent's)")
		tokenFile   = fs.String("consul-token-file", "", "file holding the Consul ACL token")
		file        = fs.String("file", "", "persisted upstream file that nginx includes")
		minServices = fs.Int("min-services", -1, "hold all changes while the registry reports fewer services")
		logLevel    = fs.String("log-level", "", "debug, info, warn or error")
		logFormat   = fs.String("log-format", "", "text or json")
		metrics     = fs.String("metrics-listen", "", "address for /metrics, /healthz, /readyz, /status and the status page; \"off\" disables")
		targets     stringList
	)
	fs.Var(&targets, "target", "dyups interface: unix:/run/swallowkeeper/dyups.sock or http://host:port (repeatable; replaces the file's targets)")
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

	assemble := func() (*config.Config, error) {
		var cfg *config.Config
		var err error
		switch {
		case *path != "":
			cfg, err = config.Load(*path)
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
		set := func(field string, apply func()) {
			apply()
			cfg.MarkOverridden(field, "flag")
		}
		if *consulAddr != "" {
			set("consul.address", func() { cfg.Consul.Address = *consulAddr })
		}
		if *dc != "" {
			set("consul.datacenter", func() { cfg.Consul.Datacenter = *dc })
		}
		if *tokenFile != "" {
			set("consul.token_file", func() { cfg.Consul.TokenFile = *tokenFile })
		}
		if *file != "" {
			set("file", func() { cfg.File = *file })
		}
		if *minServices >= 0 {
			set("guards.min_services", func() { cfg.Guards.MinServices = *minServices })
		}
		if *logLevel != "" {
			set("log.level", func() { cfg.Log.Level = *logLevel })
		}
		if *logFormat != "" {
			set("log.format", func() { cfg.Log.Format = *logFormat })
		}
		if *metrics != "" {
			set("metrics.listen", func() {
				cfg.Metrics.Listen = *metrics
				if *metrics == "off" {
					cfg.Metrics.Listen = ""
				}
			})
		}
		if len(targets) > 0 {
			cfg.Targets = nil
			for i, t := range targets {
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
	cfg, err := assemble()
	if err != nil {
		fmt.Fprintf(stderr, "swallowkeeper %s: %v\n", cmd, err)
		return nil, nil, 1
	}
	return cfg, assemble, 0
}

func newLogger(w io.Writer, cfg *config.Config) *slog.Logger {
	level, _ := config.ParseLevel(cfg.Log.Level) // validated
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parts are the wired components of a configuration.
type parts struct {
	sources []namedSource
	engine  *engine.Engine
	targets []*dyups.Target
	reload  *reload.Sink
}

// oneShotAttempts bounds the retries of each request in once: a one-shot
// command must fail rather than wait for a dead nginx.
const oneShotAttempts = 4

func build(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, oneShot bool) (*parts, error) {
	src, err := newSource(cfg, rulesFor(cfg), log, reg)
	if err != nil {
		return nil, err
	}

	p := &parts{}
	dm := dyups.NewMetrics(reg)
	sinks := make([]engine.Sink, 0, len(cfg.Targets))
	for i, tc := range cfg.Targets {
		opt := dyups.Options{Timeout: time.Duration(tc.Timeout), DetailReads: cfg.Reconcile.Reads,
			DetailMaxReads: cfg.Reconcile.MaxReads,
			NginxPID:       tc.NginxPID, WorkerReadyDelay: time.Duration(tc.WorkerReadyDelay)}
		if oneShot {
			opt.MaxAttempts = oneShotAttempts
		} else {
			opt.Resync = time.Duration(cfg.Reconcile.Interval)
		}
		t, err := dyups.NewTarget(tc.URL, opt, log, dm)
		if err != nil {
			return nil, err
		}
		secret, err := cfg.TargetSecret(i) // read at start (and on SIGHUP); never logged
		if err != nil {
			return nil, err
		}
		if secret != "" {
			t.UseSecret(secret.Reveal())
		}
		p.targets = append(p.targets, t)
		sinks = append(sinks, t)
	}
	if cfg.Reload.Enabled {
		rs, err := reload.New(reload.Options{
			File:    cfg.File,
			Test:    cfg.Reload.Test,
			Command: cfg.Reload.Command,
			MinWait: time.Duration(cfg.Reload.MinWait),
			MaxWait: time.Duration(cfg.Reload.MaxWait),
		}, log, reg)
		if err != nil {
			return nil, err
		}
		p.reload = rs
		sinks = append(sinks, rs)
	}
	p.sources = []namedSource{{sourceName(cfg), src}}
	file := store.New(cfg.File)
	if len(cfg.Verify) > 0 { // every version written is tested before the push
		file.Verifier = store.Command{Argv: cfg.Verify}
	}
	p.engine = engine.New([]engine.Source{src}, file, sinks,
		engine.Guards{
			MinServices:  cfg.Guards.MinServices,
			MaxDrop:      cfg.Guards.MaxDrop,
			MaxTotalDrop: cfg.Guards.MaxTotalDrop,
			ConfirmAfter: time.Duration(cfg.Guards.ConfirmAfter),
		},
		engine.Wait{Min: time.Duration(cfg.Wait.Min), Max: time.Duration(cfg.Wait.Max)},
		log, reg)
	return p, nil
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

func render(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	p, err := build(cfg, log, nil, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, oneShotTimeout, errors.New("no complete answer from the registry within "+oneShotTimeout.String()))
	defer cancel()
	_, next, holds, err := p.engine.Desired(ctx)
	if err != nil {
		return err
	}
	for _, h := range holds {
		log.Warn("guard holds a change", "upstream", h.Upstream, "reason", h.Reason)
	}
	_, err = stdout.Write(upstream.RenderFile(next))
	return err
}

func once(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	p, err := build(cfg, log, nil, true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, oneShotTimeout, errors.New("no complete answer from the registry within "+oneShotTimeout.String()))
	defer cancel()
	prev, next, holds, err := p.engine.Desired(ctx)
	if err != nil {
		return err
	}
	for _, h := range holds {
		log.Warn("guard holds a change", "upstream", h.Upstream, "reason", h.Reason)
	}
	if err := p.engine.Save(next); err != nil {
		return err
	}
	var errs []error
	for _, t := range p.targets {
		t.Own(prev) // what the file had, nginx may have: delete what is gone
		if err := t.Sync(ctx, next); err != nil {
			errs = append(errs, err)
		}
	}
	if p.reload != nil {
		if err := p.reload.Apply(ctx, next); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	fmt.Fprintf(stdout, "synced %d upstreams to %d target(s); file %s\n", len(next), len(p.targets), cfg.File)
	return nil
}

// run is the daemon: it runs the pipeline for the configuration, and on
// SIGHUP assembles the configuration again; a configuration that does not
// validate is reported and the running one kept, a good one replaces it.
func run(ctx context.Context, cfg *config.Config, reloadConfig func() (*config.Config, error), stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := newLogger(stderr, cfg)
	log.Info("swallowkeeper started", "version", Version, "source", sourceName(cfg), "file", cfg.File, "targets", len(cfg.Targets))
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

// shutdownGrace is how long a push in flight may finish after a stop, so
// that nginx is not left half-updated.
const shutdownGrace = 5 * time.Second

// runPipeline runs sources, engine and sinks for one configuration until
// ctx ends.
func runPipeline(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := build(cfg, log, reg, false)
	if err != nil {
		return err
	}
	// Everything stops when the engine returns, also when it returns an
	// error while the caller's ctx is still live.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Sinks stop after the grace period, not at once: a push in flight
	// finishes.
	sinkCtx, cancelSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSinks()
	stopSinks := context.AfterFunc(ctx, func() {
		time.AfterFunc(shutdownGrace, cancelSinks)
	})
	defer stopSinks()

	var wg sync.WaitGroup
	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		// Routes, Host check and timeouts: listener.go.
		srv := newListenerServer(listenerHandler(cfg, p, reg))
		wg.Go(func() { srv.Serve(ln) })
		wg.Go(func() { // stop serving when the pipeline stops, so wg.Wait returns
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			srv.Shutdown(sctx)
		})
		log.Info("metrics listening", "addr", ln.Addr().String(), "pprof", cfg.Metrics.Pprof)
	}
	for _, t := range p.targets {
		wg.Go(func() { t.Run(ctx, sinkCtx) })
	}
	if p.reload != nil {
		wg.Go(func() { p.reload.Run(ctx) })
	}
	err = p.engine.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// readyHandler: ready once the persisted state is loaded, when there are
// dyups targets at least one of them holds the desired state, and in
// reload mode the last nginx test and reload did not fail (while they
// fail, nginx serves an older set and the sink retries).
func readyHandler(p *parts) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := p.engine.Status()
		if st == nil {
			http.Error(w, "not ready: persisted state not loaded yet", http.StatusServiceUnavailable)
			return
		}
		// A registry change that cannot be written (a full disk, a verify
		// command that refuses the file) reaches no nginx: say so.
		if st.PersistError != "" {
			http.Error(w, "not ready: the newest state is not persisted (retrying): "+st.PersistError, http.StatusServiceUnavailable)
			return
		}
		if p.reload != nil {
			if r := p.reload.Status(); r.Failing {
				http.Error(w, fmt.Sprintf("not ready: reload mode: nginx not reloaded for %s (%d failed attempts, retrying): %s",
					time.Since(r.FailingSince).Round(time.Second), r.Attempts, r.LastError), http.StatusServiceUnavailable)
				return
			}
		}
		if len(p.targets) > 0 {
			inSync := false
			for _, t := range p.targets {
				inSync = inSync || t.Status().InSync
			}
			if !inSync {
				http.Error(w, "not ready: no nginx target in sync yet", http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
}
