package cli_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// The upstream API off the network (issue 14.2), end to end: a real Consul,
// the daemon, and a real nginx with the Lua module whose API listens on a
// unix socket, or on TCP behind a shared secret.

// apiCall sends one request to nginx's API (TCP or unix socket), with the
// secret header when secret is not "".
func apiCall(t *testing.T, ng *testenv.Nginx, method, path, secret, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("X-SwallowKeeper-Secret", secret)
	}
	resp, err := ng.APIClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s on nginx's API: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// postToTrafficPort sends what an attacker would: an API call shaped
// request to nginx's public port, with the Host of a service.
func postToTrafficPort(t *testing.T, ng *testenv.Nginx, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ng.ProxyURL()+"/upstream/web", strings.NewReader("server 10.6.6.6:80;"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /upstream/web to the traffic port: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonSyncsThroughUnixSocket: the daemon's target is nginx's API
// socket (unix:/path); it syncs through it, status shows the target as
// unix:/path, and an API call sent to nginx's traffic port is proxied to
// the service like any request and changes nothing.
func TestDaemonSyncsThroughUnixSocket(t *testing.T) {
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{APISocket: true})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "url: unix:/") {
		t.Fatalf("the daemon's target is not the socket:\n%s", b)
	}
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	b1 := startBackend(t, "web-1")
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr)

	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-1")
	code, detail := apiCall(t, ng, "GET", "/detail", "", "")
	if code != 200 || !strings.Contains(detail, "server "+b1.Addr()+" ") {
		t.Fatalf("GET /detail over the socket: %d\n%s", code, detail)
	}
	if code, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr); code != 0 || !strings.Contains(out, ng.APIURL()) {
		t.Errorf("status does not show the target %s (exit %d):\n%s", ng.APIURL(), code, out)
	}

	for _, host := range []string{"web", "localhost", "127.0.0.1"} {
		code, body := postToTrafficPort(t, ng, host)
		if body == "success" {
			t.Errorf("POST /upstream/web to the traffic port with Host %s reached the API (%d %q)", host, code, body)
		}
	}
	if code, after := apiCall(t, ng, "GET", "/detail", "", ""); code != 200 || after != detail {
		t.Errorf("/detail changed after API calls to the traffic port:\n%s\nwas\n%s", after, detail)
	}
	if seen, failed := route(t, ng, "web", 10); failed > 0 || seen["web-1"] != 10 {
		t.Errorf("traffic after API calls to the traffic port: %v, %d failed", seen, failed)
	}
}

// TestDaemonWithSecretOverTCP: nginx's API on TCP with secret_file; the
// daemon with targets[].secret_file syncs; calls without the secret or
// with a wrong one get 403 and change nothing; the secret appears nowhere
// in the daemon's log (at debug level), its /status or `status`.
func TestDaemonWithSecretOverTCP(t *testing.T) {
	const secret = "daemon-e2e-secret-9d1f0c"
	secretPath := filepath.Join(t.TempDir(), "api.secret")
	if err := os.WriteFile(secretPath, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testenv.StartConsul(t)
	ng := testenv.StartNginx(t, testenv.NginxOptions{Init: "secret_file = \"" + secretPath + "\","})
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	cfg := writeConfig(t, c, ng, file)
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const anchor = "    timeout: 2s\n"
	if !strings.Contains(string(text), anchor) {
		t.Fatalf("writeConfig no longer writes %q:\n%s", anchor, text)
	}
	text = []byte(strings.Replace(string(text), anchor, anchor+"    secret_file: "+secretPath+"\n", 1))
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		t.Fatal(err)
	}
	metricsAddr := testenv.Addr(testenv.FreePort(t))
	b1, b2 := startBackend(t, "web-1"), startBackend(t, "web-2")
	d := startDaemon(t, "-config", cfg, "-metrics-listen", metricsAddr, "-log-level", "debug")

	c.Register(t, "web", "web-1", "127.0.0.1", b1.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-1")
	c.Register(t, "web", "web-2", "127.0.0.1", b2.Port, nil, nil)
	waitRoutes(t, ng, d, "web", "web-1", "web-2")

	_, detail := apiCall(t, ng, "GET", "/detail", secret, "")
	for _, wrong := range []string{"", "wrong", strings.ToUpper(secret), secret + "x"} {
		for _, call := range [][2]string{{"POST", "/upstream/web"}, {"DELETE", "/upstream/web"}, {"GET", "/detail"}} {
			if code, body := apiCall(t, ng, call[0], call[1], wrong, "server 10.6.6.6:80;"); code != 403 || body != "forbidden\n" {
				t.Errorf("%s %s with secret %q: %d %q, want 403 forbidden", call[0], call[1], wrong, code, body)
			}
		}
	}
	if code, after := apiCall(t, ng, "GET", "/detail", secret, ""); code != 200 || after != detail {
		t.Errorf("/detail changed after refused calls:\n%s\nwas\n%s", after, detail)
	}
	for _, host := range []string{"web", "localhost"} {
		if code, body := postToTrafficPort(t, ng, host); body == "success" {
			t.Errorf("POST /upstream/web to the traffic port with Host %s reached the API (%d)", host, code)
		}
	}

	_, out, _ := runCLI(t, nil, "status", "-addr", metricsAddr)
	resp, err := http.Get("http://" + metricsAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	statusJSON, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(out, ng.APIURL()) {
		t.Errorf("status does not show the target:\n%s", out)
	}
	for what, s := range map[string]string{"daemon log": d.log.String(), "status": out, "/status": string(statusJSON), "nginx error.log": ng.ErrorLog()} {
		if strings.Contains(s, secret) {
			t.Errorf("the secret appears in the %s", what)
		}
	}
}
