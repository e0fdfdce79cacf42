package demo

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// TestDemoRunsWithEveryRegistry runs the live demo, as scripts/demo.sh
// does, with each of the three registries: every step must reach nginx and
// no request may fail.
func TestDemoRunsWithEveryRegistry(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "swallowkeeper")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/swallowkeeper").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	nginx := testenv.Binary(t, "NGINX", "nginx", "Debian package nginx")
	for _, reg := range []string{"consul", "etcd", "zookeeper"} {
		t.Run(reg, func(t *testing.T) {
			args := []string{"-registry", reg, "-swallowkeeper", bin, "-repo", "../..", "-nginx", nginx, "-rate", "100"}
			switch reg {
			case "consul":
				args = append(args, "-consul", testenv.ConsulBinary(t))
			case "etcd":
				args = append(args, "-etcd", testenv.Binary(t, "ETCD", "etcd", "Debian package etcd-server"))
			case "zookeeper":
				args = append(args, "-java", testenv.Binary(t, "JAVA", "java", "Debian package default-jre-headless"))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var out, errs bytes.Buffer
			if code := Main(ctx, args, &out, &errs); code != 0 {
				t.Fatalf("demo exited %d: %s\n%s", code, errs.String(), out.String())
			}
			plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(out.String(), "")
			if n := strings.Count(plain, "nginx routes to"); n != 5 {
				t.Errorf("%d steps reached nginx, want 5:\n%s", n, plain)
			}
			m := regexp.MustCompile(`Done: (\d+) requests through nginx, 0 failed`).FindStringSubmatch(plain)
			if m == nil {
				t.Fatalf("no zero-failure summary:\n%s", plain)
			}
			t.Logf("%s: %s requests, 0 failed", reg, m[1])
			conf := regexp.MustCompile(`→ (\S+)/upstreams\.conf →`).FindStringSubmatch(plain)
			if conf == nil {
				t.Fatalf("the demo did not say where its files are:\n%s", plain)
			}
			if _, err := os.Stat(conf[1]); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a demo that passed left %s behind (stat: %v)", conf[1], err)
			}
		})
	}
}

// TestNginxStartsAgainWhenItsPortIsTaken takes the port chosen for nginx's
// API before nginx starts, as another program on the machine may: the
// demo must see that its nginx did not bind (rather than take the other
// program's answers for its API) and start it again on other ports.
func TestNginxStartsAgainWhenItsPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	go http.Serve(taken, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})) // answers 200 to anything
	var out bytes.Buffer
	d := &demo{opt: Options{Programs: loopback.Programs{Nginx: testenv.Binary(t, "NGINX", "nginx", "Debian package nginx"), RepoRoot: "../.."}},
		out: &out, dir: t.TempDir(), ports: map[string]int{"nginx_api": taken.Addr().(*net.TCPAddr).Port}}
	if d.ports["nginx_proxy"], err = freePort(); err != nil {
		t.Fatal(err)
	}
	defer d.cleanup()
	if err := d.startNginx(); !errors.Is(err, errPortTaken) {
		t.Fatalf("nginx on a taken port: got %v, want errPortTaken", err)
	}
	if err := d.startNginxOnFreePorts(); err != nil {
		t.Fatalf("second start: %v\n%s", err, out.String())
	}
	if d.ports["nginx_api"] == taken.Addr().(*net.TCPAddr).Port {
		t.Fatal("nginx started again on the taken port")
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(d.ports["nginx_api"]) + "/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(resp.Header.Get("Server"), "nginx") {
		t.Fatalf("the API port answers as %q, not nginx", resp.Header.Get("Server"))
	}
	if !strings.Contains(out.String(), "A port was taken meanwhile") {
		t.Errorf("no word of the new ports:\n%s", out.String())
	}
}

// TestRegistryStartsAgainWhenItsPortIsTaken takes the port chosen for
// Consul's server RPC before the agent starts: the demo must see the agent
// end ("address already in use") at once, not wait out its 30 s for a
// leader, and start it again on other ports.
func TestRegistryStartsAgainWhenItsPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var out bytes.Buffer
	d := &demo{opt: Options{Registry: "consul", Programs: loopback.Programs{Consul: testenv.ConsulBinary(t)}},
		out: &out, dir: t.TempDir(), ports: map[string]int{}}
	for _, name := range registryPorts {
		if d.ports[name], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	d.ports["consul_server"] = taken.Addr().(*net.TCPAddr).Port
	if d.registry, err = newRegistry("consul"); err != nil {
		t.Fatal(err)
	}
	defer d.cleanup()
	start := time.Now()
	if err := d.registry.start(context.Background(), d); !errors.Is(err, errPortTaken) {
		t.Fatalf("consul on a taken port: got %v, want errPortTaken", err)
	}
	t.Logf("the agent's end was seen %v after its start", time.Since(start).Round(time.Millisecond))
	if err := d.startRegistryOnFreePorts(context.Background()); err != nil {
		t.Fatalf("second start: %v\n%s", err, out.String())
	}
	if d.ports["consul_server"] == taken.Addr().(*net.TCPAddr).Port {
		t.Fatal("consul started again on the taken port")
	}
	if l, err := d.consul.Status().Leader(); err != nil || l == "" {
		t.Fatalf("the agent started again has no leader: %q, %v", l, err)
	}
	if !strings.Contains(out.String(), "starting the registry again") {
		t.Errorf("the demo did not say it started the registry again:\n%s", out.String())
	}
}
