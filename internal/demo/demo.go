// Package demo runs SwallowKeeper for real on loopback: a Consul agent,
// stock nginx with the Lua dyups module, three backends, the daemon and a
// steady stream of requests, and narrates what happens while instances
// join, fail a check, crash and come back. Nothing is simulated: the
// backends are real HTTP servers that Consul checks over HTTP.
package demo

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// Options say where the programs are.
type Options struct {
	loopback.Programs
	Registry           string // consul, etcd or zookeeper
	Etcd, Java         string
	ZooKeeperClasspath string
	Keep               bool // stay up after the script, until interrupted
	Rate               int  // requests per second
	Split              bool // the traffic split story instead (Consul only)
}

// Main is the demo's command line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("swallowkeeper-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.Registry, "registry", "consul", "registry to run the demo with: consul, etcd or zookeeper")
	o.Programs.Flags(fs)
	fs.StringVar(&o.Etcd, "etcd", "/usr/bin/etcd", "etcd binary (Debian's etcd-server), for -registry etcd")
	fs.StringVar(&o.Java, "java", "java", "java, for -registry zookeeper")
	fs.StringVar(&o.ZooKeeperClasspath, "zookeeper-classpath", "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar", "ZooKeeper's classpath (Debian's zookeeper package), for -registry zookeeper")
	fs.BoolVar(&o.Keep, "keep", false, "keep everything running after the script until Ctrl-C, to explore")
	fs.IntVar(&o.Rate, "rate", 200, "requests per second through nginx")
	fs.BoolVar(&o.Split, "split", false, "show a canary split moving 90/10 → 50/50 → 0/100 through Consul KV (needs -registry consul)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	d := &demo{opt: o, out: stdout}
	err := d.run(ctx)
	d.cleanup()
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		if d.dir != "" {
			fmt.Fprintf(stderr, "demo: logs kept in %s\n", d.dir)
		}
		return 1
	}
	// A run that passed leaves nothing behind: its logs and registry data
	// are kept only when something failed, to read.
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			fmt.Fprintf(stderr, "demo: remove %s: %v\n", d.dir, err)
		}
	}
	return 0
}

type demo struct {
	opt   Options
	out   io.Writer
	dir   string
	procs []*proc
	ports map[string]int

	consul   *api.Client
	registry registryKind
	backends []*loopback.Backend
	load     *loadGen
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n\033[1m==> "+format+"\033[0m\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	if d.opt.Split && d.opt.Registry != "consul" {
		return fmt.Errorf("-split needs -registry consul (the rules are read from Consul KV)")
	}
	if err := d.setUp(ctx); err != nil {
		return err
	}
	if d.opt.Split {
		return d.runSplit(ctx)
	}

	d.say("Registering web-1 and web-2 in %s with HTTP health checks", d.opt.Registry)
	d.register(d.backends[0])
	d.register(d.backends[1])
	if err := d.waitRouting(ctx, "web-1", "web-2"); err != nil {
		return err
	}
	d.load = startLoad(ctx, fmt.Sprintf("http://127.0.0.1:%d/", d.ports["nginx_proxy"]), "web", d.opt.Rate)
	d.watch(ctx, 3*time.Second, "traffic through nginx, per backend")

	checkNote := d.registry.checkNote()
	steps := []struct {
		title string
		do    func()
		want  []string
		note  string
		after func()
	}{
		{"web-3 starts and registers: it joins without a reload", func() { d.register(d.backends[2]) },
			[]string{"web-1", "web-2", "web-3"}, checkNote + ": a new instance joins once its first check passes", nil},
		{"web-2's health check starts failing: it leaves nginx", func() { d.backends[1].SetHealthy(false) },
			[]string{"web-1", "web-3"}, checkNote, nil},
		{"web-2 recovers: it comes back", func() { d.backends[1].SetHealthy(true) },
			[]string{"web-1", "web-2", "web-3"}, checkNote, nil},
		{"web-3 is stopped gracefully: it deregisters first, then stops once nginx no longer sends it traffic",
			func() { d.registry.deregister(d.backends[2]) },
			[]string{"web-1", "web-2"}, "(registry write → nginx: the daemon's own latency)", func() { d.backends[2].Crash() }},
		{"web-1 crashes (no deregistration): nginx retries the next server at once, then the health check removes it",
			func() { d.backends[0].Crash() }, []string{"web-2"}, "(nginx's own retry; no request fails)", nil},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.say("%s", s.title)
		start := time.Now()
		s.do()
		if err := d.waitRouting(ctx, s.want...); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "    nginx routes to %v %v after the change %s\n", s.want, time.Since(start).Round(time.Millisecond), s.note)
		if s.after != nil {
			s.after()
		}
		d.watch(ctx, 3*time.Second, "traffic through nginx, per backend")
	}

	return d.finish(ctx)
}

// setUp starts the registry, nginx, the backends and the daemon.
func (d *demo) setUp(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "swallowkeeper-demo-"); err != nil {
		return err
	}
	d.ports = map[string]int{}
	if d.registry, err = newRegistry(d.opt.Registry); err != nil {
		return err
	}
	for _, name := range []string{"registry", "registry_peer", "consul_server", "consul_serf_lan", "consul_serf_wan", "nginx_proxy", "nginx_api", "metrics"} {
		if d.ports[name], err = freePort(); err != nil {
			return err
		}
	}

	if err := d.startRegistryOnFreePorts(ctx); err != nil {
		return err
	}
	d.say("Starting nginx (stock Debian nginx + lua) — proxy on 127.0.0.1:%d, dyups API on 127.0.0.1:%d", d.ports["nginx_proxy"], d.ports["nginx_api"])
	if err := d.startNginxOnFreePorts(); err != nil {
		return err
	}
	d.say("Starting three backends (each answers its own name)")
	for i := 1; i <= 3; i++ {
		b, err := loopback.NewBackend(fmt.Sprintf("web-%d", i))
		if err != nil {
			return err
		}
		d.backends = append(d.backends, b)
		fmt.Fprintf(d.out, "    %s on %s\n", b.ID, b.Addr())
	}
	d.say("Starting swallowkeeper: %s → %s → nginx memory", d.opt.Registry, filepath.Join(d.dir, "upstreams.conf"))
	if err := d.startDaemon(); err != nil {
		return err
	}
	return nil
}

// finish reports the totals and the file, keeps everything running with
// -keep until ctx ends, and fails when a request failed.
func (d *demo) finish(ctx context.Context) error {
	total, failed := d.load.totals()
	d.say("Done: %d requests through nginx, %d failed", total, failed)
	fmt.Fprintf(d.out, "    The persisted file nginx starts from:\n\n")
	b, _ := os.ReadFile(filepath.Join(d.dir, "upstreams.conf"))
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		fmt.Fprintf(d.out, "      %s\n", line)
	}
	if d.opt.Keep {
		d.say("Still running; press Ctrl-C to stop. Try:")
		fmt.Fprintf(d.out, "    curl -H 'Host: web' http://127.0.0.1:%d/\n", d.ports["nginx_proxy"])
		fmt.Fprintf(d.out, "    curl http://127.0.0.1:%d/detail\n", d.ports["nginx_api"])
		if d.opt.Registry == "consul" {
			fmt.Fprintf(d.out, "    curl http://127.0.0.1:%d/v1/health/service/web\n", d.ports["registry"])
		}
		fmt.Fprintf(d.out, "    curl http://127.0.0.1:%d/metrics | grep swallowkeeper_\n", d.ports["metrics"])
		fmt.Fprintf(d.out, "    logs: %s\n", d.dir)
		<-ctx.Done()
	}
	d.load.stop()
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, total)
	}
	return nil
}

func (d *demo) startConsul(ctx context.Context) error {
	p := d.ports
	agent, err := d.startProc("consul", d.opt.Consul, "agent", "-dev", "-node=demo",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+strconv.Itoa(p["registry"]), "-server-port="+strconv.Itoa(p["consul_server"]),
		"-serf-lan-port="+strconv.Itoa(p["consul_serf_lan"]), "-serf-wan-port="+strconv.Itoa(p["consul_serf_wan"]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-log-level=warn")
	if err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	cfg.Address = fmt.Sprintf("127.0.0.1:%d", p["registry"])
	if d.consul, err = api.NewClient(cfg); err != nil {
		return err
	}
	return d.waitUp(ctx, agent, "consul", "", 30*time.Second, func() bool {
		l, err := d.consul.Status().Leader()
		return err == nil && l != ""
	})
}

const nginxConf = `# Generated by swallowkeeper-demo.
worker_processes 2;
error_log {{dir}}/nginx-error.log warn;
pid {{dir}}/nginx.pid;
{{modules}}events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path {{dir}}/tmp; proxy_temp_path {{dir}}/tmp;
    fastcgi_temp_path {{dir}}/tmp; uwsgi_temp_path {{dir}}/tmp; scgi_temp_path {{dir}}/tmp;
    lua_package_path "{{repo}}/nginx/lua/?.lua;;";
    lua_shared_dict swallowkeeper 16m;
    init_by_lua_block { require("swallowkeeper.dyups").init({ dict = "swallowkeeper", persisted_file = "{{dir}}/upstreams.conf" }) }
    init_worker_by_lua_block { require("swallowkeeper.dyups").init_worker() }
    upstream swallowkeeper_backend {
        server 0.0.0.1;
        balancer_by_lua_block { require("swallowkeeper.dyups").balance() }
        keepalive 32;
    }
    map $host $sk_service { default ""; web web; }
    server {
        listen 127.0.0.1:{{api}};
        allow 127.0.0.1; deny all;
        location / { content_by_lua_block { require("swallowkeeper.dyups").api() } }
        location /split { content_by_lua_block { require("swallowkeeper.split").api() } }
    }
    server {
        listen 127.0.0.1:{{proxy}};
        location / {
            if ($sk_service = "") { return 404; }
            set_by_lua_block $sk_upstream { return require("swallowkeeper.split").route(ngx.var.sk_service) }
            proxy_pass http://swallowkeeper_backend;
            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 1s;
            log_by_lua_block { require("swallowkeeper.dyups").log() }
        }
    }
}
`

func (d *demo) startNginx() error {
	if err := os.MkdirAll(filepath.Join(d.dir, "tmp"), 0o755); err != nil {
		return err
	}
	repo, err := filepath.Abs(d.opt.RepoRoot)
	if err != nil {
		return err
	}
	modules, err := loopback.LuaModules(d.opt.Nginx)
	if err != nil {
		return err
	}
	conf := strings.NewReplacer("{{dir}}", d.dir, "{{repo}}", repo, "{{modules}}", modules,
		"{{api}}", strconv.Itoa(d.ports["nginx_api"]), "{{proxy}}", strconv.Itoa(d.ports["nginx_proxy"])).Replace(nginxConf)
	path := filepath.Join(d.dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	n, err := d.startProc("nginx", d.opt.Nginx, "-p", d.dir, "-c", path, "-g", "daemon off;")
	if err != nil {
		return err
	}
	// Ready when this nginx has bound its ports and its API answers.
	api := fmt.Sprintf("http://127.0.0.1:%d/list", d.ports["nginx_api"])
	return d.waitUp(context.Background(), n, "nginx", filepath.Join(d.dir, "nginx-error.log"), 10*time.Second, func() bool {
		if !loopback.NginxBound(filepath.Join(d.dir, "nginx.pid"), n.cmd.Process.Pid) {
			return false
		}
		resp, err := http.Get(api)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// startNginxOnFreePorts starts nginx, on new ports when another program
// took one of them first (three tries).
func (d *demo) startNginxOnFreePorts() error {
	err := d.startNginx()
	for try := 1; errors.Is(err, errPortTaken) && try < 3; try++ {
		for _, name := range []string{"nginx_proxy", "nginx_api"} {
			if d.ports[name], err = freePort(); err != nil {
				return err
			}
		}
		d.say("A port was taken meanwhile; starting nginx again on 127.0.0.1:%d and 127.0.0.1:%d", d.ports["nginx_proxy"], d.ports["nginx_api"])
		err = d.startNginx()
	}
	return err
}

// errPortTaken: another program bound one of a server's ports between the
// demo finding it free and the server binding it.
var errPortTaken = errors.New("a port was taken before it could be bound")

// registryPorts are the ports the registry binds.
var registryPorts = []string{"registry", "registry_peer", "consul_server", "consul_serf_lan", "consul_serf_wan"}

// startRegistryOnFreePorts starts the registry, on new ports and with a
// new data directory when another program took one of its ports first
// (three tries), as startNginxOnFreePorts does for nginx.
func (d *demo) startRegistryOnFreePorts(ctx context.Context) error {
	err := d.registry.start(ctx, d)
	for try := 1; errors.Is(err, errPortTaken) && try < 3; try++ {
		for _, name := range registryPorts {
			if d.ports[name], err = freePort(); err != nil {
				return err
			}
		}
		for _, data := range []string{"etcd", "zookeeper"} {
			os.RemoveAll(filepath.Join(d.dir, data))
		}
		d.say("A port was taken meanwhile; starting the registry again on 127.0.0.1:%d", d.ports["registry"])
		err = d.registry.start(ctx, d)
	}
	return err
}

// waitUp polls ready until it holds, or until p exits: then it returns
// errPortTaken when p's log (logPath; "" is name.log in the demo's
// directory) says a port was in use, else that log.
func (d *demo) waitUp(ctx context.Context, p *proc, name, logPath string, timeout time.Duration, ready func() bool) error {
	exited := false
	err := poll(ctx, timeout, name, func() bool {
		select {
		case <-p.done:
			exited = true
			return true
		default:
		}
		return ready()
	})
	if err != nil || !exited {
		return err
	}
	path := logPath
	if path == "" {
		path = filepath.Join(d.dir, name+".log")
	}
	log, _ := os.ReadFile(path)
	if bytes.Contains(bytes.ToLower(log), []byte("address already in use")) {
		return fmt.Errorf("%s: %w", name, errPortTaken)
	}
	if len(log) > 4000 {
		log = log[len(log)-4000:]
	}
	return fmt.Errorf("%s exited at start; %s:\n%s", name, path, log)
}

func (d *demo) startDaemon() error {
	conf := fmt.Sprintf(`%sfile: %s
targets:
  - url: http://127.0.0.1:%d
upstreams:
  max_fails: 1
  fail_timeout: 2s
  # The demo's backends listen on loopback, which SwallowKeeper refuses
  # by default (a registry entry must not aim nginx at the host itself):
  # the demo opts in here.
  allow_addresses: [127.0.0.0/8]
%smetrics:
  listen: 127.0.0.1:%d
`, d.registry.section(d), filepath.Join(d.dir, "upstreams.conf"), d.ports["nginx_api"], d.splitSection(), d.ports["metrics"])
	path := filepath.Join(d.dir, "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	return d.start("swallowkeeper", d.opt.Daemon, "run", "-config", path)
}

// start runs a program with its output in the demo dir; swallowkeeper's
// own log lines are also shown, indented.
// proc is a program the demo started; done closes when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (d *demo) start(name, bin string, args ...string) error {
	_, err := d.startProc(name, bin, args...)
	return err
}

func (d *demo) startProc(name, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if name == "swallowkeeper" {
		w := io.MultiWriter(logf, &prefixWriter{w: d.out, prefix: "    [swallowkeeper] "})
		cmd.Stdout, cmd.Stderr = w, w
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	d.procs = append(d.procs, p)
	return p, nil
}

func (d *demo) cleanup() {
	if d.load != nil {
		d.load.stop()
	}
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	for _, b := range d.backends {
		b.Crash()
	}
}

func (d *demo) register(b *loopback.Backend) {
	if err := d.registry.register(b); err != nil {
		fmt.Fprintf(d.out, "    register %s: %v\n", b.ID, err)
	}
}

// waitRouting polls nginx until requests for "web" reach exactly want.
func (d *demo) waitRouting(ctx context.Context, want ...string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/", d.ports["nginx_proxy"])
	return poll(ctx, 30*time.Second, fmt.Sprintf("nginx routing to %v", want), func() bool {
		seen := map[string]bool{}
		for range 12 {
			id, err := get(url, "web")
			if err != nil {
				return false
			}
			seen[id] = true
		}
		if len(seen) != len(want) {
			return false
		}
		for _, w := range want {
			if !seen[w] {
				return false
			}
		}
		return true
	})
}

// watch prints, once a second, how many requests each backend answered.
func (d *demo) watch(ctx context.Context, dur time.Duration, title string) {
	fmt.Fprintf(d.out, "    %s:\n", title)
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	end := time.Now().Add(dur)
	prev := d.load.snapshot()
	for time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(time.Second)
		cur := d.load.snapshot()
		var cols []string
		for _, b := range d.backends {
			cols = append(cols, fmt.Sprintf("%s: %4d", b.ID, cur[b.ID]-prev[b.ID]))
		}
		fmt.Fprintf(tw, "      %s\terrors: %d\n", strings.Join(cols, "\t"), cur["!error"]-prev["!error"])
		tw.Flush()
		prev = cur
	}
}

// loadGen sends requests at a fixed rate and counts answers per backend.
type loadGen struct {
	mu     sync.Mutex
	counts map[string]int
	cancel context.CancelFunc
	done   chan struct{}
}

func startLoad(ctx context.Context, url, host string, rate int) *loadGen {
	ctx, cancel := context.WithCancel(ctx)
	l := &loadGen{counts: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	var wg sync.WaitGroup
	go func() {
		defer close(l.done)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				wg.Wait()
				return
			case <-tick.C:
				wg.Go(func() {
					id, err := get(url, host)
					l.mu.Lock()
					if err != nil {
						l.counts["!error"]++
					} else {
						l.counts[id]++
					}
					l.mu.Unlock()
				})
			}
		}
	}()
	return l
}

func (l *loadGen) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]int, len(l.counts))
	for k, v := range l.counts {
		m[k] = v
	}
	return m
}

func (l *loadGen) totals() (total, failed int) {
	for k, v := range l.snapshot() {
		total += v
		if k == "!error" {
			failed += v
		}
	}
	return total, failed
}

func (l *loadGen) stop() { l.cancel(); <-l.done }

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func get(url, host string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), nil
}

func poll(ctx context.Context, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// prefixWriter indents another program's lines.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
}
