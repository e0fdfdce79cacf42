package bench

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// countingProxy forwards TCP connections to one address and counts the
// bytes each way, the connections open, and the HTTP requests by path (from
// the request lines of the client's stream): what the Consul server serves
// a fleet of daemons, seen from the wire.
type countingProxy struct {
	ln     net.Listener
	target string
	// opaque: the stream is not HTTP/1 text (TLS): copied as it comes,
	// counted in bytes only, no requests by path.
	opaque bool

	served, requested atomic.Int64 // target → clients, clients → target
	open, most        atomic.Int64

	mu    sync.Mutex
	paths map[string]int
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// newCountingProxy listens on a free loopback port and forwards to target.
func newCountingProxy(target string, opaque bool) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, target: target, opaque: opaque, paths: map[string]int{}, conns: map[net.Conn]bool{}}
	p.wg.Go(func() { loopback.ServeEach(ln, &p.wg, p.serve) })
	return p, nil
}

// Addr is the proxy's host:port.
func (p *countingProxy) Addr() string { return p.ln.Addr().String() }

func (p *countingProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *countingProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	p.track(c, true)
	p.track(s, true)
	defer p.track(c, false)
	defer p.track(s, false)
	if n := p.open.Add(1); n > p.most.Load() {
		p.most.Store(n) // a racing lower store is off by one at most: good enough for a peak
	}
	defer p.open.Add(-1)
	done := make(chan struct{})
	go func() {
		io.Copy(countWriter{c, &p.served}, s)
		c.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	p.copyRequests(s, c)
	s.(*net.TCPConn).CloseWrite()
	<-done
}

// copyRequests copies the client's stream to the target line by line,
// counting the bytes and the request lines.
func (p *countingProxy) copyRequests(dst io.Writer, src io.Reader) {
	if p.opaque {
		// Reading up to a line end would hold a TLS handshake, which has
		// none, until the client gave up.
		io.Copy(countWriter{dst, &p.requested}, src)
		return
	}
	br := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if method, path, ok := requestLine(line); ok {
				p.mu.Lock()
				p.paths[method+" "+path]++
				p.mu.Unlock()
			}
			if _, werr := dst.Write(line); werr != nil {
				return
			}
			p.requested.Add(int64(len(line)))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// namedPaths end in a service's (or a key's) name, which requestLine
// replaces with {name}, so that reads of many services count together.
var namedPaths = []string{"/v1/health/service/", "/v1/catalog/service/", "/v1/health/checks/", "/v1/health/connect/", "/v1/kv/"}

// requestLine recognises an HTTP/1 request line and returns its method and
// its path with the names of its query parameters (values dropped, names
// sorted), and {name} for the name ending a per-service path:
// "GET /v1/health/state/any?index&stale", "GET /v1/health/service/{name}".
func requestLine(line []byte) (method, path string, ok bool) {
	s := strings.TrimRight(string(line), "\r\n")
	f := strings.Fields(s)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1.") {
		return "", "", false
	}
	switch f[0] {
	case "GET", "PUT", "POST", "DELETE", "HEAD":
	default:
		return "", "", false
	}
	u, err := url.ParseRequestURI(f[1])
	if err != nil {
		return "", "", false
	}
	keys := make([]string, 0, len(u.Query()))
	for k := range u.Query() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	path = u.Path
	for _, prefix := range namedPaths {
		if strings.HasPrefix(path, prefix) && len(path) > len(prefix) {
			path = prefix + "{name}"
			break
		}
	}
	if len(keys) > 0 {
		path += "?" + strings.Join(keys, "&")
	}
	return f[0], path, true
}

// countWriter counts what it writes, as it goes: a long blocking answer
// counts when its bytes pass, not when the connection ends.
type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (cw countWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n.Add(int64(n))
	return n, err
}

// counters is a snapshot of the proxy's counts.
type counters struct {
	served, requested int64
	paths             map[string]int
}

func (p *countingProxy) snapshot() counters {
	p.mu.Lock()
	defer p.mu.Unlock()
	paths := make(map[string]int, len(p.paths))
	for k, v := range p.paths {
		paths[k] = v
	}
	return counters{served: p.served.Load(), requested: p.requested.Load(), paths: paths}
}

// since is what was counted between an earlier snapshot and c.
func (c counters) since(before counters) counters {
	d := counters{served: c.served - before.served, requested: c.requested - before.requested, paths: map[string]int{}}
	for k, v := range c.paths {
		if n := v - before.paths[k]; n > 0 {
			d.paths[k] = n
		}
	}
	return d
}

func (c counters) requests() int64 {
	var n int64
	for _, v := range c.paths {
		n += int64(v)
	}
	return n
}

// resetMost starts a new peak of open connections from the current count.
func (p *countingProxy) resetMost() { p.most.Store(p.open.Load()) }

// Close stops accepting, closes every connection and waits for them.
func (p *countingProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
