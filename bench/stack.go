package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// Binaries says where the programs are: the demo's, and consul-template.
type Binaries struct {
	loopback.Programs
	ConsulTemplate string
}

// proc is a program the bench started, in its own process group.
type proc struct {
	name string
	sig  syscall.Signal // asks it to stop; SIGTERM unless set
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startProc(dir, name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL if anything is
// left after a while.
func (p *proc) stop() {
	if p == nil {
		return
	}
	sig := p.sig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	syscall.Kill(-p.pid(), sig)
	select {
	case <-p.done:
	case <-time.After(8 * time.Second):
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func poll(ctx context.Context, timeout, every time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// StackOptions shape one stack.
type StackOptions struct {
	MaxFails    int // nginx max_fails of every server
	FailTimeout int // seconds
	DictMB      int // Lua shared dict size
	// ConsulServer runs Consul as a production server (-server
	// -bootstrap-expect=1, data on disk) instead of -dev, which indents
	// every JSON answer: at 10,000 checks that nearly doubles the bytes
	// the daemon reads on each change.
	ConsulServer bool
	// ConsulHCL is more agent configuration, one -hcl flag each.
	ConsulHCL []string
	// ConsulWatch is the daemon's consul.watch; with per_service Consul
	// also serves https (a CA and certificate made for the stack), and the
	// daemon uses it: over HTTP/2 its long polls share a few connections.
	ConsulWatch string
	// PerUpstreamFiles: the daemon persists into a directory, one file per
	// upstream (file: DIR/*.conf), which nginx includes or loads whole.
	PerUpstreamFiles bool
}

// consulTLS: the daemons talk https to Consul.
func (o StackOptions) consulTLS() bool { return o.ConsulWatch == "per_service" }

// Stack is one mode's world on loopback: Consul, nginx, and the program
// that keeps nginx's upstreams in step (the daemon or consul-template).
type Stack struct {
	Mode string
	Dir  string
	bin  Binaries
	opt  StackOptions

	Consul     *api.Client
	ConsulPort int
	ProxyURL   string
	APIURL     string // Lua mode: the dyups API
	MetricsURL string // ours: the daemon's /metrics
	File       string // the upstream file nginx reads

	ports      map[string]int
	consul     *proc
	nginx      *proc
	controller *proc
	nginxConf  string
}

// NewStack starts Consul and nginx for mode; StartController starts the
// daemon or consul-template once the caller has registered services.
func NewStack(ctx context.Context, b Binaries, mode string, opt StackOptions) (s *Stack, err error) {
	if s, err = newStackDir(mode, b, mode, opt, "proxy", "api", "metrics"); err != nil {
		return nil, err
	}
	defer s.closeIfFailed(&err)
	s.ProxyURL = fmt.Sprintf("http://127.0.0.1:%d/", s.ports["proxy"])
	if mode == ModeLua {
		s.APIURL = fmt.Sprintf("http://127.0.0.1:%d", s.ports["api"])
	}
	if mode != ModeConsulTemplate {
		s.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", s.ports["metrics"])
	}
	if err := s.startConsul(ctx); err != nil {
		return nil, err
	}
	if err := s.startNginx(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// daemonConfig is the daemon configuration every bench daemon shares,
// up to its targets; what says which scenario or mode wrote it.
func (s *Stack) daemonConfig(what string) string {
	return fmt.Sprintf(`# Written by swallowkeeper-bench (%s).
%sfile: %s
guards:
  confirm_after: 0s
upstreams:
  max_fails: %d
  fail_timeout: %ds
  keepalive: 16
  allow_addresses: [127.0.0.0/8]   # the bench backends are on loopback
metrics:
  listen: 127.0.0.1:%d
  pprof: true   # the scale scenario fetches CPU and heap profiles
`, what, s.consulConfig(fmt.Sprintf("127.0.0.1:%d", s.DaemonConsulPort())), s.File, s.opt.MaxFails, s.opt.FailTimeout, s.ports["metrics"])
}

// DaemonConsulPort is the Consul port the daemons use: https with
// per_service, else http.
func (s *Stack) DaemonConsulPort() int {
	if s.opt.consulTLS() {
		return s.ports["https"]
	}
	return s.ConsulPort
}

// consulConfig is the daemon configuration's consul block, for the agent
// (or a proxy of it) at hostport.
func (s *Stack) consulConfig(hostport string) string {
	if !s.opt.consulTLS() {
		return "consul:\n  address: " + hostport + "\n"
	}
	return fmt.Sprintf("consul:\n  address: https://%s\n  watch: %s\n  tls:\n    ca_file: %s\n", hostport, s.opt.ConsulWatch, filepath.Join(s.Dir, "tls", "consul-agent-ca.pem"))
}

// startDaemon writes cfg to the stack's directory and starts the daemon
// on it.
func (s *Stack) startDaemon(cfg string) error {
	path := filepath.Join(s.Dir, "swallowkeeper.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	var err error
	s.controller, err = startProc(s.Dir, "swallowkeeper", s.bin.Daemon, "run", "-config", path)
	return err
}

// newStackDir is a Stack in a new directory named after name, with free
// ports for Consul (http, server, serf_lan, serf_wan) and for each of
// more, by name; it starts nothing.
func newStackDir(name string, b Binaries, mode string, opt StackOptions, more ...string) (*Stack, error) {
	dir, err := os.MkdirTemp("", "swallowkeeper-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	if opt.FailTimeout == 0 {
		opt.FailTimeout = 10
	}
	if opt.DictMB == 0 {
		opt.DictMB = 16
	}
	names := append([]string{"http", "server", "serf_lan", "serf_wan"}, more...)
	if opt.consulTLS() {
		names = append(names, "https")
	}
	p, err := freePorts(len(names))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Stack{Mode: mode, Dir: dir, bin: b, opt: opt, File: filepath.Join(dir, "upstreams.conf"), ports: map[string]int{}}
	if opt.PerUpstreamFiles {
		s.File = filepath.Join(dir, "upstreams.d", "*.conf")
	}
	for i, name := range names {
		s.ports[name] = p[i]
	}
	s.ConsulPort = p[0]
	return s, nil
}

// closeIfFailed closes s if *err is set: a deferred clean-up of a stack
// whose start failed half-way.
func (s *Stack) closeIfFailed(err *error) {
	if *err != nil {
		s.Close()
	}
}

func (s *Stack) startConsul(ctx context.Context) error {
	p := s.ports
	var err error
	mode := []string{"-dev"}
	if s.opt.ConsulServer {
		mode = []string{"-server", "-bootstrap-expect=1", "-data-dir=" + filepath.Join(s.Dir, "consul-data"),
			"-hcl=performance { raft_multiplier = 1 }"} // -dev's election timing
	}
	args := append([]string{"agent"}, mode...)
	hcl := s.opt.ConsulHCL
	if s.opt.consulTLS() {
		more, _, err := loopback.ConsulTLS(s.bin.Consul, filepath.Join(s.Dir, "tls"), s.ports["https"])
		if err != nil {
			return err
		}
		hcl = append(slices.Clip(hcl), more...)
	}
	for _, h := range hcl {
		args = append(args, "-hcl="+h)
	}
	s.consul, err = startProc(s.Dir, "consul", s.bin.Consul, append(args, "-node=bench",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+strconv.Itoa(p["http"]), "-server-port="+strconv.Itoa(p["server"]),
		"-serf-lan-port="+strconv.Itoa(p["serf_lan"]), "-serf-wan-port="+strconv.Itoa(p["serf_wan"]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-log-level=warn",
		`-hcl=check_update_interval = "0s"`)...)
	if err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	cfg.Address = fmt.Sprintf("127.0.0.1:%d", p["http"])
	cfg.Transport.MaxIdleConnsPerHost = 64
	if s.Consul, err = api.NewClient(cfg); err != nil {
		return err
	}
	ok := poll(ctx, 60*time.Second, 50*time.Millisecond, func() bool {
		if s.consul.exited() {
			return false
		}
		l, err := s.Consul.Status().Leader()
		if err != nil || l == "" {
			return false
		}
		checks, _, err := s.Consul.Health().Node("bench", nil)
		return err == nil && len(checks) > 0 && checks[0].Status == api.HealthPassing
	})
	if !ok {
		return fmt.Errorf("consul not ready; log:\n%s", s.consul.tail())
	}
	return nil
}

const nginxLuaConf = `# Written by swallowkeeper-bench (mode ours-lua).
{{modules}}
{{top}}
    lua_package_path "{{repo}}/nginx/lua/?.lua;;";
    lua_shared_dict swallowkeeper {{dict}}m;
    init_by_lua_block {
        require("swallowkeeper.dyups").init({ dict = "swallowkeeper", persisted_file = "{{file}}" })
    }
    init_worker_by_lua_block { require("swallowkeeper.dyups").init_worker() }
    upstream swallowkeeper_backend {
        server 0.0.0.1;
        balancer_by_lua_block { require("swallowkeeper.dyups").balance() }
        keepalive 64;
    }
    server {
        # reuseport: each worker its own socket, so that fresh connections
        # spread over the workers by address (the bench's /_bench/lua-gc
        # must reach every one; with one shared socket the same worker
        # could take them all).
        listen 127.0.0.1:{{api}} reuseport;
        allow 127.0.0.1; deny all;
        client_max_body_size 4m; client_body_buffer_size 4m;
        location / { content_by_lua_block { require("swallowkeeper.dyups").api() } }
        # Bench only: a full LuaJIT collection in the worker that answers,
        # then its pid and Lua heap in KB, so that nginx's memory is taken
        # without garbage in it (scale: nginx memory across updates).
        location = /_bench/lua-gc {
            content_by_lua_block {
                collectgarbage("collect")
                collectgarbage("collect")
                ngx.say(ngx.worker.pid(), " ", math.floor(collectgarbage("count")))
            }
        }
    }
    server {
        listen 127.0.0.1:{{proxy}};
        location / {
            set $sk_upstream $host;
            proxy_pass http://swallowkeeper_backend;
{{proxycommon}}
            log_by_lua_block { require("swallowkeeper.dyups").log() }
        }
    }
}
`

const nginxReloadConf = `# Written by swallowkeeper-bench (modes ours-reload and consul-template).
{{top}}
    include {{file}};
    server {
        listen 127.0.0.1:{{proxy}};
        location / {
            proxy_pass http://$host;
{{proxycommon}}
        }
    }
}
`

// topCommon, the processes, logs and temp paths, is the same in every mode;
// it opens the http block.
const topCommon = `worker_processes 2;
{{user}}pid {{dir}}/nginx.pid;
error_log {{dir}}/nginx-error.log warn;
worker_rlimit_nofile 32768;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path {{dir}}/tmp; proxy_temp_path {{dir}}/tmp;
    fastcgi_temp_path {{dir}}/tmp; uwsgi_temp_path {{dir}}/tmp; scgi_temp_path {{dir}}/tmp;`

// proxyCommon is the same in every mode.
const proxyCommon = `            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries 3;
            add_header X-SK-Upstream-Addr $upstream_addr always;`

// nginxConfText is mode's nginx.conf with the pieces every mode shares put
// in; the run's own values ({{dir}}, ports) are put in after.
func nginxConfText(mode string) string {
	text := nginxReloadConf
	if mode == ModeLua {
		text = nginxLuaConf
	}
	return strings.NewReplacer("{{top}}", topCommon, "{{proxycommon}}", proxyCommon).Replace(text)
}

func (s *Stack) startNginx(ctx context.Context) error {
	// nginx includes the file (reload modes) or loads it (Lua): it must
	// exist, and starts empty; a directory of upstream files starts with
	// none.
	if s.opt.PerUpstreamFiles {
		if err := os.MkdirAll(filepath.Dir(s.File), 0o755); err != nil {
			return err
		}
	} else if err := os.WriteFile(s.File, []byte("# Empty until the first sync.\n"), 0o644); err != nil {
		return err
	}
	var err error
	s.nginx, s.nginxConf, err = startNginxIn(ctx, s.bin, s.Dir, nginxConfText(s.Mode), s.Mode == ModeLua,
		s.File, s.opt.DictMB, s.ports["api"], s.ports["proxy"])
	return err
}

// startNginxIn writes text, an nginx.conf template, into dir with its
// placeholders filled, starts nginx on it and waits until it serves: its
// own pid in its pid file (nginx writes it once it has bound its ports, so
// a port another program took first cannot pass for it) and the proxy
// port accepting. lua says the template loads the Lua modules. It returns
// the process (also on a failed start, for clean-up) and the conf's path.
func startNginxIn(ctx context.Context, bin Binaries, dir, text string, lua bool, file string, dictMB, api, proxy int) (*proc, string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return nil, "", err
	}
	repo, err := filepath.Abs(bin.RepoRoot)
	if err != nil {
		return nil, "", err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // workers must reach the 0700 temp directory
	}
	modules, err := loopback.LuaModules(bin.Nginx)
	if err != nil && lua {
		return nil, "", err
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{repo}}", repo, "{{file}}", file, "{{user}}", user,
		"{{modules}}", modules, "{{dict}}", strconv.Itoa(dictMB),
		"{{api}}", strconv.Itoa(api), "{{proxy}}", strconv.Itoa(proxy)).Replace(text)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc(dir, "nginx", bin.Nginx, "-p", dir, "-c", confPath, "-g", "daemon off;")
	if err != nil {
		return nil, "", err
	}
	ok := poll(ctx, 15*time.Second, 20*time.Millisecond, func() bool {
		if p.exited() || !loopback.NginxBound(filepath.Join(dir, "nginx.pid"), p.pid()) {
			return false
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", proxy))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if !ok {
		b, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
		return p, confPath, fmt.Errorf("nginx in %s did not start: %s\n%s", dir, p.tail(), b)
	}
	return p, confPath, nil
}

// consulTemplateText renders the same upstream blocks as the daemon (same
// server parameters and keepalive; only the header comment differs).
const consulTemplateText = `# Rendered by consul-template.
{{- range services }}{{ if ne .Name "consul" }}

upstream {{ .Name }} {
{{- range service .Name }}
    server {{ .Address }}:{{ .Port }} weight=1 max_fails=MAXFAILS fail_timeout=FAILTIMEOUTs;
{{- end }}
    keepalive 16;
}
{{- end }}{{ end }}
`

// StartController starts what keeps nginx in step: the daemon (ours-lua,
// ours-reload) or consul-template.
func (s *Stack) StartController() error {
	nginxArgs := func(extra ...string) string {
		q := []string{strconv.Quote(s.bin.Nginx), `"-p"`, strconv.Quote(s.Dir), `"-c"`, strconv.Quote(s.nginxConf)}
		for _, e := range extra {
			q = append(q, strconv.Quote(e))
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var err error
	switch s.Mode {
	case ModeLua, ModeReload:
		cfg := s.daemonConfig("mode " + s.Mode)
		if s.Mode == ModeLua {
			cfg += fmt.Sprintf("targets:\n  - url: %s\n", s.APIURL)
		} else {
			cfg += fmt.Sprintf("targets: []\nreload:\n  enabled: true\n  test: %s\n  command: %s\n  min_wait: 0s\n  max_wait: 1s\n",
				nginxArgs("-t", "-q"), nginxArgs("-s", "reload"))
		}
		err = s.startDaemon(cfg)
	case ModeConsulTemplate:
		tmpl := strings.NewReplacer("MAXFAILS", strconv.Itoa(s.opt.MaxFails), "FAILTIMEOUT", strconv.Itoa(s.opt.FailTimeout)).Replace(consulTemplateText)
		tpath := filepath.Join(s.Dir, "upstreams.ctmpl")
		if err := os.WriteFile(tpath, []byte(tmpl), 0o644); err != nil {
			return err
		}
		cfg := fmt.Sprintf(`# Written by swallowkeeper-bench.
consul {
  address = "127.0.0.1:%d"
}
log_level = "warn"
template {
  source      = %q
  destination = %q
  command     = %s
}
`, s.ConsulPort, tpath, s.File, nginxArgs("-s", "reload"))
		path := filepath.Join(s.Dir, "consul-template.hcl")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		s.controller, err = startProc(s.Dir, "consul-template", s.bin.ConsulTemplate, "-config", path)
		if err == nil {
			s.controller.sig = syscall.SIGINT // its default kill_signal
		}
	default:
		return fmt.Errorf("unknown mode %q", s.Mode)
	}
	return err
}

// ControllerPID is the daemon's (or consul-template's) pid.
func (s *Stack) ControllerPID() int { return s.controller.pid() }

// ControllerStarted is when the controller process was started.
func (s *Stack) ControllerLog() string { return s.controller.tail() }

// Close stops everything, controller first.
func (s *Stack) Close() {
	s.controller.stop()
	s.nginx.stop()
	s.consul.stop()
}

// Cleanup removes the stack's directory (kept when a scenario failed).
func (s *Stack) Cleanup() { os.RemoveAll(s.Dir) }

// Register registers an instance of service with the local agent: an
// HTTP check of the backend every checkInterval (0: a TTL check), passing
// from the start.
func (s *Stack) Register(service string, b *Backend, checkInterval time.Duration) error {
	check := &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}
	if checkInterval > 0 {
		check = &api.AgentServiceCheck{HTTP: "http://" + b.Addr() + "/health", Interval: checkInterval.String(),
			Timeout: "500ms", Status: api.HealthPassing}
	}
	return s.Consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: b.ID, Name: service, Address: "127.0.0.1", Port: b.Port, Check: check,
	})
}

// Deregister removes an instance.
func (s *Stack) Deregister(id string) error { return s.Consul.Agent().ServiceDeregister(id) }

// SetTTL sets an instance's TTL check to passing or critical.
func (s *Stack) SetTTL(id, status string) error {
	return s.Consul.Agent().UpdateTTL("service:"+id, "", status)
}

var freshClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// WaitRouting waits until requests for host through nginx reach exactly
// the backends want, with no failure.
func (s *Stack) WaitRouting(ctx context.Context, host string, want []string, timeout time.Duration) error {
	want = slices.Sorted(slices.Values(want))
	var got []string
	ok := poll(ctx, timeout, 20*time.Millisecond, func() bool {
		seen := map[string]bool{}
		for range 4*len(want) + 4 {
			req, _ := http.NewRequest(http.MethodGet, s.ProxyURL, nil)
			req.Host = host
			resp, err := freshClient.Do(req)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				got = []string{fmt.Sprintf("status %d", resp.StatusCode)}
				return false
			}
			seen[string(b)] = true
		}
		got = slices.Sorted(func(yield func(string) bool) {
			for k := range seen {
				if !yield(k) {
					return
				}
			}
		})
		return slices.Equal(got, want)
	})
	if !ok {
		return fmt.Errorf("%s: nginx routes %s to %v, want %v after %v; controller log:\n%s",
			s.Mode, host, got, want, timeout, s.controller.tail())
	}
	return nil
}

// apiGet reads a path of the Lua module's dyups API.
func (s *Stack) apiGet(path string) (string, error) {
	resp, err := freshClient.Get(s.APIURL + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), errors.New(resp.Status)
	}
	return string(b), err
}

// diagnose says where an instance that gets no traffic is stuck: Consul's
// view of its checks, and whether the upstream file lists it.
func (s *Stack) diagnose(b *Backend) string {
	var parts []string
	checks, _, err := s.Consul.Health().Checks(service, nil)
	if err != nil {
		parts = append(parts, "consul: "+err.Error())
	}
	for _, c := range checks {
		if c.ServiceID == b.ID {
			parts = append(parts, fmt.Sprintf("consul check %s %s", c.CheckID, c.Status))
		}
	}
	if len(checks) == 0 {
		parts = append(parts, "consul lists no check of "+service)
	}
	file, err := readPersisted(s.File)
	listed := err == nil && strings.Contains(string(file), b.Addr())
	parts = append(parts, fmt.Sprintf("%s lists it: %v", filepath.Base(s.File), listed))
	parts = append(parts, "controller log: "+strings.TrimSpace(s.controller.tail()))
	return strings.Join(parts, "; ")
}

// readPersisted reads the persisted file, or every file of a directory
// store (DIR/*.conf) joined.
func readPersisted(file string) ([]byte, error) {
	if filepath.Base(file) != "*.conf" {
		return os.ReadFile(file)
	}
	paths, err := filepath.Glob(file)
	if err != nil {
		return nil, err
	}
	var all []byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		all = append(all, b...)
	}
	return all, nil
}
