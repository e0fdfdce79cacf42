package testenv

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/procfs"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// NginxOptions configures StartNginx.
type NginxOptions struct {
	// PersistedFile is given to the Lua module's init() as persisted_file:
	// the upstream file it loads when its shared dict is empty (first start,
	// full restart). Empty: none.
	PersistedFile string
	// HTTP is extra configuration text placed inside the http {} block, for
	// example a whole server {} of a test's own.
	HTTP string
	// Workers is worker_processes (0 means 2); with Config, the number of
	// workers that configuration runs.
	Workers int
	// Config, when set, returns the whole nginx.conf to run instead of the
	// built-in one (HTTP, PersistedFile, DictSize and Init are then unused).
	// It must serve the API on 127.0.0.1:APIPort (or, with APISocket, on
	// unix:APISocket) and a proxy on 127.0.0.1:ProxyPort, keep error_log
	// and pid inside Prefix, and leave `daemon` unset (nginx runs with
	// -g "daemon off;").
	Config func(NginxParams) string
	// DictSize is the size of the lua_shared_dict (default "16m"); nginx
	// refuses less than 8k.
	DictSize string
	// Init is Lua text added inside the table given to init(), for
	// example `allow_unix_servers = true, secret_file = "/x",`.
	Init string
	// APISocket serves the API on a unix socket (NginxParams.APISocket,
	// Nginx.APISocket) instead of TCP: APIAddr is then "" and APIURL the
	// "unix:/path" form that SwallowKeeper's targets[].url takes.
	APISocket bool
}

// NginxParams is what a custom NginxOptions.Config needs to know.
type NginxParams struct {
	Prefix    string // the nginx -p directory
	APIPort   int
	ProxyPort int
	// LuaPath is <repo>/nginx/lua, for lua_package_path.
	LuaPath string
	// LoadModules holds the load_module lines for the NDK and Lua modules
	// (empty when Lua is built in, as in OpenResty).
	LoadModules string
	// Root is true when nginx runs as root: workers then need `user root;`
	// to reach files under a test's 0700 temp directories.
	Root bool
	// APISocket is the path of the API's unix socket (inside Prefix) when
	// NginxOptions.APISocket is set, else "".
	APISocket string
}

// Nginx is a real nginx running the SwallowKeeper Lua module from this
// repository (nginx/lua) with a dyups-compatible API server and a proxy
// server, both on loopback. Started by StartNginx; its processes are ended,
// by pid (SIGTERM to the master, then SIGKILL to its process group if
// anything is left), when the test ends.
//
// The proxy routes each request to the dynamic upstream named by the
// request's Host (so a test picks the upstream with req.Host) and adds two
// response headers: X-SK-Worker (the nginx worker pid that served it) and
// X-SK-Upstream-Addr ($upstream_addr: every server tried, in order).
type Nginx struct {
	bin       string
	prefix    string
	conf      string
	apiPort   int
	apiSocket string // path of the API's unix socket; "" when it listens on apiPort
	proxyPort int
	workers   int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// nginxEnv names the environment variable that overrides the nginx binary.
const nginxEnv = "SWALLOWKEEPER_NGINX"

// StartNginx writes a configuration under a fresh t.TempDir() prefix, starts
// nginx in the foreground (daemon off) and waits until both servers answer.
// A missing nginx or Lua module fails the test.
func StartNginx(t testing.TB, opt NginxOptions) *Nginx {
	t.Helper()
	bin := Binary(t, nginxEnv, "nginx", "Debian: apt-get install nginx libnginx-mod-http-lua")
	root := repoRoot(t)

	n := &Nginx{
		bin:       bin,
		prefix:    t.TempDir(),
		apiPort:   FreePort(t),
		proxyPort: FreePort(t),
		workers:   opt.Workers,
	}
	if n.workers == 0 {
		n.workers = 2
	}
	n.conf = filepath.Join(n.prefix, "nginx.conf")
	if opt.APISocket {
		n.apiSocket = filepath.Join(n.prefix, "api.sock")
	}

	modules, err := loopback.LuaModules(bin)
	if err != nil {
		t.Fatalf("testenv: nginx: %v", err)
	}
	p := NginxParams{
		Prefix:    n.prefix,
		APIPort:   n.apiPort,
		ProxyPort: n.proxyPort,
		LuaPath:   filepath.Join(root, "nginx", "lua"),
		Root:      os.Geteuid() == 0,
		APISocket: n.apiSocket,
	}
	p.LoadModules = modules

	var text string
	if opt.Config != nil {
		text = opt.Config(p)
	} else {
		var buf bytes.Buffer
		err = nginxConf.Execute(&buf, map[string]any{
			"P":             p,
			"Workers":       n.workers,
			"PersistedFile": opt.PersistedFile,
			"HTTP":          opt.HTTP,
			"DictSize":      cmp.Or(opt.DictSize, "16m"),
			"Init":          opt.Init,
		})
		if err != nil {
			t.Fatalf("testenv: nginx: render config: %v", err)
		}
		text = buf.String()
	}
	if err := os.WriteFile(n.conf, []byte(text), 0o644); err != nil {
		t.Fatalf("testenv: nginx: %v", err)
	}

	t.Cleanup(func() { n.kill() })
	n.Start(t)
	return n
}

// APIURL is the base URL of the dyups-compatible API, e.g.
// http://127.0.0.1:41234 (no trailing slash), or with
// NginxOptions.APISocket the target form unix:/path/api.sock.
func (n *Nginx) APIURL() string {
	if n.apiSocket != "" {
		return "unix:" + n.apiSocket
	}
	return "http://" + Addr(n.apiPort)
}

// APIAddr is the API's host:port, for tests that speak raw HTTP; "" when
// the API listens on a unix socket.
func (n *Nginx) APIAddr() string {
	if n.apiSocket != "" {
		return ""
	}
	return Addr(n.apiPort)
}

// APISocket is the path of the API's unix socket, "" when it listens on
// TCP.
func (n *Nginx) APISocket() string { return n.apiSocket }

// DialAPI opens a connection to the API, over TCP or its unix socket.
func (n *Nginx) DialAPI(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	if n.apiSocket != "" {
		return d.DialContext(ctx, "unix", n.apiSocket)
	}
	return d.DialContext(ctx, "tcp", Addr(n.apiPort))
}

// APIClient is an HTTP client whose every request reaches the API, over
// TCP or its unix socket, whatever the URL's host (use
// http://localhost/list and the like with a unix socket).
func (n *Nginx) APIClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return n.DialAPI(ctx)
			},
		},
	}
}

// ProxyURL is the base URL of the proxy server (no trailing slash).
func (n *Nginx) ProxyURL() string { return "http://" + Addr(n.proxyPort) }

// Prefix is the nginx prefix directory (config, logs, pid file).
func (n *Nginx) Prefix() string { return n.prefix }

// ErrorLog returns nginx's error log so far, with anything nginx printed on
// stderr before it could open that log.
func (n *Nginx) ErrorLog() string {
	var b strings.Builder
	for _, name := range []string{"stderr.log", "error.log"} {
		data, err := os.ReadFile(filepath.Join(n.prefix, name))
		if err == nil {
			b.Write(data)
		}
	}
	return b.String()
}

// Start starts nginx (again) with the same prefix, configuration and ports,
// and waits until its workers serve. It fails the test if nginx is running.
func (n *Nginx) Start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		t.Fatalf("testenv: nginx: Start: already running (pid %d)", n.cmd.Process.Pid)
	}
	stderr, err := os.OpenFile(filepath.Join(n.prefix, "stderr.log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.mu.Unlock()
		t.Fatalf("testenv: nginx: %v", err)
	}
	cmd := exec.Command(n.bin, "-p", n.prefix, "-c", n.conf, "-g", "daemon off;")
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// Its own process group, so the last-resort kill reaches the workers
	// too, by group id.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		stderr.Close()
		n.mu.Unlock()
		t.Fatalf("testenv: nginx: start %s: %v", n.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		stderr.Close()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()

	if err := n.waitServing(nil, 10*time.Second); err != nil {
		n.kill()
		t.Fatalf("testenv: nginx: %v\n%s", err, n.ErrorLog())
	}
}

// Stop shuts nginx down (fast shutdown: SIGTERM to the master) and waits
// until every process of it has exited.
func (n *Nginx) Stop(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		t.Fatalf("testenv: nginx: Stop: not running")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.kill()
		t.Fatalf("testenv: nginx: master %d did not exit on SIGTERM\n%s", cmd.Process.Pid, n.ErrorLog())
	}
	// The master waits for its workers before exiting; make sure anyway.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	n.mu.Lock()
	n.cmd, n.done = nil, nil
	n.mu.Unlock()
}

// Reload runs `nginx -s reload` and waits until a full new generation of
// workers is serving (old workers may still be draining).
func (n *Nginx) Reload(t testing.TB) {
	t.Helper()
	old := n.WorkerPIDs()
	out, err := exec.Command(n.bin, "-p", n.prefix, "-c", n.conf, "-s", "reload").CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: nginx -s reload: %v\n%s", err, out)
	}
	if err := n.waitServing(old, 10*time.Second); err != nil {
		t.Fatalf("testenv: nginx: after reload: %v\n%s", err, n.ErrorLog())
	}
}

// MasterPID is the pid of the running master process, 0 when stopped.
func (n *Nginx) MasterPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// WorkerPIDs returns the pids of the master's live worker processes (not
// those still draining after a reload), sorted.
func (n *Nginx) WorkerPIDs() []int {
	master := n.MasterPID()
	if master == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid(pid) != master {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		title := strings.TrimRight(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})), " ")
		if title == "nginx: worker process" {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// ppid is a process's parent pid, 0 if unknown.
func ppid(pid int) int {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return st.PPID
}

// waitServing waits until the master runs n.workers workers, none of them
// in old, and both servers accept requests.
func (n *Nginx) waitServing(old []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	for {
		select {
		case <-done:
			return errors.New("nginx exited")
		default:
		}
		pids := n.WorkerPIDs()
		fresh := len(pids) == n.workers
		for _, p := range pids {
			if slices.Contains(old, p) {
				fresh = false
			}
		}
		if fresh {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workers %v (before: %v), want %d new ones", pids, old, n.workers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := context.Background()
	if n.apiSocket != "" {
		if err := n.waitAPISocket(ctx, time.Until(deadline)); err != nil {
			return err
		}
	} else if err := WaitHTTP(ctx, n.APIURL()+"/list", time.Until(deadline)); err != nil {
		return err
	}
	return WaitTCP(ctx, Addr(n.proxyPort), time.Until(deadline))
}

// waitAPISocket polls GET /list on the API's unix socket until it answers
// with any HTTP status or the timeout passes.
func (n *Nginx) waitAPISocket(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := n.APIClient()
	err := retryUntil(ctx, func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/list", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for unix:%s: %w", n.apiSocket, err)
	}
	return nil
}

// kill ends every process of this nginx: SIGTERM to the master, which
// stops and reaps its workers, then, should anything be left after a few
// seconds, SIGKILL to the whole process group (by group id). Used on
// failure paths and at cleanup.
func (n *Nginx) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd, n.done = nil, nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// repoRoot walks up from the working directory to the directory holding
// go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

var nginxConf = template.Must(template.New("nginx.conf").Parse(`# Written by testenv.StartNginx.
{{.P.LoadModules}}
master_process on;
worker_processes {{.Workers}};
{{if .P.Root}}user root;
{{end}}pid {{.P.Prefix}}/nginx.pid;
error_log {{.P.Prefix}}/error.log info;

events {
    worker_connections 1024;
}

http {
    client_body_temp_path {{.P.Prefix}}/client_body;
    proxy_temp_path {{.P.Prefix}}/proxy;
    fastcgi_temp_path {{.P.Prefix}}/fastcgi;
    uwsgi_temp_path {{.P.Prefix}}/uwsgi;
    scgi_temp_path {{.P.Prefix}}/scgi;

    log_format sk '$remote_addr "$request" $status pid=$pid host=$host '
                  'upstream=$upstream_addr status=$upstream_status';
    access_log {{.P.Prefix}}/access.log sk;

    lua_package_path "{{.P.LuaPath}}/?.lua;;";
    lua_shared_dict swallowkeeper {{.DictSize}};
    init_by_lua_block {
        require("swallowkeeper.dyups").init({
            dict = "swallowkeeper",
{{- if .PersistedFile}}
            persisted_file = "{{.PersistedFile}}",
{{- end}}
{{- if .Init}}
            {{.Init}}
{{- end}}
        })
    }
    init_worker_by_lua_block {
        require("swallowkeeper.dyups").init_worker()
    }

    upstream swallowkeeper_backend {
        server 0.0.0.1;
        balancer_by_lua_block {
            require("swallowkeeper.dyups").balance()
        }
        keepalive 16;
    }

    server {
{{- if .P.APISocket}}
        listen unix:{{.P.APISocket}};
        allow unix:;
{{- else}}
        listen 127.0.0.1:{{.P.APIPort}};
        allow 127.0.0.1;
{{- end}}
        deny all;
        location / {
            content_by_lua_block {
                require("swallowkeeper.dyups").api()
            }
        }
        location /split {
            content_by_lua_block {
                require("swallowkeeper.split").api()
            }
        }
    }

    server {
        listen 127.0.0.1:{{.P.ProxyPort}} reuseport;
        location / {
            set_by_lua_block $sk_upstream {
                return require("swallowkeeper.split").route(ngx.var.host)
            }
{{- template "proxy"}}
            error_page 502 = @sk_split_fallback;
        }
        location @sk_split_fallback {
            rewrite_by_lua_block {
                require("swallowkeeper.split").fallback(ngx.var.host)
            }
{{- template "proxy"}}
        }
    }
{{.HTTP}}
}
{{- define "proxy"}}
            proxy_pass http://swallowkeeper_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502;
            add_header X-SK-Worker $pid always;
            add_header X-SK-Upstream-Addr $upstream_addr always;
            log_by_lua_block {
                require("swallowkeeper.dyups").log()
            }
{{- end}}
`))
