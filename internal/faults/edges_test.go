package faults

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// fileVersions records every version of the persisted file the daemon
// writes: the store writes a temp file in the same directory, closes it
// and renames it in, so inotify's IN_CLOSE_WRITE on the temp file (read at
// once) and IN_MOVED_TO on the file itself see each version complete.
type fileVersions struct {
	mu       sync.Mutex
	versions [][]byte
	fd       int
	done     chan struct{}
}

func watchFileVersions(t *testing.T, file string) *fileVersions {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	dir := filepath.Dir(file)
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO); err != nil {
		syscall.Close(fd)
		t.Fatalf("inotify watch %s: %v", dir, err)
	}
	v := &fileVersions{fd: fd, done: make(chan struct{})}
	go v.read(dir, filepath.Base(file))
	t.Cleanup(v.stop)
	return v
}

func (v *fileVersions) read(dir, base string) {
	defer close(v.done)
	buf := make([]byte, 64*1024)
	for {
		n, err := syscall.Read(v.fd, buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if name != base && !strings.HasPrefix(name, "."+base+".tmp-") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				continue // a temp file already renamed: its IN_MOVED_TO follows
			}
			v.mu.Lock()
			if len(v.versions) == 0 || !bytes.Equal(v.versions[len(v.versions)-1], data) {
				v.versions = append(v.versions, data)
			}
			v.mu.Unlock()
		}
	}
}

func (v *fileVersions) stop() {
	select {
	case <-v.done:
		return
	default:
	}
	syscall.Close(v.fd) // ends the blocked read
	select {
	case <-v.done:
	case <-time.After(2 * time.Second):
	}
}

// all returns the versions seen so far.
func (v *fileVersions) all() [][]byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([][]byte(nil), v.versions...)
}

// checkEveryVersion runs nginx -t on every version of the file written
// during the test, and checks that none names an upstream twice in any
// case (issue 13's invariant): it returns how many versions it checked.
func checkEveryVersion(t *testing.T, v *fileVersions) int {
	t.Helper()
	dir := t.TempDir()
	nginxTest := nginxTestCommandFor(t, dir, "")
	versions := v.all()
	if len(versions) == 0 {
		t.Fatal("no version of the persisted file was seen: nothing was checked with nginx -t")
	}
	for i, data := range versions {
		if _, err := upstream.ParseFile(data); err != nil {
			t.Errorf("version %d of the file does not parse: %v\n%s", i, err, data)
		}
		if err := os.WriteFile(filepath.Join(dir, "upstreams.conf"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(nginxTest[0], nginxTest[1:]...).CombinedOutput(); err != nil {
			t.Errorf("nginx -t refuses version %d of the persisted file: %v\n%s\n%s", i, err, out, data)
		}
	}
	return len(versions)
}

// upstreamNames lists the upstream blocks of a file version.
func upstreamNames(data []byte) []string {
	var names []string
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "upstream "); ok {
			names = append(names, strings.TrimSuffix(strings.TrimSpace(rest), " {"))
		}
	}
	return names
}

// Issue 13, reproduction A: `api` is in nginx; `Api` (another service,
// names equal but for case) registers and is held as a collision; then
// `api`'s instance deregisters. Before: the file held both names for 5 s
// (nginx -t: duplicate upstream), nginx flipped between them (608 of 2,183
// requests 502), and `Api` ended up with `api`'s instance as well.
// Now: traffic moves to Api's instance with no failed request, every file
// version passes nginx -t, and nginx ends holding Api's instance only.
func TestCaseCollisionThenOldNameLeaves(t *testing.T) {
	e := startEdges(t, daemonConfig{})
	c, file, versions, ng, d := e.consul, e.file, e.versions, e.nginx, e.daemon
	a, b := startBackend(t, "web-a"), startBackend(t, "web-b")

	c.Register(t, "api", "lower-api-1", "127.0.0.1", a.Port, nil, nil)
	waitRoutes(t, ng, d, "api", 15*time.Second, "web-a")

	load := startLoad(ng, "api", 200, 4)
	c.Register(t, "Api", "upper-api-1", "127.0.0.1", b.Port, nil, nil)
	waitLogLine(t, d, "name collides case-insensitively with [api]")
	if seen, failed := route(ng, "api", 8); failed > 0 || len(seen) != 1 || seen["web-a"] != 8 {
		t.Fatalf("while Api is held, traffic went to %v (%d failed), want web-a only", seen, failed)
	}

	c.Deregister(t, "lower-api-1")
	took := waitRoutes(t, ng, d, "Api", 15*time.Second, "web-b")
	// Two drift checks more, so that a flip back (a drift repair of the
	// old name, then a DELETE) would have happened under the load.
	waitDriftChecks(t, d, 2)
	recs := load.finish()
	if bad := failures(recs); len(bad) > 0 {
		t.Errorf("%d of %d requests failed during the case-only change, first: %+v", len(bad), len(recs), bad[0])
	}
	figure(t, "reproduction A: %d requests, %d failed; traffic on Api's instance %v after the deregistration", len(recs), len(failures(recs)), took.Round(time.Millisecond))

	if got := fileServers(t, file, "Api"); len(got) != 1 || got[0] != b.Addr() {
		t.Errorf("file holds Api = %v, want only %s", got, b.Addr())
	}
	addrs, ok, err := detailAddrs(ng, "Api")
	if err != nil || !ok || len(addrs) != 1 || addrs[0] != b.Addr() {
		t.Errorf("nginx holds Api = %v (%v, %v), want only %s", addrs, ok, err, b.Addr())
	}
	if body, _ := detail(ng); strings.Count(strings.ToLower(body), "api\n") != 1 {
		t.Errorf("nginx /detail names api more than once:\n%s", body)
	}
	for line := range strings.Lines(d.log.String()) {
		if strings.Contains(line, "+ server") && strings.Contains(line, "upstream=Api") && strings.Contains(line, "lower-api-1") {
			t.Errorf("the deregistered instance joined Api: %s", line)
		}
	}
	n := checkEveryVersion(t, versions)
	for i, data := range versions.all() {
		if names := upstreamNames(data); len(names) > 1 {
			t.Errorf("version %d of the file holds %v", i, names)
		}
	}
	figure(t, "reproduction A: %d file versions written, each passed nginx -t", n)
}

// Issue 13, reproduction B: `rn` deregisters and `Rn` registers at once
// (a case-only rename). Before: the file held both for 5 s and nginx went
// Rn → rn → nothing → Rn (133 of 2,174 requests 502). Now: one POST moves
// traffic to the new instance, no request fails, no file version holds
// both names, and no DELETE reaches nginx.
func TestCaseOnlyRename(t *testing.T) {
	e := startEdges(t, daemonConfig{})
	c, file, versions, ng, d := e.consul, e.file, e.versions, e.nginx, e.daemon
	a, b := startBackend(t, "web-a"), startBackend(t, "web-b")

	c.Register(t, "rn", "rn-1", "127.0.0.1", a.Port, nil, nil)
	waitRoutes(t, ng, d, "rn", 15*time.Second, "web-a")
	deletes := d.scrape(t).sum("swallowkeeper_dyups_requests_total", `op="DELETE"`)

	load := startLoad(ng, "rn", 200, 4)
	// Back to back, as a redeploy under the new name would.
	c.Deregister(t, "rn-1")
	c.Register(t, "Rn", "Rn-1", "127.0.0.1", b.Port, nil, nil)
	took := waitRoutes(t, ng, d, "Rn", 15*time.Second, "web-b")
	waitDriftChecks(t, d, 2)
	recs := load.finish()
	if bad := failures(recs); len(bad) > 0 {
		t.Errorf("%d of %d requests failed during the rename, first: %+v", len(bad), len(recs), bad[0])
	}
	figure(t, "reproduction B: %d requests, %d failed; traffic on the new instance %v after the rename", len(recs), len(failures(recs)), took.Round(time.Millisecond))
	if got := d.scrape(t).sum("swallowkeeper_dyups_requests_total", `op="DELETE"`); got != deletes {
		t.Errorf("%v DELETEs reached nginx during a case-only rename, want none (a DELETE of rn removes Rn)", got-deletes)
	}
	if got := fileServers(t, file, "Rn"); len(got) != 1 || got[0] != b.Addr() {
		t.Errorf("file holds Rn = %v, want only %s", got, b.Addr())
	}
	n := checkEveryVersion(t, versions)
	for i, data := range versions.all() {
		if names := upstreamNames(data); len(names) > 1 {
			t.Errorf("version %d of the file holds %v", i, names)
		}
	}
	figure(t, "reproduction B: %d file versions written, each passed nginx -t", n)
}

// waitDriftChecks waits until the daemon's target has finished n more
// drift checks (its status' last_check moved n times).
func waitDriftChecks(t *testing.T, d *daemon, n int) {
	t.Helper()
	last := d.status(t).Targets[0].LastCheck
	for i := 0; i < n; i++ {
		if _, ok := waitFor(t.Context(), 10*time.Second, func() bool {
			now := d.status(t).Targets[0].LastCheck
			if now.After(last) {
				last = now
				return true
			}
			return false
		}); !ok {
			t.Fatalf("drift check %d of %d did not run within 10s; log:\n%s", i+1, n, d.log.String())
		}
	}
}

// fileServers lists the server addresses of upstream name in the file.
func fileServers(t *testing.T, path, name string) []string {
	t.Helper()
	st, err := upstream.ParseFile(must(os.ReadFile(path)))
	if err != nil {
		t.Fatalf("persisted file does not parse: %v", err)
	}
	var out []string
	for _, s := range st[name].Servers {
		out = append(out, s.Addr.String())
	}
	return out
}

// Issue 13, item 2: an upstream whose servers are all `backup` (the etcd
// upsync layout's "backup":1) is refused by nginx ("no servers in
// upstream"): before, the Lua POST failed, a restarted Lua nginx loaded
// no upstream at all, and nginx -t failed. Now such a set is never
// rendered: the upstream keeps its last servers, held and reported, every
// file version passes nginx -t, and a restarted nginx still routes.
func TestBackupOnlyUpstreamKeepsItsLastServers(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client(t)
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(t.Context(), k, v); err != nil {
			t.Fatalf("etcd put %s: %v", k, err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.conf")
	versions := watchFileVersions(t, file)
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	a, b := startBackend(t, "web-a"), startBackend(t, "web-b")
	metrics := testenv.Addr(testenv.FreePort(t))
	d := startDaemon(t, writeConfig(t, daemonConfig{Consul: "127.0.0.1:1", File: file, Target: ng.APIURL(), Metrics: metrics,
		Extra: "source: etcd\netcd:\n  endpoints: [" + e.Endpoints()[0] + "]\n  layout: upsync\n"}), metrics)

	put("/upstreams/web/"+a.Addr(), `{"weight":1,"backup":0}`)
	waitRoutes(t, ng, d, "web", 15*time.Second, "web-a")

	load := startLoad(ng, "web", 100, 2)
	put("/upstreams/web/"+a.Addr(), `{"weight":1,"backup":1}`)
	put("/upstreams/web/"+b.Addr(), `{"weight":1,"backup":1}`)
	waitLogLine(t, d, "only backup servers (2), which nginx refuses without a primary; keeping 1 last known servers")
	held := false
	for _, h := range d.status(t).Holds {
		held = held || h.Upstream == "web" && h.Guard == "empty" && strings.Contains(h.Reason, "only backup servers")
	}
	if !held {
		t.Errorf("status shows no hold of web: %+v", d.status(t).Holds)
	}
	// During the hold, web still serves its last primary, and nothing
	// failed.
	if seen, failed := route(ng, "web", 20); failed > 0 || seen["web-a"] != 20 {
		t.Errorf("during the hold traffic went to %v, %d failed; want web-a only", seen, failed)
	}
	recs := load.finish()
	if bad := failures(recs); len(bad) > 0 {
		t.Errorf("%d of %d requests failed while the backup-only set was held, first: %+v", len(bad), len(recs), bad[0])
	}
	figure(t, "backup-only: %d requests during the hold, %d failed", len(recs), len(failures(recs)))
	// A restarted Lua nginx loads the persisted file: it must hold web.
	ng.Stop(t)
	ng.Start(t)
	waitRoutes(t, ng, d, "web", 15*time.Second, "web-a")
	if got := fileServers(t, file, "web"); len(got) != 1 || got[0] != a.Addr() {
		t.Errorf("file holds web = %v, want the last primary %s", got, a.Addr())
	}
	if strings.Contains(ng.ErrorLog(), "no servers in upstream") || strings.Contains(ng.ErrorLog(), "add server failed") {
		t.Errorf("nginx refused an upstream:\n%s", ng.ErrorLog())
	}

	// A primary again: applied at once.
	put("/upstreams/web/"+b.Addr(), `{"weight":1,"backup":0}`)
	waitRoutes(t, ng, d, "web", 15*time.Second, "web-b")
	n := checkEveryVersion(t, versions)
	figure(t, "backup-only: %d file versions written, each passed nginx -t", n)
}

// Issue 13, item 3: a service whose instances all become invalid (here an
// agent switching to a hostname) keeps its last servers under the empty
// guard and says why; before, it was removed after confirm_after.
func TestServiceWhoseInstancesTurnInvalidKeepsItsServers(t *testing.T) {
	e := startEdges(t, daemonConfig{Extra: "guards:\n  confirm_after: 1s\n"})
	c, file, ng, d := e.consul, e.file, e.nginx, e.daemon
	a := startBackend(t, "web-a")

	c.Register(t, "web", "web-1", "127.0.0.1", a.Port, nil, nil)
	waitRoutes(t, ng, d, "web", 15*time.Second, "web-a")
	c.Register(t, "web", "web-1", "web-1.example.com", a.Port, nil, nil)
	waitLogLine(t, d, "no healthy valid instances (1 of service web dropped as invalid); keeping 1 last known servers")
	// confirm_after is 1s: three drift checks (one a second) later, a
	// removal would have been confirmed and applied.
	waitDriftChecks(t, d, 3)
	if got := fileServers(t, file, "web"); len(got) != 1 || got[0] != a.Addr() {
		t.Errorf("after 3 drift checks the file holds web = %v, want the last server %s", got, a.Addr())
	}
	if seen, failed := route(ng, "web", 8); failed > 0 || seen["web-a"] != 8 {
		t.Errorf("traffic after the instance turned invalid: %v, %d failed", seen, failed)
	}
}

// Issue 13, item 6: a service named like an upstream block of nginx.conf
// would make the persisted file duplicate it, and the next reload or
// restart would fail. With upstreams.reserved, the name is never created
// and the service is reported; every file version passes nginx -t with
// the static block beside it.
func TestReservedNamesAreNeverCreated(t *testing.T) {
	e := startEdges(t, daemonConfig{UpstreamsExtra: "  reserved: [svc-00]   # nginx.conf has upstream svc-00 {}\n"})
	c, file, versions, ng, d := e.consul, e.file, e.versions, e.nginx, e.daemon
	a := startBackend(t, "web-a")

	c.Register(t, "web", "web-1", "127.0.0.1", a.Port, nil, nil)
	c.Register(t, "SVC-00", "evil-1", "127.0.0.1", a.Port, nil, nil)
	waitRoutes(t, ng, d, "web", 15*time.Second, "web-a")
	waitLogLine(t, d, "is reserved (upstreams.reserved")
	if names := upstreamNames(must(os.ReadFile(file))); len(names) != 1 || names[0] != "web" {
		t.Errorf("file holds %v, want only web", names)
	}
	if _, ok, err := detailAddrs(ng, "svc-00"); err != nil || ok {
		t.Errorf("nginx holds the reserved name (%v)", err)
	}
	// nginx -t of every version beside a static `upstream svc-00 {}`.
	static := t.TempDir()
	nginxTest := nginxTestCommandFor(t, static, "location / { proxy_pass http://svc-00; }")
	if err := os.WriteFile(filepath.Join(static, "static.conf"), []byte("upstream svc-00 { server 10.0.0.1:80; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, data := range versions.all() {
		if err := os.WriteFile(filepath.Join(static, "upstreams.conf"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(nginxTest[0], nginxTest[1:]...).CombinedOutput(); err != nil {
			t.Errorf("nginx -t refuses version %d beside the static block: %v\n%s\n%s", i, err, out, data)
		}
	}
	figure(t, "reserved: %d file versions written, each passed nginx -t beside the static upstream", len(versions.all()))
}

// edges is the stack of the edge tests: real Consul, a Lua nginx that
// starts from the persisted file, and the daemon, with every version of
// the file recorded.
type edges struct {
	consul   *testenv.Consul
	file     string
	versions *fileVersions
	nginx    *testenv.Nginx
	daemon   *daemon
}

// startEdges starts the stack; cfg adds to the daemon's configuration.
func startEdges(t *testing.T, cfg daemonConfig) edges {
	t.Helper()
	e := edges{consul: testenv.StartConsul(t), file: filepath.Join(t.TempDir(), "upstreams.conf")}
	e.versions = watchFileVersions(t, e.file)
	e.nginx = testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: e.file})
	cfg.Consul, cfg.File, cfg.Target = e.consul.HTTPAddr(), e.file, e.nginx.APIURL()
	cfg.Metrics = testenv.Addr(testenv.FreePort(t))
	e.daemon = startDaemon(t, writeConfig(t, cfg), cfg.Metrics)
	return e
}
