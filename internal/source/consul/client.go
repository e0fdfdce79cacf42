package consul

import (
	"cmp"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/net/http2"

	"github.com/swallowkeeper/swallowkeeper/internal/readbuf"
)

// MaxConns is the most connections the source opens to the agent: two long
// polls, and reads beside them.
const MaxConns = 4

// Client is a Consul API client, plus what the source needs to read two
// endpoints as raw bytes: /v1/health/state/any, whose answer holds every
// check of the datacenter and which the source compares with the previous
// answer by block hashes instead of decoding it (see checkList), and
// /v1/health/service/<name>, read on every change and decoded only as far
// as the source needs (readService). Everything else goes through the api
// package.
type Client struct {
	*api.Client
	cfg api.Config // as api.NewClient completed it: scheme, address, token, HTTP client
}

// NewClient returns a Consul API client for the source in watch mode
// watch (WatchCatalog when empty). With WatchCatalog its transport opens
// at most MaxConns connections to the agent.
//
// With WatchPerService over https it speaks HTTP/2 only, with a transport
// that dials a new connection only when the others carry as many long
// polls as the agent allows on one (250 for Consul): net/http's own
// HTTP/2 support dials one connection per request waiting when they are
// all full, which made 151 connections for 1,000 long polls (and an agent
// refuses more than limits.http_max_conns_per_client, 200 by default,
// from one address). Over plain http each long poll holds a connection.
func NewClient(cfg *api.Config, watch string) (*Client, error) {
	if cfg.Transport == nil {
		cfg.Transport = api.DefaultConfig().Transport
	}
	maxConns := MaxConnsFor(watch)
	cfg.Transport.MaxConnsPerHost = maxConns
	cfg.Transport.MaxIdleConnsPerHost = max(maxConns, MaxConns)
	c, err := api.NewClient(cfg) // fills in cfg: the scheme, the token file's token, the HTTP client
	if err != nil {
		return nil, err
	}
	if watch == WatchPerService && cfg.Scheme == "https" {
		// cfg.HttpClient is the client c uses: its transport, with the TLS
		// settings api.NewClient applied, becomes an HTTP/2 one.
		t1, ok := cfg.HttpClient.Transport.(*http.Transport)
		if !ok {
			return nil, fmt.Errorf("consul: per_service over https: unexpected transport %T", cfg.HttpClient.Transport)
		}
		tlsConf := t1.TLSClientConfig
		if tlsConf != nil {
			tlsConf = tlsConf.Clone()
		}
		h2 := &http2.Transport{
			TLSClientConfig:    tlsConf,
			DisableCompression: t1.DisableCompression,
			// A connection quiet for this long is pinged; one that does not
			// answer within PingTimeout is closed and its long polls fail
			// (and retry), rather than waiting out their wait time on a
			// dead connection.
			ReadIdleTimeout: 30 * time.Second,
			PingTimeout:     10 * time.Second,
			// Connections a SIGHUP's new client no longer uses close.
			IdleConnTimeout: t1.IdleConnTimeout,
		}
		dial := t1.DialContext // the api package's dialer, with its timeouts
		if dial == nil {
			dial = (&net.Dialer{Timeout: 30 * time.Second}).DialContext
		}
		handshake := cmp.Or(t1.TLSHandshakeTimeout, 10*time.Second)
		h2.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// One dial serves every long poll waiting for a connection: a
			// peer that stalls the handshake must not hold them all.
			hctx, cancel := context.WithTimeout(ctx, handshake)
			defer cancel()
			// Offer HTTP/1.1 too: an endpoint that speaks only that then
			// completes the handshake and is named below, rather than
			// refusing it with "no application protocol".
			cfg = cfg.Clone()
			cfg.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
			conn := tls.Client(raw, cfg)
			if err := conn.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, err
			}
			if p := conn.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
				conn.Close()
				return nil, fmt.Errorf("%s speaks %q, not HTTP/2 (h2), over TLS: consul.watch: per_service over https needs the agent's own https port, not a proxy that speaks HTTP/1.1 only; or use consul.watch: catalog", addr, p)
			}
			return conn, nil
		}
		cfg.HttpClient.Transport = h2
	}
	return &Client{Client: c, cfg: *cfg}, nil
}

// getRaw runs a (blocking) GET of path as the api package would, and
// returns the body unparsed, read into the buffer that buffer returns
// (grown when too small; nil buffer: a new one). buffer is called once the
// answer has come; it should hand out the buffer of an answer no longer
// needed, so that megabytes are not allocated and cleared on every change.
func (c *Client) getRaw(ctx context.Context, path string, q *api.QueryOptions, buffer func() []byte) ([]byte, *api.QueryMeta, error) {
	params := url.Values{}
	if c.cfg.Datacenter != "" {
		params.Set("dc", c.cfg.Datacenter)
	}
	if c.cfg.Namespace != "" {
		params.Set("ns", c.cfg.Namespace)
	}
	if c.cfg.Partition != "" {
		params.Set("partition", c.cfg.Partition)
	}
	if q.WaitIndex != 0 {
		params.Set("index", strconv.FormatUint(q.WaitIndex, 10))
	}
	if q.WaitTime > 0 {
		params.Set("wait", fmt.Sprintf("%dms", q.WaitTime.Milliseconds()))
	}
	host := c.cfg.Address
	if strings.HasPrefix(host, "/") { // a unix socket: the transport dials it, the URL needs a host
		host = "localhost"
	}
	u := url.URL{Scheme: c.cfg.Scheme, Host: host, Path: c.cfg.PathPrefix + path, RawQuery: params.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header = c.Headers()
	if c.cfg.Token != "" {
		req.Header.Set("X-Consul-Token", c.cfg.Token)
	}
	if c.cfg.HttpAuth != nil {
		req.SetBasicAuth(c.cfg.HttpAuth.Username, c.cfg.HttpAuth.Password)
	}
	// Uncompressed: the agent is normally on the same host, and gzip of
	// megabytes on every change costs the agent far more CPU than the bytes
	// cost on loopback or a LAN.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.cfg.HttpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		// Read a little more, so that an HTTP/1.1 connection can be used
		// again; an error page larger than that costs a new connection.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, nil, fmt.Errorf("unexpected response code: %d (%s)", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	meta := &api.QueryMeta{
		KnownLeader:           resp.Header.Get("X-Consul-KnownLeader") == "true",
		ResultsFilteredByACLs: resp.Header.Get("X-Consul-Results-Filtered-By-ACLs") == "true",
	}
	switch b := resp.Header.Get("X-Consul-Query-Backend"); b {
	case api.QueryBackendStreaming, api.QueryBackendBlockingQuery:
		meta.QueryBackend = b // as the api package sets it
	}
	if s := resp.Header.Get("X-Consul-Index"); s != "" {
		if meta.LastIndex, err = strconv.ParseUint(s, 10, 64); err != nil {
			return nil, nil, fmt.Errorf("bad X-Consul-Index %q: %w", s, err)
		}
	}
	// The buffer is taken only now that an answer has come: a blocking
	// query waits minutes for one, and a buffer taken before it would sit
	// idle all that time, beside the answer the caller still holds.
	var buf []byte
	if buffer != nil {
		buf = buffer()
	}
	var r io.Reader = resp.Body
	n := resp.ContentLength
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		// Asked for identity, yet compressed: a proxy between the daemon
		// and the agent that compresses whatever it is asked. Read it
		// rather than fail on every answer.
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, nil, fmt.Errorf("read gzip body: %w", err)
		}
		r, n = zr, -1
	}
	body, err := readbuf.Sized(r, n, maxPresize, buf)
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	return body, meta, nil
}

// maxPresize bounds the buffer a Content-Length header alone can make the
// source allocate; a longer answer still reads, growing as it comes.
const maxPresize = 256 << 20
