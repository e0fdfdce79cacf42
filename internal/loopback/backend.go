// Package loopback holds what the demo and the benchmark both run on
// loopback: the backend servers that stand for upstream instances, and
// where the stack's programs (Consul, nginx, the daemon) are.
package loopback

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Host is the address every Backend listens on.
const Host = "127.0.0.1"

// Backend is a real HTTP server that answers its instance id on / (reading
// any request body first) and "ok" on /health for a registry's HTTP check,
// or 503 while unhealthy.
type Backend struct {
	ID   string
	Port int

	healthy atomic.Bool
	served  atomic.Int64 // requests to / (not /health)
	last    atomic.Int64 // unix nanoseconds of the last request to /

	mu  sync.Mutex
	srv *http.Server
}

// NewBackend starts a healthy backend with the given id on a free port.
func NewBackend(id string) (*Backend, error) {
	b := &Backend{ID: id}
	b.healthy.Store(true)
	return b, b.Start()
}

// Addr is host:port.
func (b *Backend) Addr() string { return net.JoinHostPort(Host, strconv.Itoa(b.Port)) }

// SetHealthy sets what /health answers: 200 or 503.
func (b *Backend) SetHealthy(ok bool) { b.healthy.Store(ok) }

// Start (re)starts serving, on the same port after a stop.
func (b *Backend) Start() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(Host, strconv.Itoa(b.Port)))
	if err != nil {
		return err
	}
	b.Port = ln.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if !b.healthy.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.served.Add(1)
		b.last.Store(time.Now().UnixNano())
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, b.ID)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(ln)
	return nil
}

// Stop shuts down gracefully: no new connections, in-flight requests
// finish.
func (b *Backend) Stop() {
	if srv := b.take(); srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
}

// Crash closes the listener and every connection at once, requests in
// flight included: what the kernel does when the process is SIGKILLed.
func (b *Backend) Crash() {
	if srv := b.take(); srv != nil {
		srv.Close()
	}
}

// take hands over the running server, if any, so that one caller stops it.
func (b *Backend) take() *http.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	srv := b.srv
	b.srv = nil
	return srv
}

// Served is how many requests to / it has answered.
func (b *Backend) Served() int64 { return b.served.Load() }

// LastRequest is when it last received a request to /.
func (b *Backend) LastRequest() time.Time { return time.Unix(0, b.last.Load()) }

// ServeEach accepts connections on l until it is closed, serving each in
// a goroutine of wg: the accept loop of the proxies that tests and the
// bench put between the daemon and a registry.
func ServeEach(l net.Listener, wg *sync.WaitGroup, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { serve(c) })
	}
}
