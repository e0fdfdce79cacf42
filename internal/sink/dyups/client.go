// Package dyups pushes upstreams into nginx memory through the dyups REST
// API (tengine, nginx with ngx_http_dyups_module, and SwallowKeeper's Lua
// module for stock nginx). The status codes and bodies it understands are
// the ones docs/DYUPS-API.md records, observed on a real dyups build.
package dyups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/swallowkeeper/swallowkeeper/internal/readbuf"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Client talks to one dyups interface.
type Client struct {
	base *url.URL // what requests are built on: http://localhost for a unix socket
	unix bool     // base reaches a unix socket; errors then show paths only
	hc   *http.Client
	// probe opens a new connection per request: each API call is served by
	// one nginx worker, and a kept-alive connection would ask the same
	// worker every time.
	probe *http.Client
	// secret, when set, goes in SecretHeader on every request. A pointer,
	// so that printing a Client shows an address, never the secret (fmt
	// does not call the methods of unexported fields).
	secret *secret
}

// SecretHeader carries the shared secret of a target
// (targets[].secret_file; the Lua module's secret_file init option).
const SecretHeader = "X-SwallowKeeper-Secret"

// ErrorHeader is how the Lua module says why it refused a write where
// dyups' body cannot ("add server failed" covers every refusal), e.g.
// "shared dict full".
const ErrorHeader = "X-SwallowKeeper-Error"

// secret is a shared secret that never prints: not with %v, %s, %#v, nor
// as a log value. Its one use is the request header.
type secret string

const redacted = "<redacted>"

func (secret) String() string                { return redacted }
func (secret) GoString() string              { return redacted }
func (secret) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (secret) Format(f fmt.State, verb rune) { fmt.Fprint(f, redacted) }

// UseSecret makes every request of the client carry s in SecretHeader.
// Call it before the client is used.
func (c *Client) UseSecret(s string) {
	v := secret(s)
	c.secret = &v
}

// UseSecret makes every request of the target carry s in SecretHeader (the
// Lua module then answers 403 to any request without it). Call it before
// Run or Sync.
func (t *Target) UseSecret(s string) { t.client.UseSecret(s) }

// unixSocketMax is the longest path a unix socket address holds on Linux
// (sun_path is 108 bytes with its terminating NUL).
const unixSocketMax = 107

// ParseBaseURL checks a target URL: http://host:port, https://host:port,
// or a unix socket, unix:/path (also written unix:///path), returned as
// the URL unix:/path. dyups matches the first path segment of the request
// URI (/upstream, /list, /detail), so the interface must be served at the
// root of its location: a base URL with a path would make every call "not
// support this api".
func ParseBaseURL(raw string) (*url.URL, error) {
	if rest, ok := strings.CutPrefix(raw, "unix:"); ok {
		return parseUnix(raw, rest)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("dyups target %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("dyups target %q: want http://host:port, https://host:port or unix:/path/to/socket", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("dyups target %q: no host", raw)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("dyups target %q: want only scheme://host:port (dyups serves /upstream/NAME at the root)", raw)
	}
	u.Path = ""
	return u, nil
}

// parseUnix checks the path of a unix: target (rest is raw without
// "unix:").
func parseUnix(raw, rest string) (*url.URL, error) {
	const want = "want unix:/absolute/path/to/socket, e.g. unix:/run/swallowkeeper/dyups.sock"
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		// unix:///path: an empty authority, then the path.
		if !strings.HasPrefix(after, "/") {
			return nil, fmt.Errorf("dyups target %q: a unix socket has no host (%s)", raw, want)
		}
		rest = after
	}
	switch {
	case rest == "":
		return nil, fmt.Errorf("dyups target %q: no socket path (%s)", raw, want)
	case !strings.HasPrefix(rest, "/"):
		return nil, fmt.Errorf("dyups target %q: the socket path must be absolute (%s)", raw, want)
	case strings.ContainsFunc(rest, unicode.IsControl):
		return nil, fmt.Errorf("dyups target %q: the socket path holds a control character", raw)
	case len(rest) > unixSocketMax:
		return nil, fmt.Errorf("dyups target %q: socket path longer than %d bytes", raw, unixSocketMax)
	case path.Clean(rest) != rest:
		return nil, fmt.Errorf("dyups target %q: write the socket path as %s", raw, path.Clean(rest))
	}
	return &url.URL{Scheme: "unix", Opaque: rest}, nil
}

// NewClient returns a client for the dyups interface at base (as
// ParseBaseURL returns it), with a per request timeout. A unix: base is
// reached over its socket, with requests for http://localhost/.
func NewClient(base *url.URL, timeout time.Duration) *Client {
	tr, reqBase := Transport(base, timeout)
	c := &Client{base: reqBase, unix: base.Scheme == "unix"}
	probeTr := tr.Clone()
	probeTr.DisableKeepAlives = true
	c.hc = &http.Client{Transport: tr, Timeout: timeout}
	c.probe = &http.Client{Transport: probeTr, Timeout: timeout}
	return c
}

// Transport is the HTTP transport for the dyups interface at base (as
// ParseBaseURL returns it), and the URL requests are built on: base
// itself, or http://localhost for a unix: base, reached over its socket.
// The split sink (internal/sink/splits) talks to the same API through it.
func Transport(base *url.URL, timeout time.Duration) (*http.Transport, *url.URL) {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	reqBase := base
	if base.Scheme == "unix" {
		sock := base.Opaque
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		reqBase = &url.URL{Scheme: "http", Host: "localhost"}
	}
	return &http.Transport{
		Proxy:               nil, // the API is on loopback or a private network, never through a proxy
		DialContext:         dial,
		MaxIdleConnsPerHost: 2,
		MaxConnsPerHost:     4,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}, reqBase
}

// newRequest builds a request for path under the base, with the secret.
// It also returns how errors name the request: the URL, or for a unix
// socket (whose path the target's errors already show) the path only.
func (c *Client) newRequest(ctx context.Context, method string, u *url.URL, body io.Reader) (*http.Request, string, error) {
	where := u.String()
	if c.unix {
		where = "/" + strings.TrimPrefix(u.Path, "/")
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, where, fmt.Errorf("%s %s: %w", method, where, err)
	}
	if c.secret != nil && *c.secret != "" {
		req.Header.Set(SecretHeader, string(*c.secret))
	}
	return req, where, nil
}

// transportError drops, for a unix socket, the *url.Error around err: it
// would name http://localhost/..., which is not where the request went
// (the dial error inside names the socket).
func (c *Client) transportError(err error) error {
	// The caller names the method and the target already: url.Error would
	// say both again (`POST …: Post "…": dial …`), and for a unix socket
	// it names http://localhost.
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// DetailBody reads GET /detail unparsed into buf (emptied and grown as
// needed; an empty body when nginx has no upstreams: 204), over a new
// connection, so that successive calls can land on different workers.
// Drift checks pass the buffer of their last read: the answer is about 85
// bytes per server and each drift check reads it several times, so that
// reading it into fresh memory each time would make allocation and page
// faults most of an idle daemon's CPU.
func (c *Client) DetailBody(ctx context.Context, buf []byte) ([]byte, error) {
	req, where, err := c.newRequest(ctx, http.MethodGet, c.base.JoinPath("detail"), nil)
	if err != nil {
		return buf[:0], err
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return buf[:0], fmt.Errorf("GET %s: %w", where, c.transportError(err))
	}
	defer resp.Body.Close()
	body, err := readbuf.Sized(io.LimitReader(resp.Body, maxDetail), resp.ContentLength, maxDetail, buf)
	if err != nil {
		return body[:0], fmt.Errorf("GET %s: read answer: %w", where, err)
	}
	switch resp.StatusCode {
	case http.StatusNoContent:
		return body[:0], nil
	case http.StatusOK:
		return body, nil
	default:
		return body[:0], &APIError{Op: "GET", Name: "/detail", Status: resp.StatusCode, Body: string(body),
			Reason: reason(resp.Header), Retry: transient(resp.StatusCode)}
	}
}

// maxDetail bounds what a /detail read takes in (about 75 times the
// answer for 10,000 servers).
const maxDetail = 64 << 20

// APIError is an answer from the dyups interface that is not a success.
type APIError struct {
	Op     string // POST or DELETE
	Name   string
	Status int
	Body   string
	// Reason is the Lua module's ErrorHeader, e.g. "shared dict full";
	// "" from real dyups.
	Reason string
	// Retry says whether the same request may succeed later: a lock (409)
	// or a proxy in front of nginx failing (502, 503, 504). A refused body
	// (500) or a wrong URL (404, 405) will not.
	Retry bool
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s /upstream/%s: %d %q", e.Op, e.Name, e.Status, strings.TrimSpace(e.Body))
	if e.Reason != "" {
		msg += " (" + e.Reason + ")"
	}
	return msg
}

// reason reads ErrorHeader, quoted when it is not plain printable text.
func reason(h http.Header) string {
	r := h.Get(ErrorHeader)
	if len(r) > 200 {
		r = r[:200]
	}
	for _, c := range r {
		if c < 0x20 || c > 0x7e {
			return strconv.QuoteToASCII(r)
		}
	}
	return r
}

// Retryable reports whether err is worth retrying with the same request:
// transport errors and timeouts are, and so are APIErrors that say so.
func Retryable(err error) bool {
	var api *APIError
	if errors.As(err, &api) {
		return api.Retry
	}
	return err != nil && !errors.Is(err, context.Canceled)
}

// Set replaces the upstream with body: the inside of the upstream block,
// exactly as the persisted file has it.
func (c *Client) Set(ctx context.Context, u upstream.Upstream) error {
	status, body, why, err := c.do(ctx, http.MethodPost, u.Name, u.Body())
	if err != nil {
		return err
	}
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusConflict: // dyups_trylock on: another worker holds the lock
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body, Reason: why, Retry: true}
	case http.StatusInternalServerError: // "add server failed": the body was refused; nginx keeps the old upstream
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body, Reason: why}
	default:
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body, Reason: why, Retry: transient(status)}
	}
}

// Delete removes the upstream. An upstream that is already gone counts as
// deleted.
func (c *Client) Delete(ctx context.Context, name string) error {
	status, body, why, err := c.do(ctx, http.MethodDelete, name, "")
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
		return nil
	case status == http.StatusNotFound && strings.HasPrefix(body, "not found uptream"): // sic, dyups' spelling
		return nil
	case status == http.StatusConflict:
		return &APIError{Op: "DELETE", Name: name, Status: status, Body: body, Reason: why, Retry: true}
	default:
		return &APIError{Op: "DELETE", Name: name, Status: status, Body: body, Reason: why, Retry: transient(status)}
	}
}

func transient(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// do sends one request and returns the status, the body and the Lua
// module's ErrorHeader.
func (c *Client) do(ctx context.Context, method, name, body string) (int, string, string, error) {
	u := c.base.JoinPath("upstream", name) // name passed ValidName: no escaping needed, none possible
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body) // always sent with Content-Length: no length means 204 and nothing done
	}
	req, where, err := c.newRequest(ctx, method, u, rd)
	if err != nil {
		return 0, "", "", err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", "", fmt.Errorf("%s %s: %w", method, where, c.transportError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, "", "", fmt.Errorf("%s %s: read answer: %w", method, where, err)
	}
	return resp.StatusCode, string(b), reason(resp.Header), nil
}
