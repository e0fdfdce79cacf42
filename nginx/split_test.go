// Tests of swallowkeeper.split (traffic splits between an upstream and its
// groups) against a real nginx + lua-nginx-module: the API, shares measured
// from backend hits, header and cookie matches, and the fallback to the
// main upstream when the group cannot serve.
package nginx_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// postSplit sets the split of upstream name; it must be accepted.
func postSplit(t *testing.T, ngx *testenv.Nginx, name, rule string) {
	t.Helper()
	r := apiDo(t, ngx, "POST", "/split/"+name, nil, &rule)
	if r.status != 200 || r.body != "success" {
		t.Fatalf("POST /split/%s %q: %d %q", name, rule, r.status, r.body)
	}
}

// hits sends n requests for upstream name through the proxy over a few
// keep-alive connections in parallel, header(i) adding headers to the
// i-th request, and counts the backends that answered and the failures
// (transport errors and answers other than 200).
func hits(t *testing.T, ngx *testenv.Nginx, name string, n int, header func(i int, h http.Header)) (map[string]int, int) {
	t.Helper()
	const conns = 8
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	var mu sync.Mutex
	got, failed := map[string]int{}, 0
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			for i := w; i < n; i += conns {
				req, _ := http.NewRequest("GET", ngx.ProxyURL()+"/", nil)
				req.Host = name
				if header != nil {
					header(i, req.Header)
				}
				body, status := "", 0
				resp, err := c.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body, status = string(b), resp.StatusCode
				}
				mu.Lock()
				if status == 200 {
					got[body]++
				} else {
					failed++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got, failed
}

// webAndCanary starts nginx with upstream web (backend "main") and
// web_canary (backend "canary").
func webAndCanary(t *testing.T) *testenv.Nginx {
	t.Helper()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	m, c := startBackend(t, "main"), startBackend(t, "canary")
	mustPost(t, ngx, "web", "server "+m.addr+";")
	mustPost(t, ngx, "web_canary", "server "+c.addr+";")
	return ngx
}

func TestSplitAPI(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})

	r := apiDo(t, ngx, "GET", "/split", nil, nil)
	if r.status != 204 {
		t.Errorf("GET /split with no rule: %d %q, want 204", r.status, r.body)
	}
	rule := "header X-Canary 1\nto web_canary\nsticky cookie sid\npercent 12.50\ncookie beta yes\nheader A-First on\n"
	postSplit(t, ngx, "Web", rule)
	want := "to web_canary\npercent 12.5\nsticky cookie sid\nheader A-First on\nheader X-Canary 1\ncookie beta yes\n"
	if r := apiDo(t, ngx, "GET", "/split/web", nil, nil); r.status != 200 || r.body != want {
		t.Errorf("GET /split/web: %d %q, want 200 %q (canonical order and spelling)", r.status, r.body, want)
	}
	if r := apiDo(t, ngx, "GET", "/split", nil, nil); r.status != 200 || r.body != "split Web\n"+want+"\n" {
		t.Errorf("GET /split: %d %q", r.status, r.body)
	}

	for _, bad := range []struct{ name, body, why string }{
		{"web", "percent 10\n", `"to" is required`},
		{"web", "to web\n", "own upstream"},
		{"web", "to admin\n", "not a group of web"},
		{"web", "to web_canary\npercent 100.01\n", "want 0 to 100"},
		{"web", "to web_canary\npercent -1\n", "want 0 to 100"},
		{"web", "to web_canary\npercent 1.234\n", "at most two decimals"},
		{"web", "to web canary\n", "takes one value"},
		{"web", "to web;canary\n", "not an upstream name"},
		{"web", "to a\nheader X(Canary) 1\n", "NAME a token"},
		{"web", "to a\ncookie c a b\n", "NAME VALUE"},
		{"web", "to a\nsticky cookie\n", "sticky cookie NAME"},
		{"web", "to a\nsticky ip\n", "sticky addr"},
		{"web", "to a\nweight 5\n", "unknown directive"},
		{"web", "to a\nto b\n", "given twice"},
		{"we%0Ab", "to a\n", "not an upstream name"},
	} {
		body := bad.body
		r := apiDo(t, ngx, "POST", "/split/"+bad.name, nil, &body)
		if r.status != 400 || !strings.Contains(r.body, bad.why) {
			t.Errorf("POST /split/%s %q: %d %q, want 400 saying %q", bad.name, bad.body, r.status, r.body, bad.why)
		}
	}
	if r := apiDo(t, ngx, "GET", "/split/web", nil, nil); r.body != want {
		t.Errorf("a refused POST changed the rule: %q", r.body)
	}

	for _, c := range []struct{ method, target string }{{"PUT", "/split/web"}, {"DELETE", "/split"}, {"POST", "/split"}} {
		body := "to a\n"
		if r := apiDo(t, ngx, c.method, c.target, nil, &body); r.status != 405 {
			t.Errorf("%s %s: %d %q, want 405", c.method, c.target, r.status, r.body)
		}
	}
	if r := apiDo(t, ngx, "GET", "/split/web/x", nil, nil); r.status != 404 {
		t.Errorf("GET /split/web/x: %d, want 404", r.status)
	}
	if r := apiDo(t, ngx, "DELETE", "/split/WEB", nil, nil); r.status != 200 || r.body != "success" {
		t.Errorf("DELETE /split/WEB: %d %q", r.status, r.body)
	}
	if r := apiDo(t, ngx, "DELETE", "/split/web", nil, nil); r.status != 404 {
		t.Errorf("DELETE of a deleted split: %d %q, want 404", r.status, r.body)
	}
}

// TestSplitAPISecret: the split API is closed by the dyups module's secret.
func TestSplitAPISecret(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: `secret_file = "` + secretFile(t, "s3cret") + `",`})
	body := "to web_a\n"
	if r := apiDo(t, ngx, "POST", "/split/web", nil, &body); r.status != 403 {
		t.Errorf("POST without the secret: %d %q, want 403", r.status, r.body)
	}
	if r := apiDo(t, ngx, "POST", "/split/web", []string{"X-SwallowKeeper-Secret: s3cret"}, &body); r.status != 200 {
		t.Errorf("POST with the secret: %d %q, want 200", r.status, r.body)
	}
}

// share is the group's share of got in percent.
func share(got map[string]int) float64 {
	return 100 * float64(got["canary"]) / float64(got["canary"]+got["main"])
}

// TestSplitShares: over 10,000 requests the group's share lands within 2
// percentage points of the rule, drawn at random per request and hashed
// from a sticky header; a sticky key always lands on the same side.
func TestSplitShares(t *testing.T) {
	t.Parallel()
	ngx := webAndCanary(t)
	const n = 10000
	for _, c := range []struct {
		rule    string
		percent float64
		header  func(i int, h http.Header)
	}{
		{"to web_canary\npercent 10\n", 10, nil},
		{"to web_canary\npercent 50\n", 50, nil},
		{"to web_canary\npercent 10\nsticky header X-User\n", 10, func(i int, h http.Header) { h.Set("X-User", fmt.Sprintf("user-%d", i)) }},
		{"to web_canary\npercent 33.3\nsticky cookie sid\n", 33.3, func(i int, h http.Header) { h.Set("Cookie", fmt.Sprintf("a=b; sid=%x", i*7919)) }},
	} {
		postSplit(t, ngx, "web", c.rule)
		got, failed := hits(t, ngx, "web", n, c.header)
		s := share(got)
		fmt.Printf("FIGURE split share: rule %.1f%% %s -> measured %.2f%% to the group over %d requests (%d failed)\n",
			c.percent, strings.ReplaceAll(strings.TrimSpace(c.rule), "\n", "; "), s, n, failed)
		if failed != 0 || math.Abs(s-c.percent) > 2 {
			t.Errorf("rule %q: %v, %d failed: share %.2f%%, want %.1f±2", c.rule, got, failed, s, c.percent)
		}
	}

	// Sticky: the same key lands on the same side on every request, over
	// eight connections (spread over the workers by reuseport).
	for _, user := range []string{"alice", "bob", "carol", "dave", "erin"} {
		got, failed := hits(t, ngx, "web", 40, func(_ int, h http.Header) { h.Set("Cookie", "sid="+user) })
		if failed != 0 || len(got) != 1 {
			t.Errorf("sticky cookie sid=%s: %v, %d failed; want one side only", user, got, failed)
		}
	}

	// 0 and 100 are exact, and apply on the next request.
	postSplit(t, ngx, "web", "to web_canary\npercent 100\n")
	if got, failed := hits(t, ngx, "web", 200, nil); got["canary"] != 200 || failed != 0 {
		t.Errorf("percent 100: %v, %d failed, want all to canary", got, failed)
	}
	postSplit(t, ngx, "web", "to web_canary\npercent 0\n")
	if got, failed := hits(t, ngx, "web", 200, nil); got["main"] != 200 || failed != 0 {
		t.Errorf("percent 0: %v, %d failed, want all to main", got, failed)
	}
}

// TestSplitMatch: a matching header or cookie sends every request to the
// group, even at 0%; others follow the share.
func TestSplitMatch(t *testing.T) {
	t.Parallel()
	ngx := webAndCanary(t)
	postSplit(t, ngx, "web", "to web_canary\npercent 0\nheader X-Canary 1\ncookie canary yes\n")
	for _, c := range []struct {
		what   string
		header func(i int, h http.Header)
		want   string
	}{
		{"header X-Canary: 1", func(_ int, h http.Header) { h.Set("X-Canary", "1") }, "canary"},
		{"header x-canary: 1", func(_ int, h http.Header) { h.Set("x-canary", "1") }, "canary"},
		{"cookie canary=yes", func(_ int, h http.Header) { h.Set("Cookie", "a=1; canary=yes; z=2") }, "canary"},
		{"header X-Canary: 2", func(_ int, h http.Header) { h.Set("X-Canary", "2") }, "main"},
		{"cookie canary=no", func(_ int, h http.Header) { h.Set("Cookie", "canary=no") }, "main"},
		{"no header", nil, "main"},
	} {
		got, failed := hits(t, ngx, "web", 1000, c.header)
		fmt.Printf("FIGURE split match: %s -> %d of 1000 to %s (%v, %d failed)\n", c.what, got[c.want], c.want, got, failed)
		if got[c.want] != 1000 || failed != 0 {
			t.Errorf("%s: %v, %d failed; want all 1000 to %s", c.what, got, failed, c.want)
		}
	}
}

// TestSplitFallsBackToMain: a split whose group has no server that can
// take a request -- no upstream at all, every server down, or every server
// dead -- sends its share to the main upstream, with no failed request.
func TestSplitFallsBackToMain(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{})
	m, c := startBackend(t, "main"), startBackend(t, "canary")
	mustPost(t, ngx, "web", "server "+m.addr+";")
	postSplit(t, ngx, "web", "to web_canary\npercent 50\nheader X-Canary 1\n")

	check := func(what string, wantCanary bool) {
		t.Helper()
		got, failed := hits(t, ngx, "web", 1000, func(i int, h http.Header) {
			if i%2 == 0 {
				h.Set("X-Canary", "1")
			}
		})
		fmt.Printf("FIGURE split fallback: %s -> %v, %d failed of 1000\n", what, got, failed)
		if failed != 0 || (!wantCanary && got["main"] != 1000) || (wantCanary && got["canary"] == 0) {
			t.Errorf("%s: %v, %d failed", what, got, failed)
		}
	}
	check("group upstream absent", false)
	mustPost(t, ngx, "web_canary", fmt.Sprintf("server %s down; server %s down;", c.addr, deadAddr(t)))
	check("every group server down", false)
	mustPost(t, ngx, "web_canary", "server "+c.addr+";")
	check("group healthy again", true)
	mustPost(t, ngx, "web_canary", fmt.Sprintf("server %s; server %s;", deadAddr(t), deadAddr(t)))
	check("every group server dead", false)
}

// TestSampleLuaConfSplits runs nginx/conf/lua.conf as shipped (paths and
// ports changed as in TestSampleLuaConf) with a split: its API on the
// unix socket, the route by Host through the map, a header match, and the
// fallback when the group's only server is dead.
func TestSampleLuaConfSplits(t *testing.T) {
	t.Parallel()
	m, c := startBackend(t, "main"), startBackend(t, "canary")
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
			"/var/lib/swallowkeeper/upstreams.conf", p.Prefix+"/upstreams.conf",
			"listen unix:/run/swallowkeeper/dyups.sock;", "listen unix:"+p.APISocket+";",
			"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d reuseport;", p.ProxyPort),
			"http {\n", "http {\n"+tempPaths(p.Prefix),
		)
	}})
	for name, body := range map[string]string{"web": "server " + m.addr + ";", "web_canary": "server " + c.addr + ";"} {
		expect(t, "POST /upstream/"+name, apiDo(t, ngx, "POST", "/upstream/"+name, nil, &body), 200, "success")
	}
	postSplit(t, ngx, "web", "to web_canary\npercent 20\nheader X-Canary 1\n")

	got, failed := hits(t, ngx, "web.example.com", 2000, nil)
	if s := share(got); failed != 0 || math.Abs(s-20) > 4 {
		t.Errorf("lua.conf, 20%% split: %v, %d failed (share %.1f%%)", got, failed, s)
	}
	got, failed = hits(t, ngx, "web.example.com", 200, func(_ int, h http.Header) { h.Set("X-Canary", "1") })
	if got["canary"] != 200 || failed != 0 {
		t.Errorf("lua.conf, X-Canary: 1: %v, %d failed; want all to canary", got, failed)
	}
	dead := "server " + deadAddr(t) + ";"
	expect(t, "POST /upstream/web_canary (dead)", apiDo(t, ngx, "POST", "/upstream/web_canary", nil, &dead), 200, "success")
	got, failed = hits(t, ngx, "web.example.com", 200, func(_ int, h http.Header) { h.Set("X-Canary", "1") })
	if got["main"] != 200 || failed != 0 {
		t.Errorf("lua.conf, group dead: %v, %d failed; want all to main", got, failed)
	}
	if !strings.Contains(ngx.ErrorLog(), `group "web_canary" failed, request sent to "web"; group skipped`) {
		t.Errorf("lua.conf, group dead: error.log does not show the fallback:\n%s", ngx.ErrorLog())
	}
}

// rawDictServer is a server {} for NginxOptions.HTTP that writes the
// shared dict behind the split API's back, as a bug or an older version
// could have: GET /inject stores a rule of upstream shop that sends its
// requests to admin, GET /poison makes sk:splitver a string (so that no
// change can be announced to the workers).
func rawDictServer(port int) string {
	return fmt.Sprintf(`
    server {
        listen 127.0.0.1:%d;
        location = /inject {
            content_by_lua_block {
                local d = require("swallowkeeper.dyups").shared()
                d:set("s:shop", "shop\nto admin\npercent 100\n")
                d:incr("sk:splitver", 1, 0)
                ngx.print("ok")
            }
        }
        location = /poison {
            content_by_lua_block {
                require("swallowkeeper.dyups").shared():set("sk:splitver", "x")
                ngx.print("ok")
            }
        }
    }
`, port)
}

func rawDict(t *testing.T, port int, what string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/%s", testenv.Addr(port), what))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("/%s: %d %q", what, resp.StatusCode, b)
	}
}

// TestSplitOnlyToOwnGroups: the split API takes only a group of the
// split's own upstream as "to" (web → web_canary; never web → admin), and
// a rule that reached the shared dict anyway is never followed: whoever
// can write split rules cannot send one service's requests to another's
// backends.
func TestSplitOnlyToOwnGroups(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{HTTP: rawDictServer(port)})
	shop, admin, green := startBackend(t, "shop"), startBackend(t, "admin"), startBackend(t, "green")
	mustPost(t, ngx, "shop", "server "+shop.addr+";")
	mustPost(t, ngx, "admin", "server "+admin.addr+";")
	mustPost(t, ngx, "shop_green", "server "+green.addr+";")

	for _, c := range []struct{ name, rule, want string }{
		{"shop", "to admin\npercent 100\n", "invalid split: \"to\" admin is not a group of shop: want shop_<group>\n"},
		{"shop", "to shopadmin\npercent 100\n", "invalid split: \"to\" shopadmin is not a group of shop: want shop_<group>\n"},
		{"shop", "to shop_\npercent 100\n", "invalid split: \"to\" shop_ is not a group of shop: want shop_<group>\n"},
		{"swallowkeeper", "to admin\n", "invalid split: \"to\" admin is not a group of swallowkeeper: want swallowkeeper_<group>\n"},
	} {
		body := c.rule
		if r := apiDo(t, ngx, "POST", "/split/"+c.name, nil, &body); r.status != 400 || r.body != c.want {
			t.Errorf("POST /split/%s %q: %d %q, want 400 %q", c.name, c.rule, r.status, r.body, c.want)
		}
	}
	if got, failed := hits(t, ngx, "shop", 50, nil); got["shop"] != 50 || failed != 0 {
		t.Errorf("after refused rules, shop goes to %v (%d failed); want all to shop", got, failed)
	}

	rawDict(t, port, "inject")
	got, failed := hits(t, ngx, "shop", 100, nil)
	if got["shop"] != 100 || failed != 0 {
		t.Errorf("a stored rule shop → admin is followed: %v, %d failed; want all to shop", got, failed)
	}
	if !strings.Contains(ngx.ErrorLog(), `split "shop": stored rule unreadable: "to" admin is not a group of shop`) {
		t.Errorf("error.log does not report the stored rule:\n%s", ngx.ErrorLog())
	}

	postSplit(t, ngx, "shop", "to SHOP_Green\npercent 100\n") // a group, in another case
	if got, failed := hits(t, ngx, "shop", 50, nil); got["green"] != 50 || failed != 0 {
		t.Errorf("shop → SHOP_Green at 100%%: %v, %d failed", got, failed)
	}
}

// TestSplitChangeNotAnnouncedIsUndone: when the version the workers watch
// cannot move (dict full, or not a number), a POST or DELETE is undone and
// answered 500, so that GET shows what the workers apply and the daemon
// tries again, instead of "success" for a change no worker sees.
func TestSplitChangeNotAnnouncedIsUndone(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	ngx := testenv.StartNginx(t, testenv.NginxOptions{HTTP: rawDictServer(port)})
	postSplit(t, ngx, "web", "to web_canary\npercent 10\n")
	rawDict(t, port, "poison")

	body := "to web_canary\npercent 90\n"
	r := apiDo(t, ngx, "POST", "/split/web", nil, &body)
	if r.status != 500 || r.body != "split not stored\n" || r.header.Get("X-SwallowKeeper-Error") != "not a number" {
		t.Errorf("POST with the version stuck: %d %q, error header %q", r.status, r.body, r.header.Get("X-SwallowKeeper-Error"))
	}
	if g := apiDo(t, ngx, "GET", "/split/web", nil, nil); g.body != "to web_canary\npercent 10\n" {
		t.Errorf("after the failed POST, GET answers %d %q; want the old rule", g.status, g.body)
	}
	r = apiDo(t, ngx, "POST", "/split/api", nil, str("to api_canary\npercent 5\n"))
	if g := apiDo(t, ngx, "GET", "/split/api", nil, nil); r.status != 500 || g.status != 404 {
		t.Errorf("new rule with the version stuck: POST %d, then GET %d %q; want 500 and 404", r.status, g.status, g.body)
	}
	r = apiDo(t, ngx, "DELETE", "/split/web", nil, nil)
	if g := apiDo(t, ngx, "GET", "/split/web", nil, nil); r.status != 500 || g.body != "to web_canary\npercent 10\n" {
		t.Errorf("DELETE with the version stuck: %d %q, then GET %q; want 500 and the rule kept", r.status, r.body, g.body)
	}
}

// TestSplitFallbackSkipsTheGroupAfterAPost: a POST that its group failed
// keeps its 502 (it is not sent twice), but the group is skipped from then
// on like after any other failure, so the next request goes straight to
// the main upstream instead of paying for the dead group first.
func TestSplitFallbackSkipsTheGroupAfterAPost(t *testing.T) {
	t.Parallel()
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Workers: 1}) // the skip is per worker
	m := startBackend(t, "main")
	mustPost(t, ngx, "web", "server "+m.addr+";")
	// max_fails=0: nginx never marks the server failed, only the split's
	// own skip keeps requests away from it.
	mustPost(t, ngx, "web_canary", "server "+deadAddr(t)+" max_fails=0;")
	postSplit(t, ngx, "web", "to web_canary\npercent 100\n")

	c := &http.Client{Timeout: 10 * time.Second}
	send := func(method string) (int, string) {
		req, _ := http.NewRequest(method, ngx.ProxyURL()+"/", strings.NewReader("x"))
		req.Host = "web"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := send("POST"); code != 502 {
		t.Errorf("POST to the dead group: %d, want 502 (not sent again)", code)
	}
	if !strings.Contains(ngx.ErrorLog(), `group "web_canary" failed; POST not sent again (not idempotent); group skipped`) {
		t.Errorf("error.log does not show the POST's failure:\n%s", ngx.ErrorLog())
	}
	for range 5 {
		if code, body := send("GET"); code != 200 || body != "main" {
			t.Errorf("GET after the failed POST: %d %q, want main", code, body)
		}
	}
	if n := strings.Count(ngx.ErrorLog(), `failed, request sent to "web"`); n != 0 {
		t.Errorf("%d GETs went to the dead group first (error.log shows the fallback); want none", n)
	}
}
