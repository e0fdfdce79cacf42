// Conformance tests of the Lua dyups module (nginx/lua/swallowkeeper)
// against a real nginx + lua-nginx-module, started by testenv.StartNginx.
// The expected answers are those of ngx_http_dyups_module as recorded on a
// real dyups build, see docs/DYUPS-API.md; where the Lua module differs on
// purpose, the test says so.
package nginx_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// ---------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------

type response struct {
	status int
	header http.Header
	body   string
}

func str(s string) *string { return &s }

// rawDo sends one HTTP/1.1 request byte for byte (so a test controls
// whether there is a Content-Length at all) and reads the response.
// body == nil sends neither a body nor a Content-Length.
func rawDo(t *testing.T, addr, method, target string, body *string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return rawConn(t, conn, method, target, nil, body)
}

// apiDo is rawDo to the API of ngx, over TCP or its unix socket, with
// extra header lines ("Name: value").
func apiDo(t *testing.T, ngx *testenv.Nginx, method, target string, header []string, body *string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ngx.DialAPI(ctx)
	if err != nil {
		t.Fatalf("dial the API (%s): %v", ngx.APIURL(), err)
	}
	return rawConn(t, conn, method, target, header, body)
}

// rawConn sends one request on conn, which it closes.
func rawConn(t *testing.T, conn net.Conn, method, target string, header []string, body *string) response {
	t.Helper()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", method, target)
	for _, h := range header {
		b.WriteString(h + "\r\n")
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(*body))
	}
	b.WriteString("\r\n")
	if body != nil {
		b.WriteString(*body)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("%s %s: write: %v", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: read response: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// expect checks status and exact body, and that the answer looks like one
// from dyups: no Content-Type, and a Content-Length of the body (none on
// 204, where nginx drops it).
func expect(t *testing.T, what string, r response, status int, body string) {
	t.Helper()
	if r.status != status || r.body != body {
		t.Errorf("%s: got %d %q, want %d %q", what, r.status, r.body, status, body)
	}
	if ct, ok := r.header["Content-Type"]; ok {
		t.Errorf("%s: has Content-Type %q, dyups sends none", what, ct)
	}
	cl, hasCL := r.header["Content-Length"]
	switch {
	case status == http.StatusNoContent && hasCL:
		t.Errorf("%s: 204 with Content-Length %q", what, cl)
	case status != http.StatusNoContent && (!hasCL || cl[0] != strconv.Itoa(len(body))):
		t.Errorf("%s: Content-Length %q, want %d", what, cl, len(body))
	}
}

func post(t *testing.T, ngx *testenv.Nginx, name, body string) response {
	t.Helper()
	return rawDo(t, ngx.APIAddr(), "POST", "/upstream/"+name, &body)
}

func mustPost(t *testing.T, ngx *testenv.Nginx, name, body string) {
	t.Helper()
	expect(t, "POST /upstream/"+name, post(t, ngx, name, body), 200, "success")
}

func get(t *testing.T, ngx *testenv.Nginx, target string) response {
	t.Helper()
	return rawDo(t, ngx.APIAddr(), "GET", target, nil)
}

// backend is a tiny HTTP server on loopback that answers its id and counts
// the TCP connections it accepted.
type backend struct {
	id    string
	addr  string
	conns atomic.Int64
}

func startBackend(t *testing.T, id string) *backend {
	t.Helper()
	b := &backend{id: id}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, id)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// startUnixBackend is a backend on a unix socket.
func startUnixBackend(t *testing.T, id string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	_ = os.Chmod(path, 0o777)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, id)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

// allowUnix is the init() option that lets POST bodies name unix: servers
// (refused by default, see TestUnixServersRefusedUnlessAllowed).
const allowUnix = "allow_unix_servers = true,"

// deadAddr is a loopback address nothing listens on: connect is refused.
func deadAddr(t *testing.T) string { return testenv.Addr(testenv.FreePort(t)) }

type routed struct {
	status int
	body   string
	worker string
	tried  string
}

// through sends a request through the proxy to upstream `name` (the proxy
// routes by Host). close asks for a new connection, which with
// `listen ... reuseport` spreads requests over the workers.
func through(t *testing.T, c *http.Client, ngx *testenv.Nginx, name string, close bool) routed {
	t.Helper()
	req, err := http.NewRequest("GET", ngx.ProxyURL()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = name
	req.Close = close
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET via proxy (%s): %v", name, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return routed{status: resp.StatusCode, body: string(data),
		worker: resp.Header.Get("X-SK-Worker"), tried: resp.Header.Get("X-SK-Upstream-Addr")}
}

// spread sends n requests on fresh connections and counts the answers.
func spread(t *testing.T, ngx *testenv.Nginx, name string, n int) (map[string]int, map[string]bool) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	got, workers := map[string]int{}, map[string]bool{}
	for range n {
		r := through(t, c, ngx, name, true)
		if r.status != 200 {
			got[fmt.Sprintf("status %d", r.status)]++
			continue
		}
		got[r.body]++
		workers[r.worker] = true
	}
	return got, workers
}

// ---------------------------------------------------------------------
// The REST API, row by row
// ---------------------------------------------------------------------

// TestAPIMatchesDyups walks every row of the docs/DYUPS-API.md table
// (except the trylock 409 and the 413 page, see README) in order,
// asserting status, exact body bytes and the absence of Content-Type.
func TestAPIMatchesDyups(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	addr := ngx.APIAddr()

	valid := "server 127.0.0.1:28091;server 127.0.0.1:28092 weight=2 max_fails=3 fail_timeout=2s;"
	detail := "myups\n" +
		"server 127.0.0.1:28091 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n" +
		"server 127.0.0.1:28092 weight=2 max_conns=0 max_fails=3 fail_timeout=2 backup=0 down=0\n" +
		"\n"

	steps := []struct {
		name   string
		method string
		target string
		body   *string
		status int
		want   string
	}{
		{"GET /list, none defined", "GET", "/list", nil, 204, ""},
		{"GET /detail, none defined", "GET", "/detail", nil, 204, ""},
		{"GET /upstream/NAME, missing", "GET", "/upstream/myups", nil, 404, ""},
		{"POST, valid body", "POST", "/upstream/myups", str(valid), 200, "success"},
		{"GET /list", "GET", "/list", nil, 200, "myups\n"},
		{"GET /detail", "GET", "/detail", nil, 200, detail},
		{"GET /upstream/NAME", "GET", "/upstream/myups", nil, 200,
			"server 127.0.0.1:28091\nserver 127.0.0.1:28092\n"},
		{"first segment is case-insensitive", "GET", "/LiSt", nil, 200, "myups\n"},
		{"query string is ignored", "GET", "/detail?x=1&y", nil, 200, detail},
		{"GET /upstream with no name", "GET", "/upstream", nil, 404, ""},
		{"GET /upstream/a/b", "GET", "/upstream/a/b", nil, 404, ""},
		{"GET /foo", "GET", "/foo", nil, 404, ""},
		{"POST, body of zero length", "POST", "/upstream/myups", str(""), 500, "add server failed"},
		{"POST with no body at all", "POST", "/upstream/myups", nil, 204, ""},
		{"POST with no body to a bad path", "POST", "/foo/bar", nil, 204, ""},
		{"POST, garbage", "POST", "/upstream/myups", str("garbage"), 500, "add server failed"},
		{"POST, missing ;", "POST", "/upstream/myups", str("server 10.0.0.1:80"), 500, "add server failed"},
		{"POST, bad port", "POST", "/upstream/myups", str("server 10.0.0.1:70000;"), 500, "add server failed"},
		{"POST, weight=0", "POST", "/upstream/myups", str("server 10.0.0.1:80 weight=0;"), 500, "add server failed"},
		{"POST, hostname", "POST", "/upstream/myups", str("server no-such-host.invalid:80;"), 500, "add server failed"},
		{"POST, IPv6 without brackets", "POST", "/upstream/myups", str("server ::1:80;"), 500, "add server failed"},
		{"POST, unknown directive", "POST", "/upstream/myups", str("server 10.0.0.1:80; frobnicate;"), 500, "add server failed"},
		{"rejected bodies left the upstream alone", "GET", "/detail", nil, 200, detail},
		{"POST /upstream", "POST", "/upstream", str(valid), 404, "not support this interface"},
		{"POST /upstream/", "POST", "/upstream/", str(valid), 404, "not support this interface"},
		{"POST /upstream/a/b", "POST", "/upstream/a/b", str(valid), 404, "not support this interface"},
		{"POST /list", "POST", "/list", str(valid), 404, "not support this interface"},
		{"POST /foo/bar", "POST", "/foo/bar", str(valid), 404, "not support this api"},
		{"DELETE /upstream", "DELETE", "/upstream", nil, 405, "not support this interface"},
		{"DELETE /list", "DELETE", "/list", nil, 405, "not support this interface"},
		{"DELETE /detail", "DELETE", "/detail", nil, 405, "not support this interface"},
		{"DELETE /foo/bar", "DELETE", "/foo/bar", nil, 405, "not support this api"},
		{"PUT", "PUT", "/upstream/myups", str(valid), 405, ""},
		{"PATCH", "PATCH", "/upstream/myups", str(valid), 405, ""},
		{"HEAD", "HEAD", "/list", nil, 405, ""},
		{"DELETE /upstream/NAME", "DELETE", "/upstream/MYUPS", nil, 200, "success"},
		{"DELETE /upstream/NAME, missing", "DELETE", "/upstream/myups", nil, 404, "not found uptream"},
		{"GET /list after the delete", "GET", "/list", nil, 204, ""},
	}
	for _, s := range steps {
		expect(t, s.name, rawDo(t, addr, s.method, s.target, s.body), s.status, s.want)
	}

	// Over client_max_body_size (1m by default): nginx's own 413 page, as
	// with dyups, before the handler runs.
	big := strings.Repeat("#", 1<<20+1)
	if r := rawDo(t, addr, "POST", "/upstream/myups", &big); r.status != 413 ||
		!strings.Contains(r.body, "413 Request Entity Too Large") {
		t.Errorf("POST over client_max_body_size: got %d %q, want nginx's 413 page", r.status, r.body)
	}

	// GET / has no first segment: dyups returns NGX_HTTP_NOT_FOUND and nginx
	// answers with its own 404 page; so do we.
	r := get(t, ngx, "/")
	if r.status != 404 || !strings.Contains(r.body, "<center><h1>404 Not Found</h1></center>") {
		t.Errorf("GET /: got %d %q, want nginx's 404 page", r.status, r.body)
	}

	// The reason a body was refused is only in the error log, with the name.
	log := ngx.ErrorLog()
	for _, reason := range []string{
		`upstream "myups": invalid parameter "weight=0"`,
		`upstream "myups": unexpected end of parameter, expecting ";"`,
		`upstream "myups": invalid port in upstream "10.0.0.1:70000"`,
		`upstream "myups": invalid port in upstream "::1:80"`,
		`upstream "myups": unknown directive "frobnicate"`,
		`upstream "myups": host not found`,
		`upstream "myups": no servers in upstream`,
	} {
		if !strings.Contains(log, reason) {
			t.Errorf("error.log lacks %q", reason)
		}
	}
}

// TestDetailFormat checks /detail and /upstream/NAME byte for byte over
// several upstreams and every server parameter: canonical addresses (IPv6
// compressed, leading zeros gone, default port 80), fail_timeout in whole
// seconds, a blank line after each upstream, order of last POST.
func TestDetailFormat(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: allowUnix})

	mustPost(t, ngx, "web", `
		# the daemon's own style
		server 10.0.0.1:8080 weight=1 max_fails=3 fail_timeout=10s;
		server [::1]:8080 weight=2 max_fails=3 fail_timeout=10s backup;
		keepalive 16;
	`)
	mustPost(t, ngx, "Api", "server 010.000.0.002 max_conns=7 fail_timeout=2m down;"+
		"server [2001:DB8:0:0:0:0:0:1]:9000 fail_timeout=1h; server 10.0.0.3:80 fail_timeout=0;"+
		"server unix:/run/api.sock max_fails=0;least_conn;")
	mustPost(t, ngx, "odd", `server "10.0.0.4:81" 'weight=3' fail_timeout=1m30s;`)

	want := "web\n" +
		"server 10.0.0.1:8080 weight=1 max_conns=0 max_fails=3 fail_timeout=10 backup=0 down=0\n" +
		"server [::1]:8080 weight=2 max_conns=0 max_fails=3 fail_timeout=10 backup=1 down=0\n" +
		"\n" +
		"Api\n" +
		"server 10.0.0.2:80 weight=1 max_conns=7 max_fails=1 fail_timeout=120 backup=0 down=1\n" +
		"server [2001:db8::1]:9000 weight=1 max_conns=0 max_fails=1 fail_timeout=3600 backup=0 down=0\n" +
		"server 10.0.0.3:80 weight=1 max_conns=0 max_fails=1 fail_timeout=0 backup=0 down=0\n" +
		"server unix:/run/api.sock weight=1 max_conns=0 max_fails=0 fail_timeout=10 backup=0 down=0\n" +
		"\n" +
		"odd\n" +
		"server 10.0.0.4:81 weight=3 max_conns=0 max_fails=1 fail_timeout=90 backup=0 down=0\n" +
		"\n"
	expect(t, "GET /detail", get(t, ngx, "/detail"), 200, want)
	expect(t, "GET /list", get(t, ngx, "/list"), 200, "web\nApi\nodd\n")
	expect(t, "GET /upstream/api", get(t, ngx, "/upstream/api"), 200,
		"server 10.0.0.2:80\nserver [2001:db8::1]:9000\nserver 10.0.0.3:80\nserver unix:/run/api.sock\n")

	// Re-posting moves an upstream to the end of the list.
	mustPost(t, ngx, "web", "server 10.0.0.9:1;")
	expect(t, "GET /list after re-POST", get(t, ngx, "/list"), 200, "Api\nodd\nweb\n")
}

// TestNamesAreCaseInsensitive: one upstream whatever the case, shown with
// the case of the last POST.
func TestNamesAreCaseInsensitive(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	mustPost(t, ngx, "myups", "server 10.0.0.1:80;")
	mustPost(t, ngx, "MYUPS", "server 10.0.0.2:80;")
	expect(t, "GET /list", get(t, ngx, "/list"), 200, "MYUPS\n")
	expect(t, "GET /upstream/MyUps", get(t, ngx, "/upstream/MyUps"), 200, "server 10.0.0.2:80\n")
	expect(t, "DELETE /upstream/mYuPs", rawDo(t, ngx.APIAddr(), "DELETE", "/upstream/mYuPs", nil), 200, "success")
	expect(t, "GET /list", get(t, ngx, "/list"), 204, "")
}

// TestRejectedBodyKeepsOldUpstream: a refused POST changes nothing, for the
// API and for traffic.
func TestRejectedBodyKeepsOldUpstream(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	mustPost(t, ngx, "keep", "server "+a.addr+";")
	before := get(t, ngx, "/detail")

	// A valid first server followed by a bad one: all or nothing.
	r := post(t, ngx, "keep", "server "+deadAddr(t)+"; server 10.0.0.1:99999;")
	expect(t, "bad POST", r, 500, "add server failed")

	after := get(t, ngx, "/detail")
	if after.body != before.body {
		t.Errorf("/detail changed by a refused POST:\n%s\nwas\n%s", after.body, before.body)
	}
	got, _ := spread(t, ngx, "keep", 10)
	if got["a"] != 10 {
		t.Errorf("traffic after a refused POST: %v, want all to a", got)
	}
}

// TestLargeBody: 1,500 servers (a 36 KB body, larger than nginx's
// client_body_buffer_size, so read back from nginx's temp file) pass.
func TestLargeBody(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	var body, list strings.Builder
	for i := range 1500 {
		addr := fmt.Sprintf("10.%d.%d.%d:8080", i/65536, i/256%256, i%256)
		fmt.Fprintf(&body, "server %s weight=1;\n", addr)
		fmt.Fprintf(&list, "server %s\n", addr)
	}
	if body.Len() < 36*1024 {
		t.Fatalf("body is %d bytes, want at least 36 KB", body.Len())
	}
	mustPost(t, ngx, "big", body.String())
	expect(t, "GET /upstream/big", get(t, ngx, "/upstream/big"), 200, list.String())
}

// ---------------------------------------------------------------------
// The parser agrees with nginx's own
// ---------------------------------------------------------------------

// TestParserAgreesWithNginx posts each body to the Lua API and puts the same
// body in an `upstream {}` block checked by `nginx -t`: both must accept or
// both refuse. (nginx resolves hostnames; those cases are in
// TestParserRefusesWhatItWillNotResolve instead.)
func TestParserAgreesWithNginx(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: allowUnix})
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")

	bodies := []string{
		// accepted
		"server 10.0.0.1:8080;",
		"server 10.0.0.1:8080 weight=2 max_fails=3 fail_timeout=2s;server 10.0.0.2:8080 backup;",
		"server 10.0.0.1;",
		"\n  # a comment\n  server 10.0.0.1:80 ; # another\n",
		"server\t10.0.0.1\r\n;",
		"server [::1]:8080;",
		"server [::1];",
		"server [::ffff:10.0.0.1]:80;",
		"server [2001:db8::1]:80;",
		"server [::]:80;",
		"server unix:/tmp/sk.sock;",
		"server UNIX:/tmp/a:b;",
		"server 10.0.0.1 down; server 10.0.0.2;",
		"server 10.0.0.1 down;",
		"server 10.0.0.1 max_conns=10 max_fails=0 fail_timeout=0;",
		"server 10.0.0.1 fail_timeout=1m30s;",
		"server 10.0.0.1 fail_timeout=1y2M3w4d5h6m7s;",
		"server 10.0.0.1 fail_timeout=10s5;",
		"server 10.0.0.1 fail_timeout=9223372036854775807;",
		"server 10.0.0.1 weight=9223372036854775807;",
		"server 10.0.0.1 weight=2 weight=3;",
		"server 10.0.0.1; keepalive 16;",
		"server 10.0.0.1; keepalive_timeout 60s; keepalive_requests 100; keepalive_time 1h;",
		"server 10.0.0.1; keepalive_timeout 500ms;",
		"server 10.0.0.1; ip_hash;",
		"server 10.0.0.1; least_conn;",
		"server 10.0.0.1; hash $remote_addr consistent;",
		"server 10.0.0.1; hash ${request_uri}x;",
		"server 10.0.0.1; hash \"\";",
		"server 10.0.0.1; random;",
		"server 10.0.0.1; random two least_conn;",
		"server 10.0.0.1; least_conn; ip_hash;",
		"server 10.0.0.1 backup; server 10.0.0.2; least_conn;",
		"server 10.0.0.1; server 10.0.0.2 backup; ip_hash;",
		"least_conn; server 10.0.0.1; server 10.0.0.2 backup;",
		`server "10.0.0.1:80" 'weight=3';`,
		`server "10.0.0.1:80"	;`,
		`server 10.0.0.1:8\0;`,
		"server 010.000.000.001:080;",
		"server 10..0.1;",
		"server 10.0.0.1:65535;",
		// refused
		"",
		"   \n ",
		"# only a comment",
		"garbage",
		"server 10.0.0.1",
		"server 10.0.0.1:8080 weight=2",
		"server 10.0.0.1:0;",
		"server 10.0.0.1:65536;",
		"server 10.0.0.1:99999999999999999999;",
		"server 10.0.0.1:;",
		"server :80;",
		"server 10.0.0.1:+80;",
		"server 10.0.0.1 weight=0;",
		"server 10.0.0.1 weight=-1;",
		"server 10.0.0.1 weight=1.5;",
		"server 10.0.0.1 weight=;",
		"server 10.0.0.1 weight=99999999999999999999;",
		"server 10.0.0.1 Weight=2;",
		"server 10.0.0.1 max_fails=x;",
		"server 10.0.0.1 max_conns=-1;",
		"server 10.0.0.1 fail_timeout=500ms;",
		"server 10.0.0.1 fail_timeout=1s1m;",
		"server 10.0.0.1 fail_timeout=x;",
		"server 10.0.0.1 fail_timeout=;",
		"server 10.0.0.1 fail_timeout=300000000000y;",
		"server 10.0.0.1 downx;",
		"server 10.0.0.1 backup;",
		"server 10.0.0.1 down backup;",
		"server ::1:80;",
		"server [::1:80;",
		"server [::1]x;",
		"server [::1]:80x;",
		"server []:80;",
		"server [1::2:3:4:5:6:7:8]:80;",
		"server [1:2:3:4:5:6:7:8:9]:80;",
		"server [::1%eth0]:80;",
		"server [::1]:80/x;",
		"server [12345::1]:80;",
		"server 10.0.0.1:80/path;",
		"server 10.0.0.1?x;",
		"server unix:;",
		"server;",
		"ip_hash; server 10.0.0.1; server 10.0.0.2 backup;",
		"hash $remote_addr; server 10.0.0.1; server 10.0.0.2 backup;",
		"server 10.0.0.1; keepalive 0;",
		"server 10.0.0.1; keepalive x;",
		"server 10.0.0.1; keepalive 1; keepalive 2;",
		"server 10.0.0.1; keepalive;",
		"server 10.0.0.1; keepalive_timeout 5s; keepalive_timeout 6s;",
		"server 10.0.0.1; keepalive_timeout x;",
		"server 10.0.0.1; keepalive_requests x;",
		"server 10.0.0.1; hash $remote_addr foo;",
		"server 10.0.0.1; hash $;",
		"server 10.0.0.1; hash ${remote_addr;",
		"server 10.0.0.1; hash;",
		"server 10.0.0.1; random one;",
		"server 10.0.0.1; random two foo;",
		"server 10.0.0.1; ip_hash x;",
		"server 10.0.0.1; proxy_pass http://x;",
		"server 10.0.0.1; foo;",
		"SERVER 10.0.0.1;",
		"server 10.0.0.1; {",
		"server 10.0.0.1; }",
		"server 10.0.0.1 {}",
		"; server 10.0.0.1;",
		`server "10.0.0.1"x;`,
		`server "10.0.0.1;`,
	}

	dir := t.TempDir()
	for i, body := range bodies {
		conf := filepath.Join(dir, fmt.Sprintf("t%d.conf", i))
		text := fmt.Sprintf("pid %[1]s/t.pid;\nerror_log stderr;\nevents {}\nhttp {\n"+
			"client_body_temp_path %[1]s/b; proxy_temp_path %[1]s/p; fastcgi_temp_path %[1]s/f;\n"+
			"uwsgi_temp_path %[1]s/u; scgi_temp_path %[1]s/s; access_log off;\n"+
			"upstream x {\n%[2]s\n}\n}\n", dir, body)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput()
		nginxOK := err == nil

		r := post(t, ngx, "diff", body)
		luaOK := r.status == 200
		if r.status != 200 && r.status != 500 {
			t.Errorf("body %q: status %d", body, r.status)
		}
		if luaOK != nginxOK {
			t.Errorf("body %q: Lua accepts=%v, nginx accepts=%v (%s)", body, luaOK, nginxOK,
				strings.TrimSpace(string(out)))
		}
	}
}

// TestParserRefusesWhatItWillNotResolve lists the deliberate differences:
// nginx (and dyups) would resolve these names with a blocking lookup in a
// worker; the Lua module refuses anything that is not an IP literal. It
// also refuses `zone`, which cannot be added to a running nginx.
func TestParserRefusesWhatItWillNotResolve(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	for _, body := range []string{
		"server localhost:80;",
		"server example.com;",
		"server 10.0.1;", // inet_aton() would read 10.0.0.1
		"server 256.0.0.1:80;",
		"server 10.0.0.1; zone z 64k;",
	} {
		expect(t, body, post(t, ngx, "dev", body), 500, "add server failed")
	}
}

// TestAddressesPrintedAsNginxPrintsThem compares the address text shown by
// /upstream/NAME with nginx's own text for the same server line: nginx
// names a static upstream's peer in $upstream_addr with the same
// ngx_parse_url + ngx_sock_ntop that dyups uses for its listing.
func TestAddressesPrintedAsNginxPrintsThem(t *testing.T) {
	t.Parallel()
	addrs := []string{
		"127.0.0.1:1",
		"127.000.000.001:0001",
		"127.0..1:1",
		"[::1]:1",
		"[0:0:0:0:0:0:0:1]:1",
		"[::ffff:127.0.0.1]:1",
		"[0::FFFF:7F00:1]:1",
		"[::]:1",
		"[::127.0.0.1]:1",
		"[::0.0.0.2]:1",
		"[::0.1.0.1]:1",
		"[1:0:0:2:0:0:0:3]:1",
		"[1:0:0:2:0:0:3:4]:1",
		"[1:0:0:0:2:0:0:0]:1",
		"[1::]:1",
		"[2001:DB8:0:0:1:0:0:1]:1",
		"[fe80:0:0:0:0:0:0:a]:1",
		"[1:2:3:4:5:6:7:8]:1",
		"[::ffff:0:1.2.3.4]:1",
		"UNIX:/nonexistent/sk.sock",
	}
	oraclePort := testenv.FreePort(t)
	var extra strings.Builder
	for i, a := range addrs {
		fmt.Fprintf(&extra, "    upstream oracle%d { server %s; }\n", i, a)
	}
	fmt.Fprintf(&extra, "    server {\n        listen 127.0.0.1:%d;\n"+
		"        proxy_connect_timeout 300ms;\n"+
		"        add_header X-Addr $upstream_addr always;\n", oraclePort)
	for i := range addrs {
		fmt.Fprintf(&extra, "        location = /%d { proxy_pass http://oracle%d; }\n", i, i)
	}
	extra.WriteString("    }\n")
	ngx := testenv.StartNginx(t, testenv.NginxOptions{HTTP: extra.String(), Init: allowUnix})

	var body strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&body, "server %s;\n", a)
	}
	mustPost(t, ngx, "oracle", body.String())
	lines := strings.Split(strings.TrimSuffix(get(t, ngx, "/upstream/oracle").body, "\n"), "\n")
	if len(lines) != len(addrs) {
		t.Fatalf("GET /upstream/oracle: %d lines, want %d", len(lines), len(addrs))
	}

	var wg sync.WaitGroup
	want := make([]string, len(addrs))
	for i := range addrs {
		wg.Go(func() {
			resp, err := http.Get(fmt.Sprintf("http://%s/%d", testenv.Addr(oraclePort), i))
			if err != nil {
				return
			}
			resp.Body.Close()
			want[i] = resp.Header.Get("X-Addr")
		})
	}
	wg.Wait()
	for i, a := range addrs {
		if got := strings.TrimPrefix(lines[i], "server "); got != want[i] {
			t.Errorf("server %s: Lua shows %q, nginx shows %q", a, got, want[i])
		}
	}
}

// ---------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------

// TestWeightedSplit: smooth weighted round robin, exactly, within one
// worker: weights 1:2 over 60 requests on one connection give 20:40, in
// nginx's interleaved order (b a b, b a b, ...).
func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	mustPost(t, ngx, "wrr", fmt.Sprintf("server %s weight=1; server %s weight=2;", a.addr, b.addr))

	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	got, workers := map[string]int{}, map[string]bool{}
	var order strings.Builder
	for range 60 {
		r := through(t, c, ngx, "wrr", false)
		got[r.body]++
		workers[r.worker] = true
		if order.Len() < 6 {
			order.WriteString(r.body)
		}
	}
	if len(workers) != 1 {
		t.Fatalf("one keep-alive connection was served by workers %v", workers)
	}
	if got["a"] != 20 || got["b"] != 40 {
		t.Errorf("split %v, want a:20 b:40", got)
	}
	if order.String() != "babbab" {
		t.Errorf("first picks %q, want nginx's smooth order \"babbab\"", order.String())
	}
}

// TestDownServerGetsNothing: `down` servers are listed but never used.
func TestDownServerGetsNothing(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	mustPost(t, ngx, "down", fmt.Sprintf("server %s; server %s down;", a.addr, b.addr))
	got, _ := spread(t, ngx, "down", 30)
	if got["a"] != 30 {
		t.Errorf("split %v, want all to a", got)
	}
}

// TestBackupOnlyWhenPrimariesFail: a backup gets nothing while a primary
// lives, and everything, with no client error, when every primary is dead.
func TestBackupOnlyWhenPrimariesFail(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, c := startBackend(t, "a"), startBackend(t, "c")

	mustPost(t, ngx, "bk", fmt.Sprintf("server %s; server %s backup;", a.addr, c.addr))
	got, _ := spread(t, ngx, "bk", 30)
	if got["a"] != 30 {
		t.Errorf("with a live primary: %v, want all to a", got)
	}

	mustPost(t, ngx, "bk", fmt.Sprintf("server %s; server %s; server %s backup;",
		deadAddr(t), deadAddr(t), c.addr))
	got, _ = spread(t, ngx, "bk", 30)
	if got["c"] != 30 {
		t.Errorf("with dead primaries: %v, want all to the backup c", got)
	}
}

// TestDeadPrimaryIsRetried: a dead server costs clients nothing (the
// request moves to the next server) and is then left alone for
// fail_timeout.
func TestDeadPrimaryIsRetried(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	dead := deadAddr(t)
	mustPost(t, ngx, "retry", fmt.Sprintf("server %s; server %s max_fails=1 fail_timeout=30s; server %s;",
		a.addr, dead, b.addr))

	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	got := map[string]int{}
	triedDead := 0
	for range 60 {
		r := through(t, c, ngx, "retry", true)
		if r.status != 200 {
			t.Fatalf("client saw %d (tried %s)", r.status, r.tried)
		}
		got[r.body]++
		if strings.Contains(r.tried, dead) {
			triedDead++
		}
	}
	if got["a"]+got["b"] != 60 || got["a"] == 0 || got["b"] == 0 {
		t.Errorf("split %v, want all 60 on a and b", got)
	}
	// Each worker finds the dead server once, then skips it.
	if triedDead < 1 || triedDead > 2 {
		t.Errorf("dead server tried in %d requests, want once per worker (1..2)", triedDead)
	}
}

// TestFailedServerComesBack: a server marked failed gets traffic again once
// fail_timeout has passed and it answers.
func TestFailedServerComesBack(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	late := deadAddr(t)
	mustPost(t, ngx, "heal", fmt.Sprintf("server %s; server %s max_fails=1 fail_timeout=1s;", a.addr, late))
	if got, _ := spread(t, ngx, "heal", 10); got["a"] != 10 {
		t.Fatalf("while %s is down: %v, want all 10 to a", late, got)
	}

	l, err := net.Listen("tcp", late)
	if err != nil {
		t.Fatalf("listen %s: %v", late, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "late")
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)

	time.Sleep(1100 * time.Millisecond)
	got, _ := spread(t, ngx, "heal", 20)
	if got["late"] == 0 || got["a"]+got["late"] != 20 {
		t.Errorf("after fail_timeout: %v, want the recovered server back in rotation", got)
	}
}

// TestMaxFailsZeroNeverDisables: with max_fails=0 a dead server stays in
// rotation (every pick of it is retried elsewhere, clients see no error).
func TestMaxFailsZeroNeverDisables(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	dead := deadAddr(t)
	mustPost(t, ngx, "mf0", fmt.Sprintf("server %s; server %s max_fails=0;", a.addr, dead))
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	triedDead := 0
	for range 30 {
		r := through(t, c, ngx, "mf0", false)
		if r.status != 200 || r.body != "a" {
			t.Fatalf("got %d %q (tried %s)", r.status, r.body, r.tried)
		}
		if strings.Contains(r.tried, dead) {
			triedDead++
		}
	}
	if triedDead < 10 {
		t.Errorf("dead server with max_fails=0 tried in %d of 30 requests, want it kept in rotation", triedDead)
	}
}

// TestUnixSocketServer: a unix: server is routed to.
func TestUnixSocketServer(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: allowUnix})
	path := startUnixBackend(t, "u")
	mustPost(t, ngx, "sock", "server unix:"+path+";")
	got, _ := spread(t, ngx, "sock", 5)
	if got["u"] != 5 {
		t.Errorf("got %v, want all to the unix socket server", got)
	}
}

// TestUnknownUpstreamIs502: a name that is not (or no longer) defined
// answers 502, like dyups.
func TestUnknownUpstreamIs502(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	got, _ := spread(t, ngx, "nope", 3)
	if got["status 502"] != 3 {
		t.Errorf("unknown upstream: %v, want 502s", got)
	}
	mustPost(t, ngx, "gone", "server "+a.addr+";")
	got, _ = spread(t, ngx, "gone", 3)
	if got["a"] != 3 {
		t.Errorf("defined upstream: %v", got)
	}
	expect(t, "DELETE", rawDo(t, ngx.APIAddr(), "DELETE", "/upstream/gone", nil), 200, "success")
	got, _ = spread(t, ngx, "gone", 3)
	if got["status 502"] != 3 {
		t.Errorf("deleted upstream: %v, want 502s", got)
	}
	if !strings.Contains(ngx.ErrorLog(), `upstream "nope" is not defined`) {
		t.Errorf("error.log does not name the unknown upstream")
	}
}

// TestUpstreamKeepalive: connections to servers are reused through the
// `keepalive` of the placeholder upstream (lua-resty-core 0.1.25 has no
// balancer.enable_keepalive; nginx's keepalive module pools by address).
func TestUpstreamKeepalive(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	mustPost(t, ngx, "ka", "server "+a.addr+"; keepalive 8;")
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	for range 20 {
		if r := through(t, c, ngx, "ka", false); r.body != "a" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("20 requests on one worker opened %d connections to the server, want 1", n)
	}
}

// ---------------------------------------------------------------------
// Consistency and lifecycle
// ---------------------------------------------------------------------

// TestEveryWorkerSeesChangeAtOnce: after a POST the very next requests, on
// new connections spread over both workers, all go to the new servers
// (dyups lets the other workers lag up to dyups_read_msg_timeout).
func TestEveryWorkerSeesChangeAtOnce(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	seen := map[string]bool{}
	for round := range 6 {
		want := []*backend{a, b}[round%2]
		mustPost(t, ngx, "flip", "server "+want.addr+";")
		got, workers := spread(t, ngx, "flip", 20)
		if got[want.id] != 20 {
			t.Fatalf("round %d: right after the POST got %v, want all 20 to %s", round, got, want.id)
		}
		for w := range workers {
			seen[w] = true
		}
	}
	if len(seen) != 2 {
		t.Errorf("requests reached workers %v, want both", seen)
	}
}

// TestStateSurvivesReload: `nginx -s reload` keeps every upstream (dyups
// loses them all); the new workers route with it at once.
func TestStateSurvivesReload(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	mustPost(t, ngx, "web", "server "+a.addr+" weight=3 max_fails=2 fail_timeout=5s;")
	mustPost(t, ngx, "Other", "server 10.0.0.1:81 backup; server 10.0.0.2:82;")
	before := get(t, ngx, "/detail")
	oldWorkers := ngx.WorkerPIDs()

	ngx.Reload(t)

	expect(t, "GET /detail after reload", get(t, ngx, "/detail"), 200, before.body)
	got, workers := spread(t, ngx, "web", 10)
	if got["a"] != 10 {
		t.Errorf("after reload: %v, want all to a", got)
	}
	for w := range workers {
		pid, _ := strconv.Atoi(w)
		if slices.Contains(oldWorkers, pid) {
			t.Errorf("served by old worker %d", pid)
		}
	}
}

// TestKilledWorkerLosesNothing: a worker killed with SIGKILL is replaced by
// one that reads the shared dict, so it routes with the latest state
// (under dyups the replacement lacks the changes its predecessor consumed).
func TestKilledWorkerLosesNothing(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	mustPost(t, ngx, "crash", "server "+a.addr+";")
	spread(t, ngx, "crash", 10)
	mustPost(t, ngx, "crash", "server "+b.addr+";")

	victim := ngx.WorkerPIDs()[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", victim, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := ngx.WorkerPIDs()
		if len(pids) == 2 && !slices.Contains(pids, victim) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d not replaced: workers %v", victim, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, _ := spread(t, ngx, "crash", 20); got["b"] != 20 {
		t.Errorf("after kill -9 of a worker: %v, want all 20 to b", got)
	}
}

// The file SwallowKeeper persists and a dyups nginx includes.
const persisted = `# Managed by swallowkeeper. Do not edit: changes are overwritten.
upstream web {
    server %s weight=1 max_fails=3 fail_timeout=10s;
    server [::1]:8080 weight=2 max_fails=3 fail_timeout=10s backup;
    keepalive 16;
}
upstream Api {
    server 10.0.0.1:9000 weight=5 max_fails=3 fail_timeout=10s;
}
`

// TestRestartLoadsPersistedFile: after a full stop and start the shared
// dict is empty and the upstreams come back from the persisted file --
// exactly what the file says, nothing posted since.
func TestRestartLoadsPersistedFile(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, fmt.Appendf(nil, persisted, a.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})

	want := "web\n" +
		"server " + a.addr + " weight=1 max_conns=0 max_fails=3 fail_timeout=10 backup=0 down=0\n" +
		"server [::1]:8080 weight=2 max_conns=0 max_fails=3 fail_timeout=10 backup=1 down=0\n" +
		"\n" +
		"Api\n" +
		"server 10.0.0.1:9000 weight=5 max_conns=0 max_fails=3 fail_timeout=10 backup=0 down=0\n" +
		"\n"
	expect(t, "GET /detail at start", get(t, ngx, "/detail"), 200, want)
	if got, _ := spread(t, ngx, "web", 5); got["a"] != 5 {
		t.Errorf("routing from the file: %v", got)
	}

	mustPost(t, ngx, "extra", "server 10.0.0.9:80;")
	ngx.Reload(t)
	expect(t, "GET /list after reload", get(t, ngx, "/list"), 200, "web\nApi\nextra\n")

	pids := append(ngx.WorkerPIDs(), ngx.MasterPID())
	ngx.Stop(t)
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Fatalf("nginx process %d still there after Stop", pid)
		}
	}
	ngx.Start(t)
	expect(t, "GET /detail after restart", get(t, ngx, "/detail"), 200, want)
	if got, _ := spread(t, ngx, "web", 5); got["a"] != 5 {
		t.Errorf("routing after restart: %v", got)
	}
}

// TestStartLoadsPersistedDirectory: with the directory store (file:
// DIR/*.conf) the module loads every upstream file the glob matches, as
// the daemon's store wrote them, and skips the temp files a crash left; a
// corrupt file loads nothing; a directory not there yet is an empty start.
func TestStartLoadsPersistedDirectory(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	dir := filepath.Join(t.TempDir(), "upstreams.d")
	files := map[string]string{
		"web.conf":              "# Managed by swallowkeeper. Do not edit: changes are overwritten.\n\nupstream web {\n    server " + a.addr + " weight=1 max_fails=3 fail_timeout=10s;\n    keepalive 16;\n}\n",
		"api.conf":              "# Managed by swallowkeeper. Do not edit: changes are overwritten.\n\nupstream Api {\n    server 10.0.0.1:9000 weight=5 max_fails=3 fail_timeout=10s;\n}\n",
		".web.conf.tmp-crashed": "upstream web {\n    server 10.9.9.9:1",
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: filepath.Join(dir, "*.conf")})
	want := "Api\n" +
		"server 10.0.0.1:9000 weight=5 max_conns=0 max_fails=3 fail_timeout=10 backup=0 down=0\n" +
		"\n" +
		"web\n" +
		"server " + a.addr + " weight=1 max_conns=0 max_fails=3 fail_timeout=10 backup=0 down=0\n" +
		"\n"
	expect(t, "GET /detail at start", get(t, ngx, "/detail"), 200, want)
	if got, _ := spread(t, ngx, "web", 5); got["a"] != 5 {
		t.Errorf("routing from the directory: %v", got)
	}
	if log := ngx.ErrorLog(); !strings.Contains(log, "loaded 2 upstream(s) from "+filepath.Join(dir, "*.conf")) {
		t.Errorf("error.log does not say what was loaded:\n%s", log)
	}

	// One corrupt file among them: nothing is loaded.
	if err := os.WriteFile(filepath.Join(dir, "bad.conf"), []byte("upstream bad {\n    server 10.0.0.2:99999;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx.Stop(t)
	ngx.Start(t)
	expect(t, "GET /list with a corrupt file", get(t, ngx, "/list"), 204, "")
	if log := ngx.ErrorLog(); !strings.Contains(log, `upstream "bad": invalid port`) {
		t.Errorf("error.log does not explain the corrupt file:\n%s", log)
	}

	// A directory not created yet: an empty start, no error.
	empty := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: filepath.Join(t.TempDir(), "absent", "*.conf")})
	expect(t, "GET /list of a missing directory", get(t, empty, "/list"), 204, "")
	if log := empty.ErrorLog(); !strings.Contains(log, "does not exist yet, starting with no upstreams") {
		t.Errorf("error.log of a missing directory:\n%s", log)
	}
}

// TestCorruptPersistedFileLoadsNothing: one bad block and no upstream is
// loaded (half a state would route the missing services nowhere).
func TestCorruptPersistedFileLoadsNothing(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	text := "upstream good {\n    server 10.0.0.1:80;\n}\nupstream bad {\n    server 10.0.0.2:99999;\n}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	expect(t, "GET /list", get(t, ngx, "/list"), 204, "")
	log := ngx.ErrorLog()
	if !strings.Contains(log, "is corrupt") || !strings.Contains(log, `upstream "bad": invalid port`) {
		t.Errorf("error.log does not explain the corrupt file:\n%s", log)
	}
}

// ---------------------------------------------------------------------
// The sample configurations
// ---------------------------------------------------------------------

// sample reads a file of nginx/conf and applies replacements, failing if a
// string to replace is not there (so the sample and this test stay in step).
func sample(t *testing.T, name string, repl ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("conf", name))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(text, repl[i]) {
			t.Fatalf("conf/%s no longer contains %q", name, repl[i])
		}
		text = strings.ReplaceAll(text, repl[i], repl[i+1])
	}
	return text
}

// tempPaths keeps nginx's temp directories inside the test prefix.
func tempPaths(prefix string) string {
	var b strings.Builder
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s/%s;\n", d, prefix, d)
	}
	return b.String()
}

// TestSampleLuaConf runs nginx/conf/lua.conf itself (only its marked paths
// and ports changed; the API on its unix socket, as shipped) and uses it as
// the README says: POST an upstream, send traffic by Host through the map
// allow-list. An API call sent to the traffic port reaches the service,
// not the API.
func TestSampleLuaConf(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, fmt.Appendf(nil, "upstream api {\n    server %s;\n}\n", a.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{APISocket: true, Config: func(p testenv.NginxParams) string {
		user := ""
		if p.Root {
			user = "user root;"
		}
		return sample(t, "lua.conf",
			"user www-data;", user,
			"worker_processes auto;", "worker_processes 2;",
			"/run/nginx.pid", p.Prefix+"/nginx.pid",
			"/var/log/nginx/", p.Prefix+"/",
			"include /etc/nginx/modules-enabled/*.conf;", p.LoadModules,
			"/usr/share/swallowkeeper/lua", p.LuaPath,
			"/var/lib/swallowkeeper/upstreams.conf", file,
			"listen unix:/run/swallowkeeper/dyups.sock;", "listen unix:"+p.APISocket+";",
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d reuseport;", p.ProxyPort),
			"http {\n", "http {\n"+tempPaths(p.Prefix),
		)
	}})

	expect(t, "GET /list (from the persisted file)", apiDo(t, ngx, "GET", "/list", nil, nil), 200, "api\n")
	body := "server " + a.addr + ";"
	expect(t, "POST /upstream/web", apiDo(t, ngx, "POST", "/upstream/web", nil, &body), 200, "success")
	for _, host := range []string{"web.example.com", "api.example.com"} {
		if got, _ := spread(t, ngx, host, 4); got["a"] != 4 {
			t.Errorf("Host %s: %v, want all to a", host, got)
		}
	}
	if got, _ := spread(t, ngx, "other.example.com", 2); got["status 502"] != 2 {
		t.Errorf("Host outside the allow-list: %v, want 502s", got)
	}

	detail := apiDo(t, ngx, "GET", "/detail", nil, nil)
	for _, host := range []string{"web.example.com", "localhost", "127.0.0.1"} {
		req, err := http.NewRequest("POST", ngx.ProxyURL()+"/upstream/web", strings.NewReader("server 10.6.6.6:80;"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /upstream/web to the traffic port: %v", err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) == "success" {
			t.Errorf("POST /upstream/web to the traffic port with Host %s reached the API", host)
		}
	}
	expect(t, "GET /detail after API calls to the traffic port", apiDo(t, ngx, "GET", "/detail", nil, nil), 200, detail.body)
}

// TestSampleDyupsConfParses checks nginx/conf/tengine-dyups.conf with
// `nginx -t`, minus the dyups directives this nginx does not have: the rest
// of the sample must at least be valid nginx.
func TestSampleDyupsConfParses(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	dir := t.TempDir()
	text := sample(t, "tengine-dyups.conf",
		"/run/nginx.pid", dir+"/nginx.pid",
		"/var/log/nginx/", dir+"/",
		"include mime.types;", "include /etc/nginx/mime.types;",
		"/var/lib/swallowkeeper/upstreams*.conf", dir+"/upstreams*.conf",
		"unix:/run/swallowkeeper/dyups.sock", "unix:"+dir+"/dyups.sock",
		"http {\n", "http {\n"+tempPaths(dir),
	)
	var kept []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.Contains(strings.SplitN(line, "#", 2)[0], "dyups_") {
			kept = append(kept, line)
		}
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "upstreams.conf"),
		[]byte("upstream web {\n    server 10.0.0.1:80;\n    keepalive 16;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}
}

// TestSampleOpenRestyConf runs nginx/conf/openresty.conf on Debian's nginx
// with the Lua module (the load_module lines OpenResty does not need added)
// and uses it like lua.conf: persisted file at start, POST, Host routing.
// It also switches the API to TCP with the commented secret_file, as the
// sample describes.
func TestSampleOpenRestyConf(t *testing.T) {
	t.Parallel()
	a := startBackend(t, "a")
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, fmt.Appendf(nil, "upstream api {\n    server %s;\n}\n", a.addr), 0o644); err != nil {
		t.Fatal(err)
	}
	const secret = "openresty-sample-secret"
	secretPath := secretFile(t, secret)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Config: func(p testenv.NginxParams) string {
		user := ""
		if p.Root {
			user = "user root;"
		}
		return p.LoadModules + "\n" + sample(t, "openresty.conf",
			"#user nobody nogroup;", user,
			"worker_processes auto;", "worker_processes 2;",
			"pid logs/nginx.pid;", "pid "+p.Prefix+"/nginx.pid;",
			"logs/", p.Prefix+"/",
			"include mime.types;", "include /etc/nginx/mime.types;",
			"/usr/share/swallowkeeper/lua", p.LuaPath,
			"/var/lib/swallowkeeper/upstreams.conf", file,
			`-- secret_file = "/etc/swallowkeeper/api.secret",`, fmt.Sprintf("secret_file = %q,", secretPath),
			"listen unix:/run/swallowkeeper/dyups.sock;", fmt.Sprintf("listen 127.0.0.1:%d;", p.APIPort),
			"allow unix:;", "allow 127.0.0.1;",
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d reuseport;", p.ProxyPort),
			"http {\n", "http {\n"+tempPaths(p.Prefix),
		)
	}})
	expect(t, "GET /list without the secret", get(t, ngx, "/list"), 403, "forbidden\n")
	withSecret := []string{"X-SwallowKeeper-Secret: " + secret}
	expect(t, "GET /list (from the persisted file)", apiDo(t, ngx, "GET", "/list", withSecret, nil), 200, "api\n")
	body := "server " + a.addr + ";"
	expect(t, "POST /upstream/web", apiDo(t, ngx, "POST", "/upstream/web", withSecret, &body), 200, "success")
	for _, host := range []string{"web.example.com", "api.example.com"} {
		if got, _ := spread(t, ngx, host, 4); got["a"] != 4 {
			t.Errorf("Host %s: %v, want all to a", host, got)
		}
	}
}

// TestSampleReloadModeConfParses checks nginx/conf/reload-mode.conf with
// `nginx -t`, with a persisted file and without one (first start).
func TestSampleReloadModeConfParses(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	dir := t.TempDir()
	text := sample(t, "reload-mode.conf",
		"user www-data;", "",
		"/run/nginx.pid", dir+"/nginx.pid",
		"/var/log/nginx/", dir+"/",
		"/var/lib/swallowkeeper/upstreams*.conf", dir+"/upstreams*.conf",
		"listen 80;", "listen 127.0.0.1:18080;",
		"http {\n", "http {\n"+tempPaths(dir),
	)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		if out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
			t.Errorf("nginx -t %s: %v\n%s", what, err, out)
		}
	}
	check("before the first persisted file")
	if err := os.WriteFile(filepath.Join(dir, "upstreams.conf"),
		[]byte("upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=1 fail_timeout=10s;\n    keepalive 16;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("with a persisted file")
}

// ---------------------------------------------------------------------
// Trust at the edges: a full dict, hostile names, unix: servers, who may
// call the API
// ---------------------------------------------------------------------

// serversBody is an upstream body of n servers 10.9.x.y:80 (about 150
// bytes of record each), after an optional first server.
func serversBody(first string, n int) string {
	var b strings.Builder
	if first != "" {
		b.WriteString("server " + first + ";\n")
	}
	for i := range n {
		fmt.Fprintf(&b, "server 10.9.%d.%d:80 max_fails=3 fail_timeout=10s;\n", i/256, i%256)
	}
	return b.String()
}

// TestFullSharedDictKeepsLiveUpstream: when the lua_shared_dict has no
// room for an upstream's new record, the POST fails (500, dyups' body,
// plus X-SwallowKeeper-Error: shared dict full) and changes nothing: the
// old record stays, for the API, for traffic and for workers that build
// their copy afresh after a reload. Once there is room, the same POST
// passes.
func TestFullSharedDictKeepsLiveUpstream(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{DictSize: "64k"})
	a := startBackend(t, "a")
	mustPost(t, ngx, "web", "server "+a.addr+";")

	// Fill the dict with upstreams of whole-page records (~3 KB each)
	// until one is refused.
	big := serversBody("", 20)
	fillers := 0
	for ; ; fillers++ {
		if fillers > 100 {
			t.Fatalf("a 64k dict took %d upstreams of %d bytes", fillers, len(big))
		}
		r := post(t, ngx, fmt.Sprintf("filler%d", fillers), big)
		if r.status == 500 {
			expect(t, "POST of a filler into a full dict", r, 500, "add server failed")
			break
		}
		expect(t, "POST of a filler", r, 200, "success")
	}
	if fillers == 0 {
		t.Fatalf("not even one filler fitted: the test measures nothing")
	}
	// Then with small ones of 1 to 6 servers (records in every slab size
	// class below a page) until each size is refused, so that the slab
	// page holding web's small record holds others too: freeing web alone
	// frees no page.
	small := 0
	for n := 1; n <= 6; n++ {
		for i := 0; ; i++ {
			if i > 500 {
				t.Fatalf("a full 64k dict took %d more upstreams of %d servers", i, n)
			}
			r := post(t, ngx, fmt.Sprintf("s%dx%d", n, i), serversBody("", n))
			if r.status == 500 {
				break
			}
			expect(t, "POST of a small filler", r, 200, "success")
			small++
		}
	}
	t.Logf("the dict took %d fillers of %d bytes and %d small ones before it was full", fillers, len(big), small)

	// Enlarge web: its new record needs a page the dict does not have.
	before := get(t, ngx, "/detail")
	r := post(t, ngx, "web", serversBody(a.addr, 19))
	expect(t, "POST of a larger web into a full dict", r, 500, "add server failed")
	if got := r.header.Get("X-SwallowKeeper-Error"); got != "shared dict full" {
		t.Errorf("X-SwallowKeeper-Error = %q, want %q", got, "shared dict full")
	}
	if !strings.Contains(ngx.ErrorLog(), `upstream "web": shared dict full`) {
		t.Errorf("error.log does not say the dict is full:\n%s", ngx.ErrorLog())
	}

	// Nothing changed: the API, traffic, and after a reload (new workers
	// build web from the dict record) traffic again.
	expect(t, "GET /upstream/web after the refused POST", get(t, ngx, "/upstream/web"), 200, "server "+a.addr+"\n")
	expect(t, "GET /detail after the refused POST", get(t, ngx, "/detail"), 200, before.body)
	if got, _ := spread(t, ngx, "web", 10); got["a"] != 10 {
		t.Errorf("traffic after the refused POST: %v, want all 10 to a", got)
	}
	ngx.Reload(t)
	expect(t, "GET /upstream/web after reload", get(t, ngx, "/upstream/web"), 200, "server "+a.addr+"\n")
	if got, _ := spread(t, ngx, "web", 10); got["a"] != 10 {
		t.Errorf("traffic after the refused POST and a reload: %v, want all 10 to a", got)
	}

	// Room again: the same POST passes and replaces web.
	expect(t, "DELETE a filler", apiDo(t, ngx, "DELETE", "/upstream/filler0", nil, nil), 200, "success")
	mustPost(t, ngx, "web", serversBody(a.addr, 19))
	if r := get(t, ngx, "/upstream/web"); r.status != 200 || strings.Count(r.body, "\n") != 20 {
		t.Errorf("GET /upstream/web after the POST with room: %d, %d servers", r.status, strings.Count(r.body, "\n"))
	}
	// The old record was freed: the API lists each upstream once.
	if r := get(t, ngx, "/list"); strings.Count(r.body, "web\n") != 1 {
		t.Errorf("/list holds web %d times:\n%s", strings.Count(r.body, "web\n"), r.body)
	}
}

// TestUpstreamNamesOutsideTheAlphabetAreRefused: the API takes only the
// daemon's names, [A-Za-z0-9][A-Za-z0-9_.-]* of at most 200 bytes. A name
// with a newline would otherwise add lines to /list and /detail (a
// "server" line of the attacker's choosing), which every drift check then
// fails to parse.
func TestUpstreamNamesOutsideTheAlphabetAreRefused(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	mustPost(t, ngx, "web", "server 10.0.0.1:80;")
	list, detail := get(t, ngx, "/list"), get(t, ngx, "/detail")

	// (nginx itself answers 400 to %00 and folds "/upstream/.." to "/".)
	long := strings.Repeat("a", 201)
	for _, target := range []string{
		"/upstream/a%0Aserver%201.2.3.4:80%20x",
		"/upstream/a%0D",
		"/upstream/a%20b",
		"/upstream/a;b",
		"/upstream/a%7Bb",
		"/upstream/a%23b",
		"/upstream/a%22b",
		"/upstream/a%5Cb",
		"/upstream/a%7Fb",
		"/upstream/-a",
		"/upstream/_a",
		"/upstream/.a",
		"/upstream/a:b",
		"/upstream/%C3%A9t%C3%A9",
		"/upstream/" + long,
	} {
		body := "server 10.6.6.6:80;"
		expect(t, "POST "+target, rawDo(t, ngx.APIAddr(), "POST", target, &body), 500, "add server failed")
		expect(t, "DELETE "+target, rawDo(t, ngx.APIAddr(), "DELETE", target, nil), 404, "not found uptream")
	}
	expect(t, "GET /list after the refused names", get(t, ngx, "/list"), 200, list.body)
	expect(t, "GET /detail after the refused names", get(t, ngx, "/detail"), 200, detail.body)
	log := ngx.ErrorLog()
	for _, want := range []string{
		`upstream "a\x0Aserver 1.2.3.4:80 x": name is not [A-Za-z0-9][A-Za-z0-9_.-]* of at most 200 bytes; update refused`,
		`upstream "-a": name is not`,
		`; delete refused`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("error.log lacks %q", want)
		}
	}
	if strings.Contains(log, "a\nserver 1.2.3.4") {
		t.Errorf("error.log holds the raw newline of the name (log injection)")
	}

	// The whole alphabet, and 200 bytes, pass.
	for _, name := range []string{"a", "Z", "0", "A-b_c.d", "web.v2-canary_1", strings.Repeat("x", 200)} {
		mustPost(t, ngx, name, "server 10.0.0.2:80;")
		expect(t, "DELETE /upstream/"+name, rawDo(t, ngx.APIAddr(), "DELETE", "/upstream/"+name, nil), 200, "success")
	}
}

// TestPersistedFileWithAForeignNameLoadsNothing: the persisted file obeys
// the same alphabet (the daemon never writes another); a file that breaks
// it is corrupt, and a corrupt file loads nothing.
func TestPersistedFileWithAForeignNameLoadsNothing(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	text := "upstream good {\n    server 10.0.0.1:80;\n}\nupstream \"b d\" {\n    server 10.0.0.2:80;\n}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	expect(t, "GET /list", get(t, ngx, "/list"), 204, "")
	if log := ngx.ErrorLog(); !strings.Contains(log, `upstream "b d": name is not [A-Za-z0-9][A-Za-z0-9_.-]*`) {
		t.Errorf("error.log does not explain the refused name:\n%s", log)
	}
}

// TestCaseOnlyRenameReplaces: Rn replaces rn (dyups compares names
// case-insensitively), keeps the case of the last POST, and traffic moves
// with it; the API then holds one upstream, not two.
func TestCaseOnlyRenameReplaces(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	mustPost(t, ngx, "rn", "server "+a.addr+";")
	if got, _ := spread(t, ngx, "rn", 4); got["a"] != 4 {
		t.Fatalf("traffic for rn: %v", got)
	}
	mustPost(t, ngx, "Rn", "server "+b.addr+";")
	expect(t, "GET /list", get(t, ngx, "/list"), 200, "Rn\n")
	expect(t, "GET /detail", get(t, ngx, "/detail"), 200,
		"Rn\nserver "+b.addr+" weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n\n")
	// nginx lowercases $host: requests name "rn" whatever the client wrote.
	if got, _ := spread(t, ngx, "RN", 10); got["b"] != 10 {
		t.Errorf("traffic after the case-only rename: %v, want all 10 to b", got)
	}
	expect(t, "DELETE /upstream/rN", rawDo(t, ngx.APIAddr(), "DELETE", "/upstream/rN", nil), 200, "success")
	expect(t, "GET /list after the delete", get(t, ngx, "/list"), 204, "")
}

// TestUnixServersRefusedUnlessAllowed: by default a POST naming a unix:
// server is refused (a unix socket on the nginx host -- the API's own, an
// admin socket -- must not become a backend for public traffic); the old
// upstream stays. init option allow_unix_servers = true accepts them (see
// TestUnixSocketServer for routing).
func TestUnixServersRefusedUnlessAllowed(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a := startBackend(t, "a")
	mustPost(t, ngx, "web", "server "+a.addr+";")
	sock := startUnixBackend(t, "u")
	for _, body := range []string{
		"server unix:" + sock + ";",
		"server " + a.addr + "; server unix:" + sock + " backup;",
		"server UNIX:" + sock + ";",
	} {
		expect(t, "POST "+body, post(t, ngx, "web", body), 500, "add server failed")
	}
	expect(t, "GET /upstream/web", get(t, ngx, "/upstream/web"), 200, "server "+a.addr+"\n")
	if got, _ := spread(t, ngx, "web", 6); got["a"] != 6 {
		t.Errorf("traffic after the refused unix: POSTs: %v, want all 6 to a", got)
	}
	if log := ngx.ErrorLog(); !strings.Contains(log, `upstream "web": unix: server "unix:`+sock+`" refused (init option allow_unix_servers is off)`) {
		t.Errorf("error.log does not explain the refusal:\n%s", log)
	}

	allowed := testenv.StartNginx(t, testenv.NginxOptions{Init: allowUnix})
	mustPost(t, allowed, "sock", "server unix:"+sock+";")
	if got, _ := spread(t, allowed, "sock", 4); got["u"] != 4 {
		t.Errorf("with allow_unix_servers: %v, want all 4 to the unix socket server", got)
	}
}

// TestAPIOnUnixSocket: the API served only on a unix socket works like the
// TCP one, and the traffic port cannot reach it: a request shaped as an
// API call (Host of a service, POST /upstream/web) is proxied to the
// service like any other request and changes nothing.
func TestAPIOnUnixSocket(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{APISocket: true})
	a := startBackend(t, "a")
	if ngx.APIAddr() != "" || !strings.HasPrefix(ngx.APIURL(), "unix:/") {
		t.Fatalf("API at %q / %q, want a unix socket only", ngx.APIAddr(), ngx.APIURL())
	}
	expect(t, "GET /list", apiDo(t, ngx, "GET", "/list", nil, nil), 204, "")
	body := "server " + a.addr + ";"
	expect(t, "POST /upstream/web", apiDo(t, ngx, "POST", "/upstream/web", nil, &body), 200, "success")
	detail := apiDo(t, ngx, "GET", "/detail", nil, nil)

	evil := "server 10.6.6.6:80;"
	req, err := http.NewRequest("POST", ngx.ProxyURL()+"/upstream/web", strings.NewReader(evil))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "web"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST via the traffic port: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "a" {
		t.Errorf("POST /upstream/web via the traffic port: %d %q, want the service's own answer (200 \"a\")", resp.StatusCode, got)
	}
	expect(t, "GET /detail after the POST via the traffic port", apiDo(t, ngx, "GET", "/detail", nil, nil), 200, detail.body)
}

// secretFile writes a secret file (with a trailing newline, as editors
// leave it) and returns its path.
func secretFile(t *testing.T, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAPISecret: with init option secret_file, every API request without
// the exact X-SwallowKeeper-Secret gets 403 "forbidden\n" and changes
// nothing; with it the API answers as usual. The secret never reaches
// error.log.
func TestAPISecret(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-7f9c2a-do-not-log"
	path := secretFile(t, secret)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: fmt.Sprintf("secret_file = %q,", path)})
	good := []string{"X-SwallowKeeper-Secret: " + secret}
	body := "server 10.0.0.1:80;"
	expect(t, "POST with the secret", apiDo(t, ngx, "POST", "/upstream/web", good, &body), 200, "success")
	detail := apiDo(t, ngx, "GET", "/detail", good, nil)
	if detail.status != 200 {
		t.Fatalf("GET /detail with the secret: %d", detail.status)
	}

	evil := "server 10.6.6.6:80;"
	for _, h := range [][]string{
		nil,
		{"X-SwallowKeeper-Secret: "},
		{"X-SwallowKeeper-Secret: wrong"},
		{"X-SwallowKeeper-Secret: " + strings.ToUpper(secret)},
		{"X-SwallowKeeper-Secret: " + secret + "x"},
		{"X-SwallowKeeper-Secret: " + secret[:len(secret)-1]},
		{"X-SwallowKeeper-Secret: " + secret + "\t" + secret},
		{"X-SwallowKeeper-Secret: wrong", "X-SwallowKeeper-Secret: " + secret},
		{"X-SwallowKeeper-Secret-Other: " + secret},
	} {
		what := fmt.Sprintf("with %q", h)
		expect(t, "POST "+what, apiDo(t, ngx, "POST", "/upstream/web", h, &evil), 403, "forbidden\n")
		expect(t, "DELETE "+what, apiDo(t, ngx, "DELETE", "/upstream/web", h, nil), 403, "forbidden\n")
		expect(t, "GET /detail "+what, apiDo(t, ngx, "GET", "/detail", h, nil), 403, "forbidden\n")
		expect(t, "POST without a body "+what, apiDo(t, ngx, "POST", "/upstream/web", h, nil), 403, "forbidden\n")
	}
	expect(t, "GET /detail after the refused calls", apiDo(t, ngx, "GET", "/detail", good, nil), 200, detail.body)
	expect(t, "DELETE with the secret", apiDo(t, ngx, "DELETE", "/upstream/web", good, nil), 200, "success")

	log := ngx.ErrorLog()
	if !strings.Contains(log, "X-SwallowKeeper-Secret missing or wrong") {
		t.Errorf("error.log does not report the refused calls:\n%s", log)
	}
	if strings.Contains(log, secret) || strings.Contains(log, "s3cr3t") {
		t.Errorf("error.log holds the secret")
	}

	// A secret file that is missing or empty stops nginx from starting
	// rather than leaving the API open. (init_by_lua does not run under
	// nginx -t: start the same configuration for real.)
	conf, err := os.ReadFile(filepath.Join(ngx.Prefix(), "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ngx.Stop(t)
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	empty := secretFile(t, "")
	for what, replacement := range map[string]string{
		"missing": filepath.Join(t.TempDir(), "nope"),
		"empty":   empty,
	} {
		text := strings.Replace(string(conf), path, replacement, 1)
		c := filepath.Join(t.TempDir(), "nginx.conf")
		if err := os.WriteFile(c, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := startExpectingFailure(t, bin, "-p", ngx.Prefix(), "-c", c, "-g", "daemon off;")
		if err == nil || !strings.Contains(out, "swallowkeeper: secret_file") {
			t.Errorf("nginx with a %s secret file: %v, want it to refuse to start naming secret_file:\n%s", what, err, out)
		}
	}
}

// startExpectingFailure runs a command that should exit at once; should it
// keep running, its process group is killed after 10 s.
func startExpectingFailure(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("still running after 10s, killed")
	}
	return string(out), err
}

// dictKeys is an extra server that reports how many records (u:) and
// pointers (r:) the shared dict holds.
func dictKeys(port int) string {
	return fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location = /keys {
            content_by_lua_block {
                local u, r = 0, 0
                for _, k in ipairs(ngx.shared.swallowkeeper:get_keys(0)) do
                    local p = k:sub(1, 2)
                    if p == "u:" then u = u + 1 elseif p == "r:" then r = r + 1 end
                end
                ngx.print(u, " ", r)
            }
        }
    }
`, port)
}

// TestRacingWritesLeaveNoOrphans: POSTs of one upstream racing in both
// workers can each free the record the other replaced, leaving a record no
// pointer names (seen after 1 in 4 storms of 1,200 POSTs). The workers'
// housekeeping frees such records (those found unnamed by two sweeps in a
// row), so the dict ends with one record per upstream. GETs during the
// storms always find a whole upstream.
func TestRacingWritesLeaveNoOrphans(t *testing.T) {
	t.Parallel()
	keysPort := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: "sweep_interval = 1,", HTTP: dictKeys(keysPort)})
	keys := func() string {
		resp, err := http.Get("http://" + testenv.Addr(keysPort) + "/keys")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	mustPost(t, ngx, "web", "server 10.0.0.1:80;")

	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	storm := func() {
		var wg sync.WaitGroup
		var failed, missing atomic.Int64
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 300 {
					body := serversBody("", 1+(g+i)%3)
					resp, err := c.Post(ngx.APIURL()+"/upstream/web", "", strings.NewReader(body))
					if err != nil || resp.StatusCode != 200 {
						failed.Add(1)
					}
					if err == nil {
						resp.Body.Close()
					}
					resp, err = c.Get(ngx.APIURL() + "/upstream/web")
					if err != nil || resp.StatusCode != 200 {
						missing.Add(1)
					}
					if err == nil {
						resp.Body.Close()
					}
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 || missing.Load() > 0 {
			t.Errorf("during 1,200 racing POSTs: %d failed, %d GETs found no web", failed.Load(), missing.Load())
		}
	}

	var after string
	for round := 1; ; round++ {
		storm()
		if after = keys(); after != "1 1" {
			t.Logf("records and pointers after storm %d: %s", round, after)
			break
		}
		if round == 40 {
			t.Fatalf("40 storms of racing POSTs never left an orphaned record: the race this test covers did not happen")
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for keys() != "1 1" {
		if time.Now().After(deadline) {
			t.Fatalf("records and pointers: %s, want 1 1 (one upstream)", keys())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(ngx.ErrorLog(), "freed unreferenced record of revision") {
		t.Errorf("the orphan went away but no worker logged freeing it")
	}
}
