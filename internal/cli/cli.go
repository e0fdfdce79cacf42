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
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/daemon"
	"github.com/swallowkeeper/swallowkeeper/internal/drain"
	"github.com/swallowkeeper/swallowkeeper/internal/httpapi"
	"github.com/swallowkeeper/swallowkeeper/internal/store"
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
  swallowkeeper drain   [flags] UPSTREAM IP:PORT
                                  mark a server down in the file and in nginx until undrained; the registry is untouched
  swallowkeeper undrain [flags] UPSTREAM IP:PORT
                                  put a server drained by hand back in service (drain -list shows the marks)
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
	case "drain", "undrain":
		return drain.Command(cmd == "undrain", rest, stdout, stderr, DefaultConfigPath)
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
	if cfg == nil { // not YAML; other problems of the file come back from Validate, all at once
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

func check(cfg *config.Config, stdout io.Writer) error {
	st, err := store.OpenToRead(cfg.File).Load()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration ok: %s, %d target(s), persisted file %s (%d upstreams)\n",
		daemon.SourceName(cfg), len(cfg.Targets), cfg.File, len(st))
	if note := cfg.EtcdWrapperNote(); note != "" {
		fmt.Fprintln(stdout, note)
	}
	for _, note := range cfg.ConsulModeNotes() {
		fmt.Fprintln(stdout, "note:", note)
	}
	for _, note := range cfg.LuaPlaneNotes() {
		fmt.Fprintln(stdout, "note for a Lua-module target (nginx/lua):", note)
	}
	for _, note := range cfg.SplitNotes() {
		fmt.Fprintln(stdout, note)
	}
	return nil
}

// run is the daemon (package daemon), with SIGHUP relayed to it as its
// reload request.
func run(ctx context.Context, cfg *config.Config, reloadConfig func() (*config.Config, error), stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	version, revision := buildVersion()
	return daemon.Run(ctx, cfg, daemon.Options{Reload: reloadConfig, HUP: hup, Log: stderr, Version: version, Revision: revision})
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
