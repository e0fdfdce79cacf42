package nginx_test

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// dyupsSplitConf is an nginx.conf for stock nginx that routes like
// conf/tengine-dyups.conf with conf/dyups-split.conf included as its
// comments say: static upstream blocks stand in for the ones dyups would
// hold (proxy_pass with a variable picks them by name either way).
func dyupsSplitConf(t *testing.T, p testenv.NginxParams, upstreams string) string {
	t.Helper()
	recipe, err := filepath.Abs(filepath.Join("conf", "dyups-split.conf"))
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	if p.Root {
		user = "user root;"
	}
	return fmt.Sprintf(`%s
worker_processes 2;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 1024; }
http {
%[3]s
    access_log off;
    %[4]s
    map $host $sk_service {
        hostnames;
        default          "";
        web.example.com  web;
        api.example.com  api;
    }
    include %[5]s;
    server {
        listen 127.0.0.1:%[6]d;
        location / { return 200 "not an API\n"; }
    }
    server {
        listen 127.0.0.1:%[7]d reuseport;
        location / {
            if ($sk_upstream = "") {
                return 502;
            }
            proxy_pass http://$sk_upstream;
            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502;
            error_page 502 = @sk_split_fallback;
        }
        location @sk_split_fallback {
            proxy_pass http://$sk_service;
            proxy_set_header Host $host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, user, p.Prefix, tempPaths(p.Prefix), upstreams, recipe, p.APIPort, p.ProxyPort)
}

// TestDyupsSplitRecipe runs the real-dyups recipe (conf/dyups-split.conf,
// as shipped: 10% of web to web_canary, X-Canary: 1 or cookie canary=1 to
// web_canary) on stock nginx: it passes `nginx -t`, its share lands within
// 2 points over 10,000 requests, its matches send everything to the
// group, and without a web_canary upstream every request reaches web.
func TestDyupsSplitRecipe(t *testing.T) {
	t.Parallel()
	m, c := startBackend(t, "main"), startBackend(t, "canary")
	both := fmt.Sprintf("upstream web { server %s; }\n    upstream web_canary { server %s; }", m.addr, c.addr)

	bin := testenv.Binary(t, "SWALLOWKEEPER_NGINX", "nginx", "apt-get install nginx")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(dyupsSplitConf(t, testenv.NginxParams{Prefix: dir, APIPort: 1, ProxyPort: 2, Root: os.Geteuid() == 0}, both)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-q", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t of the recipe: %v\n%s", err, out)
	}

	ngx := testenv.StartNginx(t, testenv.NginxOptions{Config: func(p testenv.NginxParams) string { return dyupsSplitConf(t, p, both) }})
	got, failed := hits(t, ngx, "web.example.com", 10000, nil)
	s := share(got)
	fmt.Printf("FIGURE split share (real-dyups recipe, split_clients on $request_id): rule 10%% -> measured %.2f%% over 10000 requests (%d failed)\n", s, failed)
	if failed != 0 || math.Abs(s-10) > 2 {
		t.Errorf("recipe share: %v, %d failed (%.2f%%), want 10±2", got, failed, s)
	}
	for what, h := range map[string]func(int, http.Header){
		"header X-Canary: 1": func(_ int, h http.Header) { h.Set("X-Canary", "1") },
		"cookie canary=1":    func(_ int, h http.Header) { h.Set("Cookie", "a=b; canary=1") },
	} {
		if got, failed := hits(t, ngx, "web.example.com", 500, h); got["canary"] != 500 || failed != 0 {
			t.Errorf("recipe, %s: %v, %d failed; want all 500 to canary", what, got, failed)
		}
	}
	if got, failed := hits(t, ngx, "api.example.com", 10, nil); failed != 10 {
		t.Errorf("a service without an upstream: %v, %d failed; want 502s", got, failed)
	}

	// No web_canary upstream (the group has no instance): the fallback.
	only := fmt.Sprintf("upstream web { server %s; }", m.addr)
	ngx2 := testenv.StartNginx(t, testenv.NginxOptions{Config: func(p testenv.NginxParams) string { return dyupsSplitConf(t, p, only) }})
	got, failed = hits(t, ngx2, "web.example.com", 2000, func(i int, h http.Header) {
		if i%2 == 0 {
			h.Set("X-Canary", "1")
		}
	})
	fmt.Printf("FIGURE split fallback (real-dyups recipe, no web_canary): %v, %d failed of 2000\n", got, failed)
	if got["main"] != 2000 || failed != 0 {
		t.Errorf("recipe without the group: %v, %d failed; want all 2000 to main", got, failed)
	}
	if !strings.Contains(ngx2.ErrorLog(), "web_canary") {
		t.Errorf("error.log does not show the missing group being tried:\n%s", ngx2.ErrorLog())
	}
}
