package nginx_test

// Balancing methods on the Lua plane (nginx/lua/swallowkeeper/methods.lua):
// each compared with stock nginx running the same method on a static
// upstream of the same servers, plus stickiness, least_conn under slow
// backends, and how many keys consistent hashing moves.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// viaProxy sends GET path with Host host to base on a fresh connection of c.
func viaProxy(t *testing.T, c *http.Client, base, host, path string) routed {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Close = true
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s (Host %s): %v", base, path, host, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return routed{status: resp.StatusCode, body: string(data),
		worker: resp.Header.Get("X-SK-Worker"), tried: resp.Header.Get("X-SK-Upstream-Addr")}
}

// clientFrom is an HTTP client whose connections come from source address
// src (any 127.0.0.0/8 address works on loopback), one connection per
// request.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout: 10 * time.Second}
}

var plainClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// TestMethodsChooseAsNginxDoes runs ip_hash, hash and hash consistent on
// the Lua plane and on static upstreams of stock nginx, with the same
// servers (weights and a down server included), and asserts the same
// server answers every client and key, and that every answer is sticky
// (asked twice, over new connections that land on either worker).
func TestMethodsChooseAsNginxDoes(t *testing.T) {
	t.Parallel()
	var servers []string
	for i, w := range []string{"weight=1", "weight=2", "weight=1", "weight=2 down", "weight=3"} {
		b := startBackend(t, fmt.Sprintf("b%d", i))
		servers = append(servers, fmt.Sprintf("server %s %s;", b.addr, w))
	}
	list := strings.Join(servers, " ")
	refPort := testenv.FreePort(t)
	methods := map[string]string{"iph": "ip_hash;", "hsh": "hash $arg_k;", "chs": "hash $arg_k consistent;"}
	var ref strings.Builder
	for name, m := range methods {
		fmt.Fprintf(&ref, "upstream ref_%s { %s %s }\n", name, m, list)
	}
	fmt.Fprintf(&ref, "server { listen 127.0.0.1:%d; location / { proxy_pass http://ref_$host; } }\n", refPort)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{HTTP: ref.String()})
	for name, m := range methods {
		mustPost(t, ngx, name, m+" "+list)
	}
	refURL := "http://" + testenv.Addr(refPort)

	same := func(what string, lua, lua2, nginx routed) bool {
		t.Helper()
		if lua.status != 200 || lua2.status != 200 || nginx.status != 200 {
			t.Errorf("%s: statuses lua %d, %d, nginx %d", what, lua.status, lua2.status, nginx.status)
			return false
		}
		if lua.body != lua2.body {
			t.Errorf("%s: not sticky: %s then %s", what, lua.body, lua2.body)
		}
		if lua.body != nginx.body {
			t.Errorf("%s: Lua chose %s, nginx %s", what, lua.body, nginx.body)
		}
		return true
	}

	// ip_hash: 40 client networks (nginx hashes the first 3 octets; the
	// last octet varies within a network and must not matter).
	spreadIP := map[string]int{}
	for i := range 40 {
		a := fmt.Sprintf("127.%d.%d.%d", 1+i%7, 10+i*3, 1+i)
		b := fmt.Sprintf("127.%d.%d.%d", 1+i%7, 10+i*3, 200-i)
		lua := viaProxy(t, clientFrom(a), ngx.ProxyURL(), "iph", "/")
		lua2 := viaProxy(t, clientFrom(b), ngx.ProxyURL(), "iph", "/")
		nginx := viaProxy(t, clientFrom(a), refURL, "iph", "/")
		if same("ip_hash client "+a+" / "+b, lua, lua2, nginx) {
			spreadIP[lua.body]++
		}
	}
	for name := range map[string]bool{"hsh": true, "chs": true} {
		spreadKeys := map[string]int{}
		for i := range 300 {
			path := fmt.Sprintf("/?k=user-%d", i)
			lua := viaProxy(t, plainClient, ngx.ProxyURL(), name, path)
			lua2 := viaProxy(t, plainClient, ngx.ProxyURL(), name, path)
			nginx := viaProxy(t, plainClient, refURL, name, path)
			if same(name+" key user-"+fmt.Sprint(i), lua, lua2, nginx) {
				spreadKeys[lua.body]++
			}
		}
		t.Logf("FIGURE %s: 300 keys over servers %v", methods[name], spreadKeys)
		if spreadKeys["b3"] != 0 || len(spreadKeys) != 4 {
			t.Errorf("%s: keys over %v, want the 4 servers that are not down", name, spreadKeys)
		}
	}
	t.Logf("FIGURE ip_hash: 40 client networks over servers %v", spreadIP)
	if spreadIP["b3"] != 0 || len(spreadIP) < 3 {
		t.Errorf("ip_hash: clients over %v, want at least 3 servers and none on the down one", spreadIP)
	}
}

// TestHashFailsOverLikeNginx: a dead server's keys go elsewhere without a
// client error, and the same way stock nginx sends them.
func TestHashFailsOverLikeNginx(t *testing.T) {
	t.Parallel()
	var servers []string
	for i := range 3 {
		b := startBackend(t, fmt.Sprintf("b%d", i))
		servers = append(servers, "server "+b.addr+" max_fails=1 fail_timeout=30s;")
	}
	servers = append(servers, "server "+deadAddr(t)+" max_fails=1 fail_timeout=30s;")
	list := strings.Join(servers, " ")
	refPort := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{HTTP: fmt.Sprintf(
		"upstream ref { hash $arg_k consistent; %s }\nserver { listen 127.0.0.1:%d; location / { proxy_pass http://ref; proxy_next_upstream error timeout; } }\n",
		list, refPort)})
	mustPost(t, ngx, "chs", "hash $arg_k consistent; "+list)
	refURL := "http://" + testenv.Addr(refPort)
	for i := range 100 {
		path := fmt.Sprintf("/?k=%d", i)
		lua := viaProxy(t, plainClient, ngx.ProxyURL(), "chs", path)
		nginx := viaProxy(t, plainClient, refURL, "chs", path)
		if lua.status != 200 || nginx.status != 200 {
			t.Fatalf("key %d: status lua %d (tried %s), nginx %d", i, lua.status, lua.tried, nginx.status)
		}
		if lua.body != nginx.body {
			t.Errorf("key %d: Lua chose %s, nginx %s", i, lua.body, nginx.body)
		}
	}
}

// owners maps each key to the server the upstream sends it to.
func owners(t *testing.T, ngx *testenv.Nginx, name string, keys int) map[int]string {
	t.Helper()
	out := make(map[int]string, keys)
	for i := range keys {
		r := viaProxy(t, plainClient, ngx.ProxyURL(), name, fmt.Sprintf("/?k=key-%d", i))
		if r.status != 200 {
			t.Fatalf("%s key %d: status %d", name, i, r.status)
		}
		out[i] = r.body
	}
	return out
}

// TestConsistentHashMovesOnlyTheRemovedServersKeys: with 5 servers, taking
// one out moves only the keys it had (about 1/5) under hash ... consistent;
// plain hash, measured alongside, moves most keys.
func TestConsistentHashMovesOnlyTheRemovedServersKeys(t *testing.T) {
	t.Parallel()
	const n, keys = 5, 1000
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	var addrs []string
	for i := range n {
		addrs = append(addrs, startBackend(t, fmt.Sprintf("b%d", i)).addr)
	}
	body := func(method string, without int) string {
		var b strings.Builder
		b.WriteString(method + " ")
		for i, a := range addrs {
			if i != without {
				b.WriteString("server " + a + "; ")
			}
		}
		return b.String()
	}
	moved := map[string]float64{}
	for _, method := range []string{"hash $arg_k consistent;", "hash $arg_k;"} {
		name := "c"
		if !strings.Contains(method, "consistent") {
			name = "p"
		}
		mustPost(t, ngx, name, body(method, -1))
		before := owners(t, ngx, name, keys)
		mustPost(t, ngx, name, body(method, 2))
		after := owners(t, ngx, name, keys)
		gone, others := 0, 0
		for k, was := range before {
			switch {
			case was == "b2":
				gone++
			case after[k] != was:
				others++
			}
		}
		moved[name] = float64(gone+others) / keys
		t.Logf("FIGURE %s %d servers, one removed: %d of %d keys moved (%.1f%%; %d had the removed server, %d moved between the others)",
			method, n, gone+others, keys, 100*moved[name], gone, others)
		if name == "c" {
			if others != 0 {
				t.Errorf("consistent hash moved %d keys between servers that stayed, want 0", others)
			}
			if f := float64(gone) / keys; f < 0.5/n || f > 1.5/n {
				t.Errorf("removed server had %.1f%% of the keys, want 1/%d ±50%% (%.0f–%.0f%%)", 100*f, n, 50.0/n, 150.0/n)
			}
		}
	}
	if moved["p"] <= 2*moved["c"] {
		t.Errorf("plain hash moved %.1f%%, consistent %.1f%%: the measurement cannot tell them apart", 100*moved["p"], 100*moved["c"])
	}
}

// heldBackend answers only when released; it reports each request's
// arrival on arrived.
func heldBackend(t *testing.T, id string, release <-chan struct{}, arrived chan<- string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- id
		if release != nil {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, id)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestLeastConnAvoidsTheSlowServer: "slow" holds every request until the
// end, "fast" answers at once. Under least_conn a worker sends to slow only
// while it has no more requests in flight there than on fast (at most 2 per
// worker: a tie at 0, and one at 1 while fast's last request is still in
// its log phase); round robin, run the same way, sends it about half.
func TestLeastConnAvoidsTheSlowServer(t *testing.T) {
	t.Parallel()
	const n = 40
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Workers: 2})
	got := map[string]map[string]int{}
	for _, method := range []string{"least_conn;", ""} {
		release := make(chan struct{})
		arrived := make(chan string, n)
		slow := heldBackend(t, "slow", release, arrived)
		fast := heldBackend(t, "fast", nil, arrived)
		name := "lc"
		if method == "" {
			name = "rr"
		}
		mustPost(t, ngx, name, fmt.Sprintf("%s server %s; server %s;", method, slow, fast))
		var wg sync.WaitGroup
		statuses := make(chan int, n)
		count := map[string]int{}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(context.Background(), "GET", ngx.ProxyURL()+"/", nil)
				req.Host, req.Close = name, true
				resp, err := plainClient.Do(req)
				if err != nil {
					statuses <- 0
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses <- resp.StatusCode
			}()
			select { // the next request only once this one reached a backend
			case id := <-arrived:
				count[id]++
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: a request reached no backend within 10s", name)
			}
		}
		close(release)
		wg.Wait()
		close(statuses)
		for s := range statuses {
			if s != 200 {
				t.Errorf("%s: a client got status %d", name, s)
			}
		}
		got[name] = count
	}
	t.Logf("FIGURE %d requests, slow server holding each: least_conn %v, round robin %v", n, got["lc"], got["rr"])
	if got["lc"]["slow"] > 2*2 {
		t.Errorf("least_conn sent %d of %d requests to the slow server, want at most 2 per worker (4)", got["lc"]["slow"], n)
	}
	if got["rr"]["slow"] < n/3 {
		t.Errorf("round robin sent only %d of %d to the slow server: the comparison is broken", got["rr"]["slow"], n)
	}
}

// TestRenderedMethodsPassNginxT renders a file with every method the model
// carries, as SwallowKeeper persists it, and has stock nginx check it
// (nginx -t): the method first, servers, keepalive last. Each body is also
// accepted by the Lua module's POST.
func TestRenderedMethodsPassNginxT(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	st := upstream.State{}
	for i, spec := range []string{"round_robin", "least_conn", "ip_hash", "hash $remote_addr", "hash $cookie_sid consistent", "hash $host:$request_uri consistent"} {
		b, err := upstream.ParseBalance(spec)
		if err != nil {
			t.Fatal(err)
		}
		u := upstream.Upstream{Name: fmt.Sprintf("m%d", i), Keepalive: 16, Balance: b, Servers: []upstream.Server{
			{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 2, MaxFails: 3, FailTimeout: 5 * time.Second, MaxConns: 10},
			{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Down: true},
			{Addr: netip.MustParseAddrPort("[2001:db8::1]:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second},
		}}
		if b.AllowsBackup() {
			u.Servers = append(u.Servers, upstream.Server{Addr: netip.MustParseAddrPort("10.0.0.3:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second, Backup: true})
		}
		u.Sort()
		if err := u.Validate(); err != nil {
			t.Fatal(err)
		}
		st[u.Name] = u
		mustPost(t, ngx, u.Name, u.Body())
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "upstreams.conf")
	if err := os.WriteFile(file, upstream.RenderFile(st), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	text := fmt.Sprintf("pid %[1]s/t.pid;\nerror_log stderr;\nevents {}\nhttp {\n"+
		"client_body_temp_path %[1]s/b; proxy_temp_path %[1]s/p; fastcgi_temp_path %[1]s/f;\n"+
		"uwsgi_temp_path %[1]s/u; scgi_temp_path %[1]s/s; access_log off;\n"+
		"include %[2]s;\n}\n", dir, file)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without -q: a warning ("load balancing method redefined", which
	// would mean keepalive was dropped) must not pass either.
	out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf).CombinedOutput()
	if err != nil || strings.Contains(string(out), "[warn]") || strings.Contains(string(out), "[emerg]") {
		t.Errorf("nginx -t on the rendered file: %v\n%s\nfile:\n%s", err, out, upstream.RenderFile(st))
	}
	parsed, err := upstream.ParseFile(upstream.RenderFile(st))
	if err != nil || !parsed.Equal(st) {
		t.Errorf("the rendered file does not parse back: %v", err)
	}
}

// TestLeastConnKeepsWeightsDownAndBackup: with nothing in flight every
// server ties, and least_conn splits by weight like round robin; a down
// server gets nothing; a backup serves, with no client error, only when
// every primary is dead.
func TestLeastConnKeepsWeightsDownAndBackup(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b, d, bk := startBackend(t, "a"), startBackend(t, "b"), startBackend(t, "d"), startBackend(t, "backup")
	mustPost(t, ngx, "lcw", fmt.Sprintf("least_conn; server %s weight=1; server %s weight=2; server %s down; server %s backup;",
		a.addr, b.addr, d.addr, bk.addr))
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
	got := map[string]int{}
	for range 60 {
		r := through(t, c, ngx, "lcw", false)
		got[r.body]++
	}
	if got["a"] != 20 || got["b"] != 40 {
		t.Errorf("least_conn with nothing in flight split %v, want a:20 b:40 (weights), none to the down or backup server", got)
	}

	dead1, dead2 := deadAddr(t), deadAddr(t)
	mustPost(t, ngx, "lcb", fmt.Sprintf("least_conn; server %s; server %s; server %s backup;", dead1, dead2, bk.addr))
	got, _ = spread(t, ngx, "lcb", 20)
	if got["backup"] != 20 {
		t.Errorf("least_conn with dead primaries: %v, want all 20 on the backup", got)
	}
}

// listenOn starts a backend answering id on addr, an address deadAddr
// gave: a server that was dead comes back.
func listenOn(t *testing.T, addr, id string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, id)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// TestLeastConnCountsSurviveErrorPage: a request whose every try fails
// ends in `error_page 502 = @sk_split_fallback`, an internal redirect that
// clears ngx.ctx. Its last connection must still be released (by the log
// phase of the location it ends in): once every server is back, least_conn
// spreads sequential requests evenly, as over a fresh upstream, instead
// of avoiding the servers that failed.
func TestLeastConnCountsSurviveErrorPage(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Workers: 1})
	d1, d2 := deadAddr(t), deadAddr(t)
	mustPost(t, ngx, "lce", fmt.Sprintf("least_conn; server %s max_fails=0; server %s max_fails=0;", d1, d2))
	failed, _ := spread(t, ngx, "lce", 40)
	if failed["status 502"] != 40 {
		t.Fatalf("with both servers dead: %v, want 40 × status 502", failed)
	}
	listenOn(t, d1, "d1")
	listenOn(t, d2, "d2")
	live := startBackend(t, "live")
	mustPost(t, ngx, "lce", fmt.Sprintf("least_conn; server %s max_fails=0; server %s max_fails=0; server %s max_fails=0;", d1, d2, live.addr))
	got, _ := spread(t, ngx, "lce", 90)
	t.Logf("FIGURE least_conn after 40 requests failed through error_page, then 90 sequential: %v (a fresh upstream: 30 each)", got)
	for _, id := range []string{"d1", "d2", "live"} {
		if got[id] < 25 || got[id] > 35 {
			t.Errorf("least_conn after failed requests: %v, want about 30 each: the failed requests' connections are still counted", got)
			break
		}
	}
}

// TestConsistentHashRingIsBounded: weights come from the registry (up to
// 10000), and the Lua plane builds its ring on a request, in the worker.
// The ring is bounded (methods.lua ring_weights): the first request after
// a POST of two servers of weight 10000 is answered within a second, not
// after seconds of a blocked worker. Each weight above 10 counts as 10
// (per server, so that a server joining or leaving moves only its own
// keys): the ring is then stock nginx's with the capped weights, asked
// here for the same keys.
func TestConsistentHashRingIsBounded(t *testing.T) {
	t.Parallel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	refPort := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Workers: 1, HTTP: fmt.Sprintf(
		"upstream ref_capped { hash $arg_k consistent; server %[1]s weight=10; server %[2]s weight=10; }\n"+
			"upstream ref_mixed { hash $arg_k consistent; server %[1]s weight=10; server %[2]s weight=3; }\n"+
			"server { listen 127.0.0.1:%[3]d; location / { proxy_pass http://ref_$host; } }\n", a.addr, b.addr, refPort)})
	refURL := "http://" + testenv.Addr(refPort)
	slow := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Minute}
	for _, c := range []struct{ name, weights, ref string }{
		{"g1", "10000 10000", "capped"},
		{"g2", "10000 5000", "capped"},
		{"g3", "10000 3", "mixed"},
	} {
		w := strings.Fields(c.weights)
		mustPost(t, ngx, c.name, fmt.Sprintf("hash $arg_k consistent; server %s weight=%s; server %s weight=%s;", a.addr, w[0], b.addr, w[1]))
		start := time.Now()
		first := viaProxy(t, slow, ngx.ProxyURL(), c.name, "/?k=first")
		took := time.Since(start)
		t.Logf("FIGURE hash consistent, 2 servers of weights %s: first request %v", c.weights, took.Round(time.Millisecond))
		if first.status != 200 || took > time.Second {
			t.Errorf("weights %s: first request status %d after %v, want 200 within 1s", c.weights, first.status, took)
		}
		for i := range 200 {
			path := fmt.Sprintf("/?k=user-%d", i)
			lua := viaProxy(t, plainClient, ngx.ProxyURL(), c.name, path)
			nginx := viaProxy(t, plainClient, refURL, c.ref, path)
			if lua.body != nginx.body {
				t.Errorf("weights %s, key user-%d: Lua chose %s, stock nginx with each weight capped at 10 %s", c.weights, i, lua.body, nginx.body)
			}
		}
	}
}

// nginxT runs stock nginx's configuration test over an http block that
// includes file; it returns nginx's output and whether it passed with no
// warning.
func nginxT(t *testing.T, bin, file string) (string, bool) {
	t.Helper()
	dir := filepath.Dir(file)
	conf := filepath.Join(dir, "nginx.conf")
	text := fmt.Sprintf("pid %[1]s/t.pid;\nerror_log stderr;\nevents {}\nhttp {\n"+
		"client_body_temp_path %[1]s/b; proxy_temp_path %[1]s/p; fastcgi_temp_path %[1]s/f;\n"+
		"uwsgi_temp_path %[1]s/u; scgi_temp_path %[1]s/s; access_log off;\n"+
		"include %[2]s;\n}\n", dir, file)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf).CombinedOutput()
	return string(out), err == nil && !strings.Contains(string(out), "[warn]") && !strings.Contains(string(out), "[emerg]")
}

// TestHashKeyVariablesPassNginxT: every variable a hash key may name
// (upstream.HashKeyVariables, and one of each prefix) is known to stock
// nginx: a rendered file hashing on each passes nginx -t. The same check
// fails a key the model refuses, so it can tell.
func TestHashKeyVariablesPassNginxT(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	st := upstream.State{}
	keys := []string{"$http_x_user", "$cookie_sid", "$arg_k"}
	for _, v := range upstream.HashKeyVariables {
		keys = append(keys, "$"+v)
	}
	for i, key := range keys {
		b, err := upstream.ParseBalance("hash " + key + " consistent")
		if err != nil {
			t.Fatal(err)
		}
		u := upstream.Upstream{Name: fmt.Sprintf("k%d", i), Balance: b, Servers: []upstream.Server{
			{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second}}}
		if err := u.Validate(); err != nil {
			t.Fatal(err)
		}
		st[u.Name] = u
	}
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	if err := os.WriteFile(file, upstream.RenderFile(st), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, ok := nginxT(t, bin, file); !ok {
		t.Errorf("nginx -t over every accepted hash key variable:\n%s", out)
	}

	if err := upstream.ValidHashKey("$nosuchvar"); err == nil {
		t.Fatal("the model accepts $nosuchvar")
	}
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("upstream bad {\n    hash $nosuchvar consistent;\n    server 10.0.0.1:80;\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, ok := nginxT(t, bin, bad); ok || !strings.Contains(out, "nosuchvar") {
		t.Errorf("nginx -t passed a key the model refuses, or failed for another reason:\n%s", out)
	}
}

// TestLeastConnSweepsCountsWithoutLogPhase: a location that proxies
// without log_by_lua never releases its request's count; once the
// request's ngx.ctx is collected, the housekeeping sweep does, and says
// so in error.log. Until then a held count steers least_conn away.
func TestLeastConnSweepsCountsWithoutLogPhase(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Workers: 1, Init: "sweep_interval = 0.2,", HTTP: fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location / {
            set $sk_upstream $host;
            proxy_pass http://swallowkeeper_backend;
        }
        location = /gc {
            content_by_lua_block { collectgarbage() ngx.print("collected") }
        }
        location = /held {
            content_by_lua_block { ngx.print(require("swallowkeeper.methods").held()) }
        }
    }
`, port)})
	a, b := startBackend(t, "a"), startBackend(t, "b")
	noLog := "http://" + testenv.Addr(port)
	mustPost(t, ngx, "lcs", fmt.Sprintf("least_conn; server %s; server %s down;", a.addr, b.addr))
	// Each request leaves a count on a; a request reusing the memory of
	// the one before it (the same request key) releases that one's count
	// in balance(), so at least the last is left for the sweep.
	for range 10 {
		if r := viaProxy(t, plainClient, noLog, "lcs", "/"); r.status != 200 || r.body != "a" {
			t.Fatalf("without log phase: status %d from %q", r.status, r.body)
		}
	}
	if r := viaProxy(t, plainClient, noLog, "x", "/held"); r.body == "0" {
		t.Fatalf("after 10 requests without log phase, the worker counts %s connections, want at least 1", r.body)
	}
	if r := viaProxy(t, plainClient, noLog, "gc", "/gc"); r.status != 200 {
		t.Fatalf("GET /gc: status %d", r.status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ngx.ErrorLog(), "least_conn connection count(s) of requests that ended without log()") {
		if time.Now().After(deadline) {
			t.Fatalf("no sweep released a count within 10s; error.log:\n%s", ngx.ErrorLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := viaProxy(t, plainClient, noLog, "x", "/held"); r.body != "0" {
		t.Fatalf("after the sweep the worker counts %s connections, want 0", r.body)
	}
	mustPost(t, ngx, "lcs", fmt.Sprintf("least_conn; server %s; server %s;", a.addr, b.addr))
	got, _ := spread(t, ngx, "lcs", 20)
	if got["a"] != 10 || got["b"] != 10 {
		t.Errorf("after the sweep: %v, want a:10 b:10 (nothing left counted)", got)
	}
}
