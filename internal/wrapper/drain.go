package wrapper

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
)

// drain waits, after deregistering, until nginx no longer routes to the
// instance, and reports how long it waited.
//
// Without DrainURL it waits Drain. With DrainURL it polls
// GET <DrainURL>/upstream/<Upstream> until the instance is provably gone:
// an answer 200 whose server list lacks the instance's address. Anything
// else proves nothing and it keeps polling: a 404 (a wrong -upstream or
// -canary-tag, or an nginx that never had the upstream), a 5xx, a refused
// connection. It gives up after Drain. Once the instance is gone, it waits
// DrainGrace more: the requests nginx sent before the change are still
// running in the app, and real dyups's other workers apply the change up to
// dyups_read_msg_timeout later.
//
// addr is the instance's address as nginx lists it ("" when unknown, e.g.
// Consul filled it in and it could not be read back: then the fixed Drain).
func drain(o Options, addr string, log *slog.Logger) time.Duration {
	start := time.Now()
	if o.DrainURL == "" || addr == "" {
		if o.DrainURL != "" {
			log.Warn("drain: the instance's address in nginx is unknown; waiting the whole -drain", "drain", o.Drain)
		}
		time.Sleep(o.Drain)
		log.Info("drained", "waited", o.Drain)
		return time.Since(start)
	}
	client, url := drainClient(o.DrainURL)
	url += "/upstream/" + o.Upstream
	var last string
	for time.Since(start) < o.Drain {
		state, detail := upstreamLists(client, url, o.DrainSecret, addr)
		if state == absent {
			log.Info("drained: nginx no longer routes to the instance; grace for requests in flight",
				"waited", time.Since(start).Round(time.Millisecond), "grace", o.DrainGrace)
			time.Sleep(o.DrainGrace)
			return time.Since(start)
		}
		if state == unknown && detail != last {
			log.Warn("drain: cannot tell yet whether nginx still routes to the instance; polling on", "url", url, "answer", detail)
		}
		last = detail
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("drain: nginx was not seen without the instance before the drain time ran out; stopping the app anyway",
		"drain", o.Drain, "last_answer", last)
	return time.Since(start)
}

type listing int

const (
	unknown listing = iota // no proof either way
	listed
	absent
)

// upstreamLists asks nginx's dyups API whether the upstream lists addr.
func upstreamLists(client *http.Client, url string, secret config.Secret, addr string) (listing, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return unknown, err.Error()
	}
	if secret != "" {
		req.Header.Set(dyups.SecretHeader, secret.Reveal())
	}
	resp, err := client.Do(req)
	if err != nil {
		return unknown, err.Error()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	switch {
	case err != nil:
		return unknown, err.Error()
	case resp.StatusCode == http.StatusNotFound:
		return unknown, "404: nginx has no such upstream (wrong -upstream or -canary-tag?)"
	case resp.StatusCode == http.StatusForbidden:
		return unknown, "403: the API refused the request (missing or wrong -drain-secret-file?)"
	case resp.StatusCode != http.StatusOK:
		return unknown, fmt.Sprintf("status %d", resp.StatusCode)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "server" && f[1] == addr {
			return listed, "listed"
		}
	}
	return absent, "absent"
}

// drainClient returns a client and the base URL for DrainURL: an
// http(s):// URL, or unix:/path for an API on a unix socket.
func drainClient(drainURL string) (*http.Client, string) {
	tr := &http.Transport{DisableKeepAlives: true}
	base := strings.TrimSuffix(drainURL, "/")
	if path, ok := strings.CutPrefix(drainURL, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://localhost"
	}
	return &http.Client{Timeout: time.Second, Transport: tr}, base
}
