package faults

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// TestPersistedFileSurvivesSIGKILL kills the daemon with SIGKILL, many
// times, while it rewrites the persisted file under heavy churn: half the
// kills land the moment a write shows (a new temp file, or with the
// directory store a spare rewritten: a write in progress), half at a
// random moment. After every kill the file is a complete version (the
// header, every upstream with every server, every block closed, exactly
// what the renderer writes), nginx -t accepts a configuration that
// includes the whole directory, no leftover is something nginx would
// include, and the next daemon starts from the file.
//
// The directory store (file: DIR/*.conf) goes through the same: after
// every kill each file is a complete version of its upstream, and the
// files together hold every upstream.
//
// With the churn on a few upstreams, each write of the directory store
// changes fewer files than it batches (16): it rewrites each file's spare
// and exchanges it in (internal/store/spare.go), and kills land on those
// writes too.
func TestPersistedFileSurvivesSIGKILL(t *testing.T) {
	const services = 20
	t.Run("one file", func(t *testing.T) { testSurvivesSIGKILL(t, false, services) })
	t.Run("directory", func(t *testing.T) { testSurvivesSIGKILL(t, true, services) })
	t.Run("directory, few upstreams per write", func(t *testing.T) { testSurvivesSIGKILL(t, true, 3) })
}

// testSurvivesSIGKILL churns the first churned of 20 services.
func testSurvivesSIGKILL(t *testing.T, perUpstream bool, churned int) {
	const services, instances = 20, 8
	iterations := envInt(t, "SK_KILLS", 40)
	c := testenv.StartConsul(t)
	dir := t.TempDir()
	file, own := filepath.Join(dir, "upstreams.conf"), "upstreams.conf"
	if perUpstream {
		dir = filepath.Join(dir, "upstreams.d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		file, own = filepath.Join(dir, "*.conf"), ""
	}
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	metrics := testenv.Addr(testenv.FreePort(t))
	cfg := writeConfig(t, daemonConfig{Consul: c.HTTPAddr(), File: file, Target: ng.APIURL(), Metrics: metrics})
	nginxTest := nginxTestCommand(t, dir)

	name := func(s int) string { return fmt.Sprintf("svc-%02d", s) }
	register := func(s, i, weight int) error {
		return c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: fmt.Sprintf("%s-%d", name(s), i), Name: name(s), Address: "127.0.0.1", Port: 20000 + 100*s + i,
			Meta:  map[string]string{"weight": fmt.Sprint(weight)},
			Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
		})
	}
	for s := range services {
		for i := range instances {
			if err := register(s, i, 1); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Churn: three writers change instance weights as fast as Consul takes
	// it; every change rewrites the file.
	ctx, cancel := context.WithCancel(context.Background())
	var churn sync.WaitGroup
	var changes atomic.Int64
	for w := range 3 {
		churn.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for ctx.Err() == nil {
				if register(rng.IntN(churned), rng.IntN(instances), 1+rng.IntN(100)) == nil {
					changes.Add(1)
				}
			}
		})
	}
	defer func() { cancel(); churn.Wait() }()

	// complete checks one version of the file: it must be exactly what the
	// renderer writes for a full state. In a directory each file must be
	// exactly what the renderer writes for its upstream alone.
	complete := func(when string) {
		t.Helper()
		data, err := readPersisted(dir, own)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !perUpstream && !bytes.HasPrefix(data, []byte(upstream.FileHeader)) {
			t.Fatalf("%s: the file lacks its header:\n%s", when, data)
		}
		st, err := upstream.ParseFile(data)
		if err != nil {
			t.Fatalf("%s: the file does not parse: %v\n%s", when, err, data)
		}
		if !perUpstream && !bytes.Equal(upstream.RenderFile(st), data) {
			t.Fatalf("%s: the file is not a complete rendering:\n%s", when, data)
		}
		if perUpstream {
			for name, u := range st {
				one := filepath.Join(dir, upstream.FoldKey(name)+".conf")
				if got := must(os.ReadFile(one)); !bytes.Equal(got, upstream.RenderFile(upstream.State{name: u})) {
					t.Fatalf("%s: %s is not a complete rendering of upstream %s:\n%s", when, one, name, got)
				}
			}
		}
		if n := bytes.Count(data, []byte("{")); n != services || bytes.Count(data, []byte("}")) != n {
			t.Fatalf("%s: %d blocks opened, %d closed, want %d", when, n, bytes.Count(data, []byte("}")), services)
		}
		for s := range services {
			if u, ok := st[name(s)]; !ok || len(u.Servers) != instances {
				t.Fatalf("%s: upstream %s has %d servers, want %d:\n%s", when, name(s), len(u.Servers), instances, data)
			}
		}
		if out, err := exec.Command(nginxTest[0], nginxTest[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: nginx -t refuses the file: %v\n%s\n%s", when, err, out, data)
		}
	}
	// temps lists the dot files in the include directory, with a stamp of
	// each: the temp files of writes, and with the directory store the
	// spares, each file's previous version, which a write rewrites and
	// exchanges with the file (internal/store/spare.go). A daemon removes
	// the leftovers of cut writes when it starts, so a write in progress
	// shows as a temp file not seen before or a spare whose stamp moved,
	// not as a higher count.
	// Lock files stay by design (store.Lock): the store's own, and a
	// one-file store's shared lock of its directory.
	locks := map[string]bool{filepath.Base(store.LockPath(file)): true, filepath.Base(store.LockPath(filepath.Join(dir, store.DirGlob))): true}
	temps := func() map[string]string {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range entries {
			if e.Name() == own || own == "" && !strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".conf") {
				continue
			}
			if ok, _ := filepath.Match("*.conf", e.Name()); ok || !strings.HasPrefix(e.Name(), ".") {
				t.Fatalf("%s is in the include directory; nginx would include it", e.Name())
			}
			if locks[e.Name()] {
				continue
			}
			out[e.Name()] = stampOf(filepath.Join(dir, e.Name()))
		}
		return out
	}
	isTemp := func(name string) bool { return strings.Contains(name, ".conf.tmp-") }
	newTemp := func(before map[string]string) bool {
		for name := range temps() {
			if _, seen := before[name]; !seen && isTemp(name) {
				return true
			}
		}
		return false
	}

	// A first daemon writes the full state; measure how often it rewrites
	// the file under this churn.
	d := startDaemon(t, cfg, metrics)
	if _, ok := waitFor(ctx, 30*time.Second, func() bool {
		st, err := upstream.ParseFile(must(readPersisted(dir, own)))
		return err == nil && len(st) == services && st.ServerCount() == services*instances
	}); !ok {
		t.Fatalf("the daemon never wrote the full state; log:\n%s", d.log.String())
	}
	m0 := d.scrape(t)
	const window = 4 * time.Second
	time.Sleep(window)
	m1 := d.scrape(t)
	writes := (m1.sum("swallowkeeper_engine_applies_total") - m0.sum("swallowkeeper_engine_applies_total")) / window.Seconds()
	d.kill()
	complete("after the first kill")

	// A temp file as a crash mid-write leaves it: the first kill below
	// waits for a write in progress with this leftover present, and the
	// next daemon must remove it.
	leftover := ".upstreams.conf.tmp-left-by-a-crash"
	if perUpstream {
		leftover = ".svc-00.conf.tmp-left-by-a-crash"
	}
	if err := os.WriteFile(filepath.Join(dir, leftover), []byte("upstream svc-00 {\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	midWrite, onSpare, random, cut := 0, 0, 0, 0
	start := time.Now()
	for i := range iterations {
		before := temps()
		d := startDaemon(t, cfg, metrics)
		if i%2 == 0 {
			// Wait for a write in progress, then kill at once. Writes come
			// two or three times a second here (the figure below).
			c0 := changes.Load()
			seen := waitForWrite(dir, before, 30*time.Second)
			if seen == "" {
				m := d.scrape(t)
				t.Fatalf("kill %d: no write within 30s; registry changes meanwhile: %d; daemon: %.0f applies, %.0f persist errors, %.0f Consul watch wakes, %.0f sweeps, %.0f service reads; log:\n%s",
					i, changes.Load()-c0, m.sum("swallowkeeper_engine_applies_total"), m.sum("swallowkeeper_engine_persist_errors_total"),
					m.sum("swallowkeeper_consul_watch_wakes_total"), m.sum("swallowkeeper_consul_sweeps_total"), m.sum("swallowkeeper_consul_service_reads_total"), d.log.String())
			}
			midWrite++
			if seen == "spare" {
				onSpare++
			}
		} else {
			time.Sleep(time.Duration(rand.N(400)) * time.Millisecond)
			random++
		}
		if !d.running() {
			t.Fatalf("kill %d: the daemon had exited by itself (%v); log:\n%s", i, d.cmd.ProcessState, d.log.String())
		}
		d.kill()
		if ws, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the daemon ended with %v, not by SIGKILL; log:\n%s", i, d.cmd.ProcessState, d.log.String())
		}
		complete(fmt.Sprintf("after kill %d", i))
		if newTemp(before) {
			cut++ // the kill cut a write short: its temp file stayed
		}
		if strings.Contains(d.log.String(), "loaded persisted state") &&
			!strings.Contains(d.log.String(), fmt.Sprintf(`msg="loaded persisted state" upstreams=%d`, services)) {
			t.Fatalf("kill %d: the daemon did not load the %d upstreams of the file; log:\n%s", i, services, d.log.String())
		}
	}
	elapsed := time.Since(start)
	left := temps()
	maps.DeleteFunc(left, func(name, _ string) bool { return !isTemp(name) })
	names := slices.Sorted(maps.Keys(left))

	// The last word: a daemon starts from the file, serves it and stops
	// cleanly.
	cancel()
	churn.Wait()
	d = startDaemon(t, cfg, metrics)
	waitLogLine(t, d, fmt.Sprintf(`msg="loaded persisted state" upstreams=%d`, services))
	d.stop(t)
	complete("after a clean stop")
	after := temps()
	for name := range after {
		if isTemp(name) {
			t.Errorf("temp file %s left after a daemon started and stopped cleanly", name)
		} else if base, ok := strings.CutSuffix(strings.TrimPrefix(name, "."), ".spare"); !ok {
			t.Errorf("%s left in the include directory", name)
		} else if _, err := os.Stat(filepath.Join(dir, base)); err != nil {
			t.Errorf("spare %s left without its file %s", name, base)
		}
	}

	figure(t, "%d SIGKILLs in %v (%d the moment a write was in progress, %d of them a spare's; %d at random moments); churn %d registry changes, about %.1f file writes/s",
		iterations, elapsed.Round(time.Millisecond), midWrite, onSpare, random, changes.Load(), writes)
	figure(t, "after every kill: file complete (%d upstreams, %d servers), nginx -t passed; %d kills cut a write short; %d temp files left behind, none includable (%s)",
		services, services*instances, cut, len(left), strings.Join(names[:min(len(names), 3)], " "))
	// 2–3 writes/s were measured here (the engine's debounce batches the
	// churn); fewer than one would make "the moment a write is in
	// progress" rare.
	if writes < 1 {
		t.Errorf("only %.2f file writes/s: the churn did not drive the daemon hard", writes)
	}
	if (!perUpstream || churned < 16) && onSpare < midWrite/2 {
		t.Errorf("%d of %d kills mid-write landed on a spare's write: the churn of %d upstreams did not make the store write through its spares", onSpare, midWrite, churned)
	}
}

// waitForWrite polls dir until a write of the persisted file is in
// progress, and says what showed it: "temp", a temp file that is not in
// before, or "spare", a spare being rewritten in place: from one look to
// the next, the same inode under the spare's name with another size or
// time, and its file untouched (so not yet exchanged: an exchange changes
// the file, and puts another inode under the spare's name); "" when none
// came in time. Either lasts only for one write, so the poll does not
// sleep.
func waitForWrite(dir string, before map[string]string, timeout time.Duration) string {
	stamps := func() map[string]string {
		entries, _ := os.ReadDir(dir)
		out := make(map[string]string, len(entries))
		for _, e := range entries {
			out[e.Name()] = stampOf(filepath.Join(dir, e.Name()))
		}
		return out
	}
	last := stamps()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		now := stamps()
		for name, stamp := range now {
			if !strings.HasPrefix(name, ".") {
				continue
			}
			if strings.Contains(name, ".conf.tmp-") {
				if _, seen := before[name]; !seen {
					return "temp"
				}
			} else if file, ok := strings.CutSuffix(strings.TrimPrefix(name, "."), ".spare"); ok && last[name] != "" {
				if stamp != last[name] && inodeOfStamp(stamp) == inodeOfStamp(last[name]) && now[file] == last[file] {
					return "spare"
				}
			}
		}
		last = now
	}
	return ""
}

// inodeOfStamp is the inode part of a stampOf.
func inodeOfStamp(stamp string) string {
	ino, _, _ := strings.Cut(stamp, ":")
	return ino
}

// stampOf is a file's inode, size and modification time, "" if it is gone.
func stampOf(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d", fi.Sys().(*syscall.Stat_t).Ino, fi.Size(), fi.ModTime().UnixNano())
}

// nginxTestCommand writes an nginx.conf that includes everything in dir,
// as an operator would (`include dir/*;`), with a server that proxies to
// the upstream svc-00 (so nginx checks that the files define it), and
// returns the nginx -t command that tests it.
func nginxTestCommand(t *testing.T, dir string) []string {
	return nginxTestCommandFor(t, dir, "location / { proxy_pass http://svc-00; }")
}

// nginxTestCommandFor is nginxTestCommand with the server's location
// block given ("" for none).
func nginxTestCommandFor(t *testing.T, dir, location string) []string {
	t.Helper()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "Debian: apt-get install nginx")
	prefix := t.TempDir()
	conf := filepath.Join(prefix, "nginx.conf")
	text := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    access_log off;
    include %[2]s/*;
    server {
        listen 127.0.0.1:%[3]d;
        %[4]s
    }
}
`, prefix, dir, testenv.FreePort(t), location)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{bin, "-t", "-q", "-p", prefix, "-e", filepath.Join(prefix, "error.log"), "-c", conf}
}

func waitLogLine(t *testing.T, d *daemon, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon never logged %q; log:\n%s", substr, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func must(b []byte, _ error) []byte { return b }

// readPersisted reads the persisted file own in dir, or with own "" every
// file of the directory store in dir (its *.conf, no dotfile), joined in
// name order as nginx's include reads them.
func readPersisted(dir, own string) ([]byte, error) {
	if own != "" {
		return os.ReadFile(filepath.Join(dir, own))
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil {
		return nil, err
	}
	var all []byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		all = append(all, data...)
	}
	return all, nil
}
