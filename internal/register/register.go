// Package register wraps an application so that it joins the registry only
// once it is ready and leaves it before it stops: the order that gives zero
// failed requests while instances restart.
//
//	start app → wait until it answers its health check → register (passing)
//	SIGTERM   → deregister → wait until nginx no longer routes to it (drain)
//	          → forward the signal → wait for the app → exit with its code
//	app dies  → deregister at once → exit with its code
//
// Without a command it runs as a sidecar: register once the health check
// answers, deregister and drain on SIGTERM, exit.
package register

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Options describe the instance and how to wrap it.
type Options struct {
	Service, ID string
	Address     string // IP literal the proxy should use
	Port        int
	Tags        []string
	Meta        map[string]string

	// Check is the instance's health check: "http://host:port/path" or
	// "tcp://host:port". The wrapper waits for it before registering, and
	// Consul keeps running it every CheckInterval.
	Check         string
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// DeregisterAfter has Consul remove the instance once its check has
	// been critical this long (covers a wrapper killed with SIGKILL).
	DeregisterAfter time.Duration

	ReadyTimeout time.Duration // how long to wait for the app to answer
	// RegisterTimeout bounds registry retries at start; the app keeps
	// running unregistered after it (and the error is logged), 0 = forever.
	RegisterTimeout time.Duration

	// Drain is how long to wait after deregistering before stopping the
	// app, when no DrainURL tells when it is safe; with DrainURL it is the
	// longest wait.
	Drain time.Duration
	// DrainURL is a dyups API base URL (nginx or the Lua plane): the
	// wrapper polls GET /upstream/<upstream> until the instance's address
	// is gone, then stops the app.
	DrainURL string
	// Upstream is the upstream name in nginx (default: the service; a
	// gray=<x> tag makes it <service>_<x>).
	Upstream string

	StopSignal  syscall.Signal
	StopTimeout time.Duration // then SIGKILL
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

// Validate checks the options, with the same rules the daemon applies to
// registry data: what the wrapper registers must be usable by the daemon.
func (o *Options) Validate() error {
	var errs []error
	if o.Service == "" {
		errs = append(errs, errors.New("-service is required"))
	}
	if _, err := upstream.ParseIP(o.Address); err != nil {
		errs = append(errs, fmt.Errorf("-address: %w", err))
	}
	if err := upstream.ValidPort(o.Port); err != nil {
		errs = append(errs, fmt.Errorf("-port: %w", err))
	}
	if o.ID == "" {
		host, _ := os.Hostname()
		o.ID = fmt.Sprintf("%s-%s-%d", o.Service, host, o.Port)
	}
	if o.Upstream == "" {
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

func upstreamName(o *Options) (string, error) {
	st, dropped := registry.Build(map[string][]registry.Instance{o.Service: {{
		Service: o.Service, ID: o.ID, Address: o.Address, Port: o.Port, Tags: o.Tags, Meta: o.Meta, Healthy: true,
	}}}, registry.Rules{CanaryTag: "gray", WeightMeta: "weight", Weight: 1, FailTimeout: 10 * time.Second})
	if len(dropped) > 0 {
		return "", fmt.Errorf("the daemon would drop this instance: %s", dropped[0].Reason)
	}
	return st.Names()[0], nil
}

// Run wraps argv (or runs as a sidecar when argv is empty) and returns the
// exit code to use.
func Run(ctx context.Context, o Options, argv []string, reg Registrar, log *slog.Logger, stdout, stderr io.Writer) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	var app *exec.Cmd
	exited := make(chan int, 1)
	if len(argv) > 0 {
		app = exec.Command(argv[0], argv[1:]...)
		app.Stdin, app.Stdout, app.Stderr = os.Stdin, stdout, stderr
		if err := app.Start(); err != nil {
			log.Error("cannot start the app", "cmd", argv[0], "err", err)
			return 127
		}
		log.Info("app started", "pid", app.Process.Pid, "cmd", strings.Join(argv, " "))
		go func() { exited <- exitCode(app.Wait()) }()
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
	var regMu sync.Mutex
	endReg := func() {
		cancelReg()
		regMu.Lock() // held for good: the wrapper is leaving
	}
	stop := stopper(o, reg, log, app, exited, endReg)
	for {
		select {
		case ok := <-registered:
			registered = nil
			if app == nil && !ok {
				return 1
			}
			if lc, local := reg.(LocalChecker); ok && local && o.Check != "" {
				go checkLocally(regCtx, &regMu, o, lc, log)
			}
		case code := <-exited:
			// The app died on its own: leave the registry at once.
			endReg()
			log.Warn("app exited; deregistering", "code", code)
			deregister(o, reg, log)
			return code
		case sig := <-sigs:
			return stop(sig.String())
		case <-ctx.Done(): // the caller's stop (its own signal handling)
			return stop("context ended")
		}
	}
}

// stopper builds the ordered stop: deregister, drain, then stop the app.
func stopper(o Options, reg Registrar, log *slog.Logger, app *exec.Cmd, exited <-chan int, cancelReg func()) func(string) int {
	return func(why string) int {
		cancelReg()
		log.Info("stop requested; deregistering first", "why", why)
		deregister(o, reg, log)
		drain(o, log)
		if app == nil {
			return 0
		}
		log.Info("forwarding the stop to the app", "signal", o.StopSignal.String())
		app.Process.Signal(o.StopSignal)
		select {
		case code := <-exited:
			log.Info("app stopped", "code", code)
			return code
		case <-time.After(o.StopTimeout):
			log.Error("app did not stop in time; killing it", "timeout", o.StopTimeout)
			app.Process.Kill()
			return <-exited
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
			log.Info("registered", "service", o.Service, "id", o.ID, "address", fmt.Sprintf("%s:%d", o.Address, o.Port), "upstream", o.Upstream)
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

// drain waits until nginx no longer routes to the instance: with DrainURL,
// until GET /upstream/<name> stops listing its address (or the upstream is
// gone), at most Drain; without, Drain.
func drain(o Options, log *slog.Logger) {
	start := time.Now()
	if o.DrainURL == "" {
		time.Sleep(o.Drain)
		log.Info("drained", "waited", o.Drain)
		return
	}
	addr := addrPort(o).String()
	url := strings.TrimSuffix(o.DrainURL, "/") + "/upstream/" + o.Upstream
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for time.Since(start) < o.Drain {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			listed := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "server "+addr+"\n")
			if !listed {
				log.Info("drained: nginx no longer routes to the instance", "waited", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("drain: nginx still listed the instance when the drain time ran out", "drain", o.Drain)
}

// addrPort is the address as nginx lists it ([v6]:port for IPv6).
func addrPort(o Options) netip.AddrPort {
	ip, _ := upstream.ParseIP(o.Address) // validated
	return netip.AddrPortFrom(ip, uint16(o.Port))
}

// waitHealthy polls the check until it passes.
func waitHealthy(ctx context.Context, check string) error {
	client := &http.Client{Timeout: time.Second}
	var last error
	for {
		last = probe(ctx, client, check)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
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

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

// Consul registers through the local agent, with the health check the
// agent then runs.
type Consul struct{ Client *api.Client }

// Register implements Registrar. The check starts passing: the wrapper has
// just seen the app answer it.
func (c Consul) Register(ctx context.Context, o Options) error {
	r := &api.AgentServiceRegistration{
		ID: o.ID, Name: o.Service, Address: o.Address, Port: o.Port, Tags: o.Tags, Meta: o.Meta,
	}
	if o.Check != "" {
		chk := &api.AgentServiceCheck{
			Interval: o.CheckInterval.String(), Timeout: o.CheckTimeout.String(), Status: api.HealthPassing,
		}
		if o.DeregisterAfter > 0 {
			chk.DeregisterCriticalServiceAfter = o.DeregisterAfter.String()
		}
		if hostport, ok := strings.CutPrefix(o.Check, "tcp://"); ok {
			chk.TCP = hostport
		} else {
			chk.HTTP = o.Check
		}
		r.Check = chk
	}
	err := c.Client.Agent().ServiceRegisterOpts(r, api.ServiceRegisterOpts{}.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: register %s: %w", o.ID, err)
	}
	return nil
}

// Deregister implements Registrar.
func (c Consul) Deregister(ctx context.Context, id string) error {
	if err := c.Client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: deregister %s: %w", id, err)
	}
	return nil
}
