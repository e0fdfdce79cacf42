// Package httpapi is the daemon's own HTTP listener (metrics.listen):
// /metrics, /healthz, /readyz, /status, the status page and pprof, and the
// client side of /status that `swallowkeeper status` prints. It reports on
// the engine, its sinks and its sources without knowing any kind of sink:
// each sink's engine.SinkStatus says how it stands and whether the daemon
// is ready.
package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/statuspage"
)

// Daemon is what the listener serves and reports on.
type Daemon struct {
	Version string
	File    string // the persisted file, named on the status page
	Engine  *engine.Engine
	Sources []Source
	Metrics *prometheus.Registry // served on /metrics
	// Pprof serves /debug/pprof/; AllowedHosts are the host names, besides
	// IP literals and localhost, that the guarded routes answer.
	Pprof        bool
	AllowedHosts []string
}

// Source is a registry source with the name /status shows for it.
type Source struct {
	Name   string
	Source engine.Source
}

// What the listener serves, and to whom:
//   - /metrics, /healthz, /readyz answer any Host header: scrapers, probes
//     and load balancers often address the daemon by a host name, and these
//     show counters and one line of readiness, nothing an operator's
//     browser holds back.
//   - the status page (/, /status.html), /status and, when metrics.pprof is
//     set, /debug/pprof/ answer only a Host that is an IP literal,
//     localhost, or a name in metrics.allowed_hosts; any other gets 403.
//     This stops DNS rebinding: a page on evil.example whose name is made
//     to resolve to 127.0.0.1 reaches the listener from the operator's
//     browser, but with Host: evil.example, so it cannot read upstreams,
//     registry errors or heap profiles.
//   - every request has a deadline to be read and answered, so a client
//     that trickles bytes cannot hold connections open.

// Listener timeouts. A pprof CPU profile or trace answers only at the end
// of its ?seconds= (default 30); net/http/pprof moves that request's write
// deadline out by the duration itself, so the short WriteTimeout does not
// cut profiles.
const (
	listenerReadHeaderTimeout = 5 * time.Second
	listenerReadTimeout       = 10 * time.Second // requests have no body
	listenerWriteTimeout      = 15 * time.Second
	listenerIdleTimeout       = 60 * time.Second
	listenerMaxHeaderBytes    = 64 << 10
)

// NewServer is the http.Server for metrics.listen, with its deadlines.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: listenerReadHeaderTimeout,
		ReadTimeout:       listenerReadTimeout,
		WriteTimeout:      listenerWriteTimeout,
		IdleTimeout:       listenerIdleTimeout,
		MaxHeaderBytes:    listenerMaxHeaderBytes,
	}
}

// Serve answers on ln until ctx ends, then shuts the server down, giving
// requests in flight 2s.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := NewServer(h)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	srv.Serve(ln)
	<-stopped
}

// Handler routes the daemon's listener.
func Handler(d *Daemon) http.Handler {
	open := http.NewServeMux() // any Host
	open.Handle("/metrics", promhttp.HandlerFor(d.Metrics, promhttp.HandlerOpts{Registry: d.Metrics}))
	open.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	open.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := d.notReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})

	guarded := http.NewServeMux() // only allowed Hosts
	guarded.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(d.statusJSON(true))
	})
	page := statuspage.Handler(func() statuspage.Page { return d.page() })
	guarded.Handle("/{$}", page)
	guarded.Handle("/status.html", page)
	if d.Pprof {
		// Profiles: how an operator finds where a daemon spends its CPU or
		// memory. Off by default: a heap profile holds whatever the
		// daemon holds, and a CPU profile costs CPU while it runs.
		guarded.HandleFunc("/debug/pprof/", pprof.Index) // named profiles: heap, goroutine, allocs, ...
		guarded.HandleFunc("/debug/pprof/profile", pprof.Profile)
		guarded.HandleFunc("/debug/pprof/trace", pprof.Trace)
		guarded.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	allowed := hostAllowList(d.AllowedHosts)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics", "/healthz", "/readyz":
			open.ServeHTTP(w, r)
			return
		}
		if !allowed(r.Host) {
			http.Error(w, "host not allowed: the status page, /status and /debug/pprof/ answer an IP address, "+
				"localhost or a name listed in metrics.allowed_hosts", http.StatusForbidden)
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// hostAllowList returns whether a request's Host header names the daemon
// in a way no DNS answer can forge: an IP literal (v4 or [v6]), localhost,
// or one of names (case-insensitive, trailing dot ignored). The port, if
// any, does not matter. An empty Host is refused.
func hostAllowList(names []string) func(host string) bool {
	set := map[string]bool{"localhost": true}
	for _, n := range names {
		set[normalHost(n)] = true
	}
	return func(host string) bool {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1] // [::1] without a port
		}
		if host == "" {
			return false
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return true
		}
		return set[normalHost(host)]
	}
}

func normalHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }
