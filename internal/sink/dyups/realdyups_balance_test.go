//go:build realdyups

package dyups

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// balanceGet sends GET path with Host host to base from source address src
// (a 127.0.0.0/8 address), on a new connection, and returns status and
// body.
func balanceGet(t *testing.T, base, host, path, src string) (int, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s (Host %s): %v", base, path, host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func balancePost(t *testing.T, apiURL, name, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(apiURL+"/upstream/"+name, "", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRealDyupsAppliesBalance POSTs the body SwallowKeeper renders for
// each balancing method (method first, keepalive last) to real dyups and
// to the Lua module, and checks that real dyups accepts it and applies it:
// it refuses a backup server after ip_hash (so it parsed the directive),
// and for ip_hash, hash and hash consistent, every client and key is
// answered by the same server on real dyups as on the Lua module, and the
// same server every time.
func TestRealDyupsAppliesBalance(t *testing.T) {
	ngx := startRealDyups(t, realOptions{})
	lua := testenv.StartNginx(t, testenv.NginxOptions{})
	var servers []upstream.Server
	for i, w := range []int{1, 2, 1, 3} {
		b := testenv.StartBackend(t, fmt.Sprintf("b%d", i))
		servers = append(servers, upstream.Server{Addr: addr(b.Addr()), Weight: w, MaxFails: 1, FailTimeout: 10 * time.Second})
	}
	methods := map[string]string{
		"rr": "round_robin", "lc": "least_conn", "iph": "ip_hash",
		"hsh": "hash $arg_k", "chs": "hash $arg_k consistent",
	}
	for name, spec := range methods {
		b, err := upstream.ParseBalance(spec)
		if err != nil {
			t.Fatal(err)
		}
		u := upstream.Upstream{Name: name, Keepalive: 8, Balance: b, Servers: servers}
		u.Sort()
		if err := u.Validate(); err != nil {
			t.Fatal(err)
		}
		if code, body := balancePost(t, ngx.apiURL(), name, u.Body()); code != 200 || body != "success" {
			t.Fatalf("real dyups POST %s (%s) = %d %q, want 200 success; body:\n%s\n%s", name, spec, code, body, u.Body(), ngx.errorLog())
		}
		if code, body := balancePost(t, "http://"+lua.APIAddr(), name, u.Body()); code != 200 {
			t.Fatalf("Lua POST %s = %d %q", name, code, body)
		}
	}
	refused := fmt.Sprintf("ip_hash;\nserver %s;\nserver %s backup;\n", servers[0].Addr, servers[1].Addr)
	if code, _ := balancePost(t, ngx.apiURL(), "bad", refused); code != 500 {
		t.Errorf("real dyups took a backup server after ip_hash (status %d): it did not parse the method", code)
	}
	ngx.settle(t)

	for _, name := range []string{"rr", "lc"} {
		seen := map[string]int{}
		for range 20 {
			code, body := balanceGet(t, ngx.proxyURL(), name, "/", "127.0.0.1")
			if code != 200 {
				t.Fatalf("%s: status %d", name, code)
			}
			seen[body]++
		}
		t.Logf("FIGURE real dyups %s: 20 requests over %v", methods[name], seen)
	}
	for _, name := range []string{"iph", "hsh", "chs"} {
		spread := map[string]int{}
		for i := range 60 {
			path, src := fmt.Sprintf("/?k=key-%d", i), "127.0.0.1"
			if name == "iph" {
				path, src = "/", fmt.Sprintf("127.%d.%d.9", 1+i%5, 20+i)
			}
			code1, real1 := balanceGet(t, ngx.proxyURL(), name, path, src)
			code2, real2 := balanceGet(t, ngx.proxyURL(), name, path, src)
			code3, viaLua := balanceGet(t, lua.ProxyURL(), name, path, src)
			if code1 != 200 || code2 != 200 || code3 != 200 {
				t.Fatalf("%s %s from %s: statuses real %d %d, Lua %d", name, path, src, code1, code2, code3)
			}
			if real1 != real2 {
				t.Errorf("%s %s from %s: real dyups not sticky: %s then %s", name, path, src, real1, real2)
			}
			if real1 != viaLua {
				t.Errorf("%s %s from %s: real dyups chose %s, the Lua module %s", name, path, src, real1, viaLua)
			}
			spread[real1]++
		}
		t.Logf("FIGURE real dyups %s: 60 clients/keys over %v", methods[name], spread)
		if len(spread) < 3 {
			t.Errorf("%s: 60 clients/keys over only %v", name, spread)
		}
	}
}

// TestRealDyupsHugeWeightsUnderConsistentHash measures what the Lua
// module's bounded ring (methods.lua ring_weights) changes against real
// dyups, which builds nginx's full ring (weight × 160 points a server) in
// C: with weights of 10000 the two rings differ, so keys may land on
// another server than on real dyups; both stay sticky and split the keys
// alike. Below a weight sum of 100 the rings are the same
// (TestRealDyupsAppliesBalance).
func TestRealDyupsHugeWeightsUnderConsistentHash(t *testing.T) {
	ngx := startRealDyups(t, realOptions{})
	lua := testenv.StartNginx(t, testenv.NginxOptions{})
	a, b := testenv.StartBackend(t, "a"), testenv.StartBackend(t, "b")
	body := fmt.Sprintf("hash $arg_k consistent;\nserver %s weight=10000;\nserver %s weight=9999;\n", a.Addr(), b.Addr())
	start := time.Now()
	if code, got := balancePost(t, ngx.apiURL(), "big", body); code != 200 {
		t.Fatalf("real dyups POST = %d %q\n%s", code, got, ngx.errorLog())
	}
	t.Logf("FIGURE real dyups: POST of hash consistent with weights 10000 and 9999 (nginx's ring in C, 3.2 million points) took %v", time.Since(start).Round(time.Millisecond))
	if code, got := balancePost(t, "http://"+lua.APIAddr(), "big", body); code != 200 {
		t.Fatalf("Lua POST = %d %q", code, got)
	}
	ngx.settle(t)
	start = time.Now()
	if code, _ := balanceGet(t, lua.ProxyURL(), "big", "/?k=first", "127.0.0.1"); code != 200 {
		t.Fatalf("Lua first request: status %d", code)
	}
	took := time.Since(start)
	t.Logf("FIGURE Lua module: first request after that POST (bounded ring) took %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the Lua module's first request took %v, want the bounded ring within 1s", took)
	}
	same, spreadReal, spreadLua := 0, map[string]int{}, map[string]int{}
	const keys = 200
	for i := range keys {
		path := fmt.Sprintf("/?k=key-%d", i)
		_, real1 := balanceGet(t, ngx.proxyURL(), "big", path, "127.0.0.1")
		_, real2 := balanceGet(t, ngx.proxyURL(), "big", path, "127.0.0.1")
		_, lua1 := balanceGet(t, lua.ProxyURL(), "big", path, "127.0.0.1")
		_, lua2 := balanceGet(t, lua.ProxyURL(), "big", path, "127.0.0.1")
		if real1 != real2 || lua1 != lua2 {
			t.Errorf("key %d not sticky: real dyups %s then %s, Lua %s then %s", i, real1, real2, lua1, lua2)
		}
		if real1 == lua1 {
			same++
		}
		spreadReal[real1]++
		spreadLua[lua1]++
	}
	t.Logf("FIGURE weights 10000/9999: %d of %d keys on the same server on real dyups and the Lua module; real dyups %v, Lua %v", same, keys, spreadReal, spreadLua)
	for _, s := range []map[string]int{spreadReal, spreadLua} {
		if s["a"] < keys/4 || s["b"] < keys/4 {
			t.Errorf("keys over %v, want both servers about half", s)
		}
	}
}
