// Package dyups pushes upstreams into nginx memory through the dyups REST
// API (tengine, nginx with ngx_http_dyups_module, and SwallowKeeper's Lua
// module for stock nginx). The status codes and bodies it understands are
// the ones in shared/DYUPS-API.md, observed on a real nginx.
package dyups

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Client talks to one dyups interface.
type Client struct {
	base *url.URL
	hc   *http.Client
	// probe opens a new connection per request: each API call is served by
	// one nginx worker, and a kept-alive connection would ask the same
	// worker every time.
	probe *http.Client
}

// ParseBaseURL checks a target URL. dyups matches the first path segment of
// the request URI (/upstream, /list, /detail), so the interface must be
// served at the root of its location: a base URL with a path would make
// every call "not support this api".
func ParseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("dyups target %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("dyups target %q: scheme must be http or https", raw)
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

// NewClient returns a client for the dyups interface at base, with a per
// request timeout.
func NewClient(base *url.URL, timeout time.Duration) *Client {
	tr := &http.Transport{
		Proxy:               nil, // the API is on loopback or a private network, never through a proxy
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		MaxConnsPerHost:     4,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	probeTr := tr.Clone()
	probeTr.DisableKeepAlives = true
	return &Client{
		base:  base,
		hc:    &http.Client{Transport: tr, Timeout: timeout},
		probe: &http.Client{Transport: probeTr, Timeout: timeout},
	}
}

// DetailBody reads GET /detail unparsed into buf (emptied and grown as
// needed; an empty body when nginx has no upstreams: 204), over a new
// connection, so that successive calls can land on different workers.
// Drift checks pass the buffer of their last read: at 10,000 servers the
// answer is 0.85 MB, and allocating it afresh on every read (three every
// few seconds) was the largest part of the daemon's idle CPU, most of it
// page faults on fresh memory.
func (c *Client) DetailBody(ctx context.Context, buf []byte) ([]byte, error) {
	u := c.base.JoinPath("detail")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return buf[:0], err
	}
	resp, err := c.probe.Do(req)
	if err != nil {
		return buf[:0], fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	b := bytes.NewBuffer(buf[:0])
	if _, err := b.ReadFrom(io.LimitReader(resp.Body, maxDetail)); err != nil {
		return b.Bytes()[:0], fmt.Errorf("GET %s: read answer: %w", u, err)
	}
	switch resp.StatusCode {
	case http.StatusNoContent:
		return b.Bytes()[:0], nil
	case http.StatusOK:
		return b.Bytes(), nil
	default:
		return b.Bytes()[:0], &APIError{Op: "GET", Name: "/detail", Status: resp.StatusCode, Body: b.String(), Retry: transient(resp.StatusCode)}
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
	// Retry says whether the same request may succeed later: a lock (409)
	// or a proxy in front of nginx failing (502, 503, 504). A refused body
	// (500) or a wrong URL (404, 405) will not.
	Retry bool
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s /upstream/%s: %d %q", e.Op, e.Name, e.Status, strings.TrimSpace(e.Body))
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
	status, body, err := c.do(ctx, http.MethodPost, u.Name, u.Body())
	if err != nil {
		return err
	}
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusConflict: // dyups_trylock on: another worker holds the lock
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body, Retry: true}
	case http.StatusInternalServerError: // "add server failed": the body was refused; nginx keeps the old upstream
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body}
	default:
		return &APIError{Op: "POST", Name: u.Name, Status: status, Body: body, Retry: transient(status)}
	}
}

// Delete removes the upstream. An upstream that is already gone counts as
// deleted.
func (c *Client) Delete(ctx context.Context, name string) error {
	status, body, err := c.do(ctx, http.MethodDelete, name, "")
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
		return nil
	case status == http.StatusNotFound && strings.HasPrefix(body, "not found uptream"): // sic, dyups' spelling
		return nil
	case status == http.StatusConflict:
		return &APIError{Op: "DELETE", Name: name, Status: status, Body: body, Retry: true}
	default:
		return &APIError{Op: "DELETE", Name: name, Status: status, Body: body, Retry: transient(status)}
	}
}

func transient(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

func (c *Client) do(ctx context.Context, method, name, body string) (int, string, error) {
	u := c.base.JoinPath("upstream", name) // name passed ValidName: no escaping needed, none possible
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body) // always sent with Content-Length: no length means 204 and nothing done
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, u, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	return resp.StatusCode, string(b), nil
}
