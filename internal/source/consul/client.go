package consul

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// MaxConns is the most connections the source opens to the agent: two long
// polls, and reads beside them.
const MaxConns = 4

// Client is a Consul API client, plus what the source needs to read one
// endpoint as raw bytes: /v1/health/state/any, whose answer holds every
// check of the datacenter and which the source compares with the previous
// answer by block hashes instead of decoding it (see checkList). Everything
// else goes through the api package.
type Client struct {
	*api.Client
	cfg api.Config // as api.NewClient completed it: scheme, address, token, HTTP client
}

// NewClient returns a Consul API client whose transport opens at most
// MaxConns connections to the agent.
func NewClient(cfg *api.Config) (*Client, error) {
	if cfg.Transport == nil {
		cfg.Transport = api.DefaultConfig().Transport
	}
	cfg.Transport.MaxConnsPerHost = MaxConns
	cfg.Transport.MaxIdleConnsPerHost = MaxConns
	c, err := api.NewClient(cfg) // fills in cfg: the scheme, the token file's token, the HTTP client
	if err != nil {
		return nil, err
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
		return nil, nil, fmt.Errorf("unexpected response code: %d (%s)", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	meta := &api.QueryMeta{
		KnownLeader:           resp.Header.Get("X-Consul-KnownLeader") == "true",
		ResultsFilteredByACLs: resp.Header.Get("X-Consul-Results-Filtered-By-ACLs") == "true",
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
	if n := resp.ContentLength; n > int64(cap(buf)) && n <= maxPresize {
		buf = make([]byte, 0, n)
	}
	body, err := readInto(resp.Body, buf[:0])
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	return body, meta, nil
}

// maxPresize bounds the buffer a Content-Length header alone can make the
// source allocate; a longer answer still reads, growing as it comes.
const maxPresize = 256 << 20

// readInto appends all of r to buf, growing it by half when full.
func readInto(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			// Full: the answer may also be complete, as when a reused
			// buffer is exactly its size; look before growing (and
			// copying) megabytes.
			var probe [512]byte
			n, err := r.Read(probe[:])
			if n == 0 && err == io.EOF {
				return buf, nil
			}
			buf = append(slices.Grow(buf, max(cap(buf)/2, 64<<10)), probe[:n]...)
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return buf, err
			}
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
