package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/store"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// apiRecorder sits between the daemon and an nginx's dyups API and keeps
// every request's method and path.
type apiRecorder struct {
	mu   sync.Mutex
	reqs []string
}

func startAPIRecorder(t *testing.T, target string) (*apiRecorder, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &apiRecorder{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *apiRecorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...)
}

// posts returns the POSTs of the upstream name (nginx compares names
// case-insensitively, so any case counts).
func (r *apiRecorder) posts(name string) []string {
	var out []string
	for _, q := range r.requests() {
		if strings.EqualFold(q, "POST /upstream/"+name) {
			out = append(out, q)
		}
	}
	return out
}

// nginxT runs nginx -t on the test nginx's own configuration, which
// includes the persisted file, as an operator would before a reload.
func nginxT(t *testing.T, ng *testenv.Nginx) []string {
	t.Helper()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "Debian: apt-get install nginx")
	p := ng.Prefix()
	return []string{bin, "-t", "-q", "-p", p, "-e", filepath.Join(p, "error.log"), "-c", filepath.Join(p, "nginx.conf")}
}

func runNginxT(t *testing.T, argv []string) error {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// daemonStatus reads the daemon's /status document.
func daemonStatus(t *testing.T, addr string) (persistError string, applied []string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		PersistError string `json:"persist_error"`
		Upstreams    []struct {
			Name string `json:"name"`
		} `json:"upstreams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("/status: %v", err)
	}
	for _, u := range doc.Upstreams {
		applied = append(applied, u.Name)
	}
	return doc.PersistError, applied
}

// TestVerifyCommandKeepsARefusedFileOutOfNginx: nginx.conf has a static
// `upstream web {}` and includes the persisted file. A service named web
// would make the file duplicate it: the verify command (the real
// nginx -t) refuses it, the daemon puts the last good file back, pushes
// nothing, and says so in the log, /status and a counter. Once the
// operator removes the static block, the retry lets the same registry
// state through, with no registry change.
func TestVerifyCommandKeepsARefusedFileOutOfNginx(t *testing.T) {
	c := testenv.StartConsul(t)
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := store.New(file).Save(upstream.State{}); err != nil { // nginx.conf includes it: it must exist
		t.Fatal(err)
	}
	const static = "upstream web { server 127.0.0.1:9; } # static, nginx.conf's own\n"
	ng := testenv.StartNginx(t, testenv.NginxOptions{HTTP: "\n    include " + file + ";\n    " + static})
	verify := nginxT(t, ng)
	rec, target := startAPIRecorder(t, ng.APIURL())
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	quoted := make([]string, len(verify))
	for i, a := range verify {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	cfg := filepath.Join(t.TempDir(), "swallowkeeper.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`consul:
  address: %s
  wait_time: 30s
file: %s
verify: [%s]
targets:
  - url: %s
    timeout: 2s
upstreams:
  allow_addresses: [127.0.0.0/8]   # the test backends are on loopback
metrics:
  listen: %s
`, c.HTTPAddr(), file, strings.Join(quoted, ", "), target, metricsAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	apiB, webB := startBackend(t, "api-1"), startBackend(t, "web-1")
	c.Register(t, "api", "api-1", "127.0.0.1", apiB.Port, nil, nil)
	d := startDaemon(t, "-config", cfg)
	waitRoutes(t, ng, d, "api", "api-1")
	good, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(good), "upstream api {") {
		t.Fatalf("the first file (%v):\n%s", err, good)
	}

	// A service named like nginx.conf's static upstream.
	c.Register(t, "web", "web-1", "127.0.0.1", webB.Port, nil, nil)
	waitLog(t, d, "verify command refused the new upstream file")
	var refused float64
	for deadline := time.Now().Add(15 * time.Second); refused < 2; refused = scrape(t, metricsAddr).sum("swallowkeeper_verify_failures_total") {
		if time.Now().After(deadline) {
			t.Fatalf("%v refusals within 15s, want the engine to retry; log:\n%s", refused, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Evidence gathered after the second refusal: each refusal wrote the
	// file with web, ran nginx -t on it and put the good file back.
	now, _ := os.ReadFile(file)
	if string(now) != string(good) {
		t.Fatalf("after %v refusals the file holds:\n%s\nwant the last good one:\n%s", refused, now, good)
	}
	if err := runNginxT(t, verify); err != nil {
		t.Fatalf("nginx -t refuses the file left on disk: %v", err)
	}
	if p := rec.posts("web"); len(p) > 0 {
		t.Fatalf("web was pushed although its file was refused: %v", p)
	}
	if n := len(rec.posts("api")); n == 0 {
		t.Fatalf("the recorder saw no POST of api either, so it proves nothing: %v", rec.requests())
	}
	t.Logf("after %v refusals the target got %d requests, none a POST of web: %v", refused, len(rec.requests()), rec.requests())
	perr, applied := daemonStatus(t, metricsAddr)
	if !strings.Contains(perr, `duplicate upstream "web"`) || !strings.Contains(perr, "put back") {
		t.Fatalf("/status persist_error %q; want nginx -t's complaint and the restore", perr)
	}
	if strings.Join(applied, ",") != "api" {
		t.Fatalf("/status shows applied %v, want only api", applied)
	}
	if code := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz answered %d while the newest state is refused, want 503", code)
	}
	if !strings.Contains(d.log.String(), `duplicate upstream \"web\"`) {
		t.Fatalf("the log lacks nginx -t's output:\n%s", d.log.String())
	}

	// The operator removes the static block; nothing changes in Consul.
	conf := filepath.Join(ng.Prefix(), "nginx.conf")
	text, err := os.ReadFile(conf)
	if err != nil || !strings.Contains(string(text), static) {
		t.Fatalf("nginx.conf (%v) lacks the static block:\n%s", err, text)
	}
	if err := os.WriteFile(conf, []byte(strings.Replace(string(text), static, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	took := waitRoutes(t, ng, d, "web", "web-1")
	t.Logf("web reached traffic %v after nginx.conf was mended (retry backoff up to 10s)", took)
	waitRoutes(t, ng, d, "api", "api-1")
	if got := fileServers(t, file, "web"); len(got) != 1 || got[0] != webB.Addr() {
		t.Fatalf("file servers of web %v, want [%s]", got, webB.Addr())
	}
	if err := runNginxT(t, verify); err != nil {
		t.Fatalf("nginx -t refuses the file written after the fix: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if perr, _ := daemonStatus(t, metricsAddr); perr == "" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("/status still shows %q %v after the state went through", perr, time.Since(fixed))
		}
	}
	if code := httpStatus(t, "http://"+metricsAddr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz answered %d once the state went through, want 200", code)
	}
}
