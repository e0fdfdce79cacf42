package dyups

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Targets off the network: unix sockets, the shared secret, and the Lua
// module's reason header. The fakes check what the client sends; the tests
// at the end run the client against a real nginx with the Lua module.

func TestParseBaseURLUnixSocket(t *testing.T) {
	for raw, want := range map[string]string{
		"unix:/run/swallowkeeper/dyups.sock":   "unix:/run/swallowkeeper/dyups.sock",
		"unix:///run/swallowkeeper/dyups.sock": "unix:/run/swallowkeeper/dyups.sock",
		"unix:/s":                              "unix:/s",
	} {
		u, err := ParseBaseURL(raw)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		if u.String() != want {
			t.Errorf("%s shows as %s, want %s", raw, u, want)
		}
	}
	for raw, want := range map[string]string{
		"unix:":                             "no socket path",
		"unix://":                           "a unix socket has no host",
		"unix://host/run/x.sock":            "a unix socket has no host",
		"unix:run/x.sock":                   "must be absolute",
		"unix:/run/../x.sock":               "write the socket path as /x.sock",
		"unix:/run/x.sock/":                 "write the socket path as /run/x.sock",
		"unix:/run/x\n.sock":                "control character",
		"unix:/" + strings.Repeat("a", 107): "longer than 107 bytes",
		"uds:/run/x.sock":                   "want http://host:port, https://host:port or unix:/path/to/socket",
		"/run/x.sock":                       "want http://host:port, https://host:port or unix:/path/to/socket",
	} {
		_, err := ParseBaseURL(raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want one saying %q", raw, err, want)
		}
	}
}

// unixServer serves h on a fresh unix socket until the test ends and
// returns the socket's path.
func unixServer(t *testing.T, h http.Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dyups.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path
}

// seen records what a fake dyups received.
type seen struct {
	mu       sync.Mutex
	requests []string // "METHOD host path secret"
}

func (s *seen) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, fmt.Sprintf("%s %s %s %q", r.Method, r.Host, r.URL.Path, r.Header.Values(SecretHeader)))
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (s *seen) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestTargetOverUnixSocket: every call of a unix: target goes over the
// socket, for http://localhost/...; the target still shows as unix:/path.
func TestTargetOverUnixSocket(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}}
	var s seen
	sock := unixServer(t, s.wrap(f))
	tg, err := NewTarget("unix://"+sock, withDefaults(Options{MaxAttempts: 2}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	if tg.URL() != "unix:"+sock || tg.Status().URL != "unix:"+sock {
		t.Errorf("target shows as %q / %q, want unix:%s", tg.URL(), tg.Status().URL, sock)
	}
	if err := tg.Sync(context.Background(), upstream.State{"web": web()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.client.DetailBody(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(context.Background(), upstream.State{}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`POST localhost /upstream/web []`,
		`GET localhost /detail []`,
		`DELETE localhost /upstream/web []`,
	}
	if got := s.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Errors name the socket (the dial error) and the request path.
	dead, err := NewTarget("unix:"+filepath.Join(t.TempDir(), "none.sock"), withDefaults(Options{MaxAttempts: 1}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = dead.Sync(context.Background(), upstream.State{"web": web()})
	if err == nil || !strings.Contains(err.Error(), "POST /upstream/web: dial unix /") || !Retryable(err) {
		t.Errorf("err %v, want a retryable dial error naming the socket", err)
	}
}

// TestSecretOnEveryRequest: with a secret, POST, DELETE and GET /detail
// all carry it; without one, none carries the header. The secret never
// prints, however the client or target is formatted or logged.
func TestSecretOnEveryRequest(t *testing.T) {
	const secretText = "hunter2-very-secret"
	f := &fakeDyups{ups: map[string]string{}}
	var s seen
	base := newServerHandler(t, s.wrap(f))
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tg, err := NewTarget(base, withDefaults(Options{MaxAttempts: 2}), log, NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	tg.UseSecret(secretText)
	if err := tg.Sync(context.Background(), upstream.State{"web": web()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.client.DetailBody(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(context.Background(), upstream.State{}); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(base, "http://")
	want := []string{
		fmt.Sprintf(`POST %s /upstream/web [%q]`, host, secretText),
		fmt.Sprintf(`GET %s /detail [%q]`, host, secretText),
		fmt.Sprintf(`DELETE %s /upstream/web [%q]`, host, secretText),
	}
	if got := s.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var printed bytes.Buffer
	fmt.Fprintf(&printed, "%v %+v %#v %s %v %+v", tg.client, tg.client, tg.client, *tg.client.secret, tg, tg)
	log.Info("client", "client", tg.client, "secret", *tg.client.secret, "value", *tg.client)
	st, _ := json.Marshal(tg.Status())
	for what, text := range map[string]string{"formatted": printed.String(), "log": logBuf.String(), "status": string(st)} {
		if strings.Contains(text, secretText) {
			t.Errorf("the secret shows in the %s output:\n%s", what, text)
		}
	}

	// No secret: no header at all.
	var s2 seen
	plain, err := NewTarget(newServerHandler(t, s2.wrap(&fakeDyups{ups: map[string]string{}})), withDefaults(Options{MaxAttempts: 2}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Sync(context.Background(), upstream.State{"web": web()}); err != nil {
		t.Fatal(err)
	}
	if got := s2.all(); len(got) != 1 || !strings.HasSuffix(got[0], " []") {
		t.Errorf("without a secret the target sent %v", got)
	}
}

func newServerHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}

// TestAPIErrorCarriesTheLuaReason: the Lua module's X-SwallowKeeper-Error
// reaches the error, and so the target's status; hostile header text is
// quoted and cut.
func TestAPIErrorCarriesTheLuaReason(t *testing.T) {
	why := "shared dict full"
	base := newServerHandler(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header()[ErrorHeader] = []string{why}
		w.WriteHeader(500)
		io.WriteString(w, "add server failed")
	}))
	tg, err := NewTarget(base, withDefaults(Options{MaxAttempts: 1}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = tg.Sync(context.Background(), upstream.State{"web": web()})
	want := `POST /upstream/web: 500 "add server failed" (shared dict full)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want it to hold %s", err, want)
	}
	if st := tg.Status(); !strings.Contains(st.LastError, want) {
		t.Errorf("status last_error %q, want it to hold %s", st.LastError, want)
	}
	if Retryable(err) {
		t.Errorf("a full dict is retried like a lock")
	}

	// (Go's client refuses control bytes in a header line outright.)
	why = "\u00e9" + strings.Repeat("y", 300)
	u, err := ParseBaseURL(base)
	if err != nil {
		t.Fatal(err)
	}
	var api *APIError
	if err := NewClient(u, time.Second).Set(context.Background(), web()); !errors.As(err, &api) {
		t.Fatalf("err %v, want an APIError", err)
	}
	if strings.ContainsRune(api.Reason, 0xe9) || len(api.Reason) > 210 {
		t.Errorf("hostile reason kept as %q", api.Reason)
	}
}

// ---------------------------------------------------------------------
// Against a real nginx with the Lua module
// ---------------------------------------------------------------------

// TestTargetSyncsLuaNginxOverUnixSocket: a target unix:/path syncs a real
// nginx whose API listens only on that socket; traffic follows; the drift
// check reads /detail over the socket and finds nothing to repair.
func TestTargetSyncsLuaNginxOverUnixSocket(t *testing.T) {
	ngx := testenv.StartNginx(t, testenv.NginxOptions{APISocket: true})
	b := testenv.StartBackend(t, "b")
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{MaxAttempts: 3, Timeout: 2 * time.Second}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	u := web()
	u.Servers[0].Addr = netip.MustParseAddrPort(b.Addr())
	if err := tg.Sync(context.Background(), upstream.State{"web": u}); err != nil {
		t.Fatalf("sync over %s: %v\n%s", ngx.APIURL(), err, ngx.ErrorLog())
	}
	if seen, failed := testenv.Route(ngx.ProxyURL(), "web", 6); failed > 0 || seen["b"] != 6 {
		t.Errorf("traffic after the sync over the socket: %v, %d failed", seen, failed)
	}
	body, err := tg.client.DetailBody(context.Background(), nil)
	if err != nil || !strings.Contains(string(body), "server "+b.Addr()+" weight=2") {
		t.Errorf("GET /detail over the socket: %v\n%s", err, body)
	}
}

// TestTargetSecretAgainstLuaNginx: against an nginx with secret_file, a
// target without the secret is refused (403, nothing changes) and one with
// it syncs; the secret never reaches the target's log or status.
func TestTargetSecretAgainstLuaNginx(t *testing.T) {
	const secretText = "lua-nginx-shared-secret-42"
	path := filepath.Join(t.TempDir(), "api.secret")
	if err := os.WriteFile(path, []byte(secretText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ngx := testenv.StartNginx(t, testenv.NginxOptions{Init: fmt.Sprintf("secret_file = %q,", path)})

	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt := Options{MaxAttempts: 2, Timeout: 2 * time.Second, RetryBase: time.Millisecond}
	without, err := NewTarget(ngx.APIURL(), withDefaults(opt), log, NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = without.Sync(context.Background(), upstream.State{"web": web()})
	if err == nil || !strings.Contains(err.Error(), `POST /upstream/web: 403 "forbidden"`) {
		t.Errorf("sync without the secret: %v, want 403 forbidden", err)
	}
	wrong, _ := NewTarget(ngx.APIURL(), withDefaults(opt), log, NewMetrics(nil))
	wrong.UseSecret("not-the-secret")
	if err := wrong.Sync(context.Background(), upstream.State{"web": web()}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("sync with a wrong secret: %v, want 403", err)
	}
	if code, list := apiGetWithSecret(t, ngx, secretText, "/list"); code != 204 {
		t.Errorf("after the refused syncs nginx lists %d %q, want nothing (204)", code, list)
	}

	with, _ := NewTarget(ngx.APIURL(), withDefaults(opt), log, NewMetrics(nil))
	with.UseSecret(secretText)
	if err := with.Sync(context.Background(), upstream.State{"web": web()}); err != nil {
		t.Fatalf("sync with the secret: %v", err)
	}
	if _, err := with.client.DetailBody(context.Background(), nil); err != nil {
		t.Errorf("GET /detail with the secret: %v", err)
	}
	if code, list := apiGetWithSecret(t, ngx, secretText, "/list"); code != 200 || list != "web\n" {
		t.Errorf("after the sync nginx lists %d %q, want web", code, list)
	}

	var st bytes.Buffer
	for _, tg := range []*Target{without, wrong, with} {
		_ = json.NewEncoder(&st).Encode(tg.Status())
	}
	for what, text := range map[string]string{"log": logBuf.String(), "status": st.String(), "nginx error.log": ngx.ErrorLog()} {
		if strings.Contains(text, secretText) {
			t.Errorf("the secret shows in the %s:\n%s", what, text)
		}
	}
}

func apiGetWithSecret(t *testing.T, ngx *testenv.Nginx, secretText, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", ngx.APIURL()+path, nil)
	req.Header.Set(SecretHeader, secretText)
	resp, err := ngx.APIClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTargetReportsFullSharedDict: when nginx's lua_shared_dict is full,
// the target's error and status say so (the POST answer alone is dyups'
// "add server failed"), and what nginx held stays.
func TestTargetReportsFullSharedDict(t *testing.T) {
	ngx := testenv.StartNginx(t, testenv.NginxOptions{DictSize: "64k"})
	tg, err := NewTarget(ngx.APIURL(), withDefaults(Options{MaxAttempts: 1, Timeout: 2 * time.Second}), discard(), NewMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	st := upstream.State{}
	for i := range 40 {
		u := upstream.Upstream{Name: fmt.Sprintf("svc%02d", i)}
		for j := range 20 {
			u.Servers = append(u.Servers, upstream.Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, byte(j + 1)}), 80),
				Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second})
		}
		st[u.Name] = u
	}
	err = tg.Sync(context.Background(), st)
	if err == nil || !strings.Contains(err.Error(), `500 "add server failed" (shared dict full)`) {
		t.Fatalf("sync of 40 x 20 servers into a 64k dict: %v, want a full dict reported", err)
	}
	if s := tg.Status(); s.InSync || !strings.Contains(s.LastError, "(shared dict full)") {
		t.Errorf("status in_sync=%v last_error=%q, want the full dict", s.InSync, s.LastError)
	}
	if s := tg.Status(); s.Upstreams == 0 {
		t.Errorf("no upstream acknowledged: the test did not fill the dict")
	}
}
