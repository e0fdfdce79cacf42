// Package wrapper wraps an application so that it joins the registry only
// once it is ready and leaves it before it stops: the order that gives zero
// failed requests while instances restart.
//
//	start app → wait until it answers its health check → register (passing)
//	SIGTERM   → deregister → wait until nginx no longer routes to it (drain)
//	          → grace for requests in flight → signal the app's process
//	          group → wait for the app → exit with its code
//	SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 → passed on to the app's group
//	app dies  → deregister at once → exit with its code
//	wrapper killed (even SIGKILL) → the app is killed too (Pdeathsig)
//
// A wrapper that finds the app's port taken before it starts the app (an
// orphan of an earlier wrapper, another instance) refuses to start and
// leaves the registry alone: the registration there may be the other
// process's.
//
// Without a command it runs as a sidecar: register once the health check
// answers, deregister and drain on SIGTERM, exit.
//
// Command is the command line (swallowkeeper register), Run the wrapping.
// The etcd and ZooKeeper registrars write their entries through package
// layout, through which the daemon's sources read them.
package wrapper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Options describe the instance and how to wrap it.
type Options struct {
	Service, ID string
	// Address is the IP literal the proxy should use. Empty lets the
	// registry fill it in: Consul gives the node's address. Registrars
	// that cannot (etcd, ZooKeeper) refuse an empty address.
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string

	// Check is the instance's health check: "http://host:port/path" or
	// "tcp://host:port". The wrapper waits for it before registering, and
	// Consul keeps running it every CheckInterval.
	Check         string
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// DeregisterAfter has Consul delete the registration once its check
	// has been critical this long (the app and its wrapper are gone
	// without deregistering, e.g. both killed). The failing check alone
	// already takes the instance out of nginx.
	DeregisterAfter time.Duration

	ReadyTimeout time.Duration // how long to wait for the app to answer
	// RegisterTimeout bounds registry retries at start; the app keeps
	// running unregistered after it (and the error is logged), 0 = forever.
	RegisterTimeout time.Duration

	// Drain is how long to wait after deregistering before stopping the
	// app, when no DrainURL tells when it is safe; with DrainURL it is the
	// longest wait for nginx to drop the instance.
	Drain time.Duration
	// DrainURL is a dyups API base URL (nginx or the Lua plane;
	// http://host:port or unix:/path): the wrapper polls GET
	// /upstream/<Upstream> until an answer 200 no longer lists the
	// instance's address; errors and 404s prove nothing and it polls on.
	DrainURL string
	// DrainSecret goes in X-SwallowKeeper-Secret on the drain's requests,
	// for a Lua API configured with secret_file.
	DrainSecret config.Secret
	// DrainGrace is the wait after DrainURL shows the instance gone and
	// before the app gets its stop signal: requests nginx sent before are
	// still running, and real dyups's other workers lag up to
	// dyups_read_msg_timeout.
	DrainGrace time.Duration
	// Upstream is the upstream name in nginx (default: the service; a
	// <CanaryTag>=<x> tag makes it <service>_<x>).
	Upstream string
	// CanaryTag is the daemon's upstreams.canary_tag (default "gray").
	CanaryTag string

	StopSignal  syscall.Signal
	StopTimeout time.Duration // then SIGKILL to the app's group

	// Reap makes the wrapper wait for every child it inherits, not only
	// the app: set it when the wrapper is PID 1 (a container's init) or
	// a child subreaper, or orphans of the app stay zombies.
	Reap bool
}

// registration is the instance as the registrars of key-value registries
// (etcd, ZooKeeper) write it, through package layout.
func (o Options) registration() layout.Registration {
	return layout.Registration{Service: o.Service, ID: o.ID, Upstream: o.Upstream,
		Address: o.Address, Port: o.Port, Tags: o.Tags, Meta: o.Meta}
}

// Registrar is the registry side: Consul's agent API, an etcd key under a
// lease, or a ZooKeeper ephemeral znode.
type Registrar interface {
	Register(ctx context.Context, o Options) error
	Deregister(ctx context.Context, id string) error
}

// LocalChecker is a Registrar whose registry runs no health checks (etcd,
// ZooKeeper): the wrapper runs the instance's check itself every
// CheckInterval, takes the instance out while it fails and puts it back
// when it passes again, as Consul's agent does for the Consul registrar.
type LocalChecker interface {
	Registrar
	ChecksLocally()
}

// AddressResolver is a Registrar that can fill in the address (Consul: the
// node's) and read back, after Register, the address it gave the
// instance: the one nginx lists, which draining looks for.
type AddressResolver interface {
	Registrar
	InstanceAddress(ctx context.Context, o Options) (string, error)
}

// Validate checks the options, with the same rules the daemon applies to
// registry data: what the wrapper registers must be usable by the daemon.
// An empty Address is accepted (the registry fills it in).
func (o *Options) Validate() error {
	var errs []error
	if o.Service == "" {
		errs = append(errs, errors.New("-service is required"))
	}
	if o.Address != "" {
		if _, err := upstream.ParseIP(o.Address); err != nil {
			errs = append(errs, fmt.Errorf("-address: %w", err))
		}
	}
	if err := upstream.ValidPort(o.Port); err != nil {
		errs = append(errs, fmt.Errorf("-port: %w", err))
	}
	if o.CanaryTag == "" {
		o.CanaryTag = "gray"
	}
	if strings.ContainsAny(o.CanaryTag, "= \t\n") {
		errs = append(errs, fmt.Errorf("-canary-tag %q: a tag key, without '=' or spaces", o.CanaryTag))
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		o.ID = fmt.Sprintf("%s-%s-%d", o.Service, host, o.Port)
	}
	// The service, the id and the upstream become registry keys and the
	// drain URL's path: a '/' would nest the key elsewhere, and a name the
	// daemon refuses would never route.
	for _, f := range [][2]string{{"-service", o.Service}, {"-id", o.ID}} {
		if strings.ContainsAny(f[1], "/\x00\n") {
			errs = append(errs, fmt.Errorf("%s %q: no '/' or control characters", f[0], f[1]))
		}
	}
	if o.Upstream != "" {
		if err := upstream.ValidName(o.Upstream); err != nil {
			errs = append(errs, fmt.Errorf("-upstream: %w", err))
		}
	} else if o.Service != "" {
		name, err := upstreamName(o)
		if err != nil {
			errs = append(errs, err)
		}
		o.Upstream = name
	}
	if o.Check != "" && !strings.HasPrefix(o.Check, "http://") && !strings.HasPrefix(o.Check, "https://") && !strings.HasPrefix(o.Check, "tcp://") {
		errs = append(errs, fmt.Errorf("-check %q: want http://host:port/path or tcp://host:port", o.Check))
	}
	return errors.Join(errs...)
}

// upstreamName is the upstream the daemon would put the instance in, by
// the daemon's own rules. The address plays no part in the name, and the
// daemon's address policy is its own configuration, so a documentation
// address (192.0.2.1) stands in for it here.
func upstreamName(o *Options) (string, error) {
	st, dropped := registry.Build(map[string][]registry.Instance{o.Service: {{
		Service: o.Service, ID: o.ID, Address: "192.0.2.1", Port: max(o.Port, 1), Tags: o.Tags, Meta: o.Meta, Healthy: true,
	}}}, registry.Rules{CanaryTag: o.CanaryTag, WeightMeta: "weight", Weight: 1, FailTimeout: 10 * time.Second})
	if len(dropped) > 0 {
		return "", fmt.Errorf("the daemon would drop this instance: %s", dropped[0].Reason)
	}
	if names := st.Names(); len(names) > 0 {
		return names[0], nil
	}
	return "", errors.New("the daemon would not route to this instance")
}

// Run wraps argv (or runs as a sidecar when argv is empty) and returns the
// exit code to use.
func Run(ctx context.Context, o Options, argv []string, reg Registrar, log *slog.Logger, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	fwd := make(chan os.Signal, 4)
	signal.Notify(fwd, forwarded...)
	defer signal.Stop(fwd)
	warnAddress(o, log)

	w := &wrapping{o: o, reg: reg, log: log}
	if len(argv) > 0 {
		if code, ok := w.launch(ctx, argv, stdout, stderr); !ok {
			return code
		}
		defer w.stopReaping()
	}
	if o.Address != "" {
		w.drainAddr = layout.JoinHostPort(o.Address, o.Port)
	}

	// Ready, then registered: in the background, so a signal or the app's
	// death is handled at any moment. It does not inherit ctx: the stop
	// path decides when registering ends.
	registered := make(chan bool, 1)
	regCtx, cancelReg := context.WithCancel(context.Background())
	defer cancelReg()
	go func() { registered <- ready(regCtx, o, reg, log) }()

	// regMu orders the local health loop's registrations before a stop's
	// deregistration: once the stop holds it, nothing registers again.
	endReg := func() {
		cancelReg()
		w.regMu.Lock() // held for good: the wrapper is leaving
	}
	stop := stopper(o, reg, log, w.app, w.exited, endReg, w.nginxAddr)
	for {
		select {
		case ok := <-registered:
			registered = nil
			if w.app == nil && !ok {
				return 1
			}
			if ok {
				w.follow(regCtx)
			}
		case sig := <-fwd:
			w.forward(sig)
		case code := <-w.exited:
			// The app died on its own: leave the registry at once.
			endReg()
			log.Warn("app exited; deregistering", "code", code)
			deregister(o, reg, log)
			endGroup(w.app, o.StopSignal, min(o.StopTimeout, leftoverGrace), log)
			return code
		case sig := <-sigs:
			return stop(sig.String())
		case <-ctx.Done(): // the caller's stop (its own signal handling)
			return stop("context ended")
		}
	}
}

// warnAddress warns when the daemon's default address policy refuses the
// instance's address.
func warnAddress(o Options, log *slog.Logger) {
	if o.Address == "" {
		return
	}
	if ip, err := upstream.ParseIP(o.Address); err == nil {
		if err := (upstream.AddressPolicy{}).Check(ip); err != nil {
			log.Warn("the daemon refuses this address unless its upstreams.allow_addresses allows it", "reason", err)
		}
	}
}

// wrapping is the state of one Run.
type wrapping struct {
	o   Options
	reg Registrar
	log *slog.Logger

	app         *exec.Cmd
	exited      <-chan int // nil without an app
	stopReaping func()
	regMu       sync.Mutex // see Run
	addrMu      sync.Mutex
	drainAddr   string // the address nginx lists, "" until known
}

// launch starts the app, unless another process already serves its port
// or its check; ok is false with the exit code when it did not start.
func (w *wrapping) launch(ctx context.Context, argv []string, stdout, stderr io.Writer) (code int, ok bool) {
	o, log := w.o, w.log
	// Before anything touches the registry: a port that is already
	// taken means another process (an orphaned app, a second
	// instance) serves there, and the registration under this ID may
	// be its own.
	if err := portInUse(o.Port); err != nil {
		log.Error("refusing to start: something already listens on the app's port; the registry is left untouched", "err", err)
		return 1, false
	}
	if o.Check != "" {
		pctx, cancel := context.WithTimeout(ctx, max(o.CheckTimeout, time.Second))
		err := probe(pctx, &http.Client{Timeout: max(o.CheckTimeout, time.Second)}, o.Check)
		cancel()
		if err == nil {
			log.Error("refusing to start: the health check already passes before the app started (another process answers it); the registry is left untouched", "check", o.Check)
			return 1, false
		}
	}
	w.app = exec.Command(argv[0], argv[1:]...)
	w.app.Stdin, w.app.Stdout, w.app.Stderr = os.Stdin, stdout, stderr
	// The app gets the wrapper's environment less the ZooKeeper
	// credentials, which own its znodes: the app has no use for them.
	w.app.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, ZooKeeperAuthEnv+"=")
	})
	var err error
	if w.exited, err = startApp(w.app); err != nil {
		log.Error("cannot start the app", "cmd", argv[0], "err", err)
		return 127, false
	}
	log.Info("app started", "pid", w.app.Process.Pid, "cmd", strings.Join(argv, " "))
	w.stopReaping = func() {}
	if o.Reap {
		rctx, cancel := context.WithCancel(context.Background())
		w.stopReaping = cancel
		go reapOrphans(rctx, w.app.Process.Pid, log)
	}
	return 0, true
}

// nginxAddr is the address nginx lists: the given one, or (Consul without
// one) the one the registry gave, read back after registering.
func (w *wrapping) nginxAddr() string {
	w.addrMu.Lock()
	defer w.addrMu.Unlock()
	return w.drainAddr
}

// follow starts what runs once the instance is registered: the local
// health loop for a registry without checks, and reading back the address
// a registry filled in.
func (w *wrapping) follow(ctx context.Context) {
	o := w.o
	if lc, local := w.reg.(LocalChecker); local && o.Check != "" {
		go checkLocally(ctx, &w.regMu, o, lc, w.log)
	}
	if ar, can := w.reg.(AddressResolver); can && o.Address == "" {
		go func() {
			if a := resolveAddress(ctx, o, ar, w.log); a != "" {
				w.addrMu.Lock()
				w.drainAddr = a
				w.addrMu.Unlock()
			}
		}()
	}
}

// forward passes a signal on to the app's process group.
func (w *wrapping) forward(sig os.Signal) {
	if w.app == nil {
		w.log.Info("signal ignored: no app to pass it to", "signal", sig.String())
		return
	}
	w.log.Info("passing the signal on to the app's process group", "signal", sig.String())
	if err := signalGroup(w.app, sig.(syscall.Signal)); err != nil {
		w.log.Warn("passing the signal on failed", "signal", sig.String(), "err", err)
	}
}

// leftoverGrace bounds the wait for the rest of the app's process group
// after the app exited (at most StopTimeout).
const leftoverGrace = 5 * time.Second

// resolveAddress reads back the address the registry gave the instance,
// retrying until it answers or ctx ends; "" if it never did.
func resolveAddress(ctx context.Context, o Options, reg AddressResolver, log *slog.Logger) string {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a, err := reg.InstanceAddress(rctx, o)
		cancel()
		if err == nil {
			ip, perr := upstream.ParseIP(a)
			if perr != nil {
				log.Warn("the registry gave the instance an address nginx cannot use", "address", a, "err", perr)
				return ""
			}
			addr := layout.JoinHostPort(ip.String(), o.Port)
			log.Info("the registry filled in the instance's address", "address", addr)
			return addr
		}
		if b.Attempts() == 3 {
			log.Warn("cannot read back the instance's address yet; retrying (until then a stop drains for the whole -drain)", "err", err)
		}
		if backoff.Sleep(ctx, b.Next()) != nil {
			return ""
		}
	}
}

// stopper builds the ordered stop: deregister, drain, then stop the app's
// process group.
func stopper(o Options, reg Registrar, log *slog.Logger, app *exec.Cmd, exited <-chan int, cancelReg func(), nginxAddr func() string) func(string) int {
	return func(why string) int {
		cancelReg()
		log.Info("stop requested; deregistering first", "why", why)
		deregister(o, reg, log)
		drain(o, nginxAddr(), log)
		if app == nil {
			return 0
		}
		log.Info("forwarding the stop to the app's process group", "signal", o.StopSignal.String())
		if err := signalGroup(app, o.StopSignal); err != nil {
			log.Warn("signalling the app failed", "err", err)
		}
		select {
		case code := <-exited:
			log.Info("app stopped", "code", code)
			endGroup(app, 0, min(o.StopTimeout, leftoverGrace), log)
			return code
		case <-time.After(o.StopTimeout):
			log.Error("app did not stop in time; killing its process group", "timeout", o.StopTimeout)
			signalGroup(app, syscall.SIGKILL)
			code := <-exited
			endGroup(app, syscall.SIGKILL, time.Second, log)
			return code
		}
	}
}

// checkLocally runs the instance's check every CheckInterval for a
// registry without checks of its own, deregistering on the first failure
// and registering again on the next pass.
func checkLocally(ctx context.Context, mu *sync.Mutex, o Options, reg LocalChecker, log *slog.Logger) {
	client := &http.Client{Timeout: o.CheckTimeout}
	tick := time.NewTicker(o.CheckInterval)
	defer tick.Stop()
	healthy := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, o.CheckTimeout)
		err := probe(pctx, client, o.Check)
		cancel()
		if (err == nil) == healthy {
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err != nil {
			log.Warn("health check failing; taking the instance out", "check", o.Check, "err", err)
			if derr := reg.Deregister(rctx, o.ID); derr == nil {
				healthy = false
			} else {
				log.Error("deregister after a failed check failed; will retry", "err", derr)
			}
		} else {
			if rerr := reg.Register(rctx, o); rerr == nil {
				healthy = true
				log.Info("health check passing again; instance registered", "check", o.Check)
			} else {
				log.Warn("register after a passing check failed; will retry", "err", rerr)
			}
		}
		cancel()
		mu.Unlock()
	}
}

// ready waits for the health check, then registers with retries. It
// reports whether the instance got registered.
func ready(ctx context.Context, o Options, reg Registrar, log *slog.Logger) bool {
	if o.Check != "" {
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
		err := waitHealthy(rctx, o.Check)
		cancel()
		if err != nil {
			log.Error("app never answered its health check; not registering", "check", o.Check, "err", err)
			return false
		}
		log.Info("app is ready", "check", o.Check, "after", time.Since(start).Round(time.Millisecond))
	}
	rctx := ctx
	if o.RegisterTimeout > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, o.RegisterTimeout)
		defer cancel()
	}
	b := backoff.New(200*time.Millisecond, 10*time.Second)
	for {
		err := reg.Register(rctx, o)
		if err == nil {
			addr := "(the registry's choice):" + fmt.Sprint(o.Port)
			if o.Address != "" {
				addr = layout.JoinHostPort(o.Address, o.Port)
			}
			log.Info("registered", "service", o.Service, "id", o.ID, "address", addr, "upstream", o.Upstream)
			return true
		}
		d := b.Next()
		log.Warn("register failed; retrying (the app keeps running)", "err", err, "retry_in", d)
		if backoff.Sleep(rctx, d) != nil {
			log.Error("giving up registering; the app runs unregistered", "err", err)
			return false
		}
	}
}

func deregister(o Options, reg Registrar, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := backoff.New(100*time.Millisecond, time.Second)
	for {
		err := reg.Deregister(ctx, o.ID)
		if err == nil {
			log.Info("deregistered", "id", o.ID)
			return
		}
		d := b.Next()
		if backoff.Sleep(ctx, d) != nil {
			log.Error("deregister failed; the check will take the instance out", "err", err)
			return
		}
	}
}

// waitHealthy polls the check until it passes.
func waitHealthy(ctx context.Context, check string) error {
	client := &http.Client{Timeout: time.Second}
	return backoff.Poll(ctx, 50*time.Millisecond, func() error { return probe(ctx, client, check) })
}

func probe(ctx context.Context, client *http.Client, check string) error {
	if hostport, ok := strings.CutPrefix(check, "tcp://"); ok {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", hostport)
		if err != nil {
			return err
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, check, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
