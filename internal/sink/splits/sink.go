// Package splits pushes traffic split rules (internal/split) to the Lua
// module's split API on every dyups target: GET /split, POST and DELETE
// /split/NAME (nginx/lua/swallowkeeper/split.lua).
//
// The sink is level-triggered like the dyups targets: it reads what a
// target holds, posts the rules that differ and deletes the ones no longer
// wanted, on every change of the rules and every Resync, so a restarted
// nginx (an emptied shared dict) gets them back. The rules come from the
// configuration and, optionally, from Consul KV (SetKV); a KV rule replaces
// the configured rule of the same upstream.
//
// Real ngx_http_dyups_module has no such API: it answers GET /split with
// 404. Such a target is reported as not carrying splits (its traffic is
// split by the static split_clients recipe of nginx/conf, if at all) and is
// never written to.
package splits

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
)

var _ engine.Sink = (*Sink)(nil)

// Target is one dyups API: its URL as dyups.ParseBaseURL returns it
// (http://host:port or unix:/path) and the shared secret, if any.
type Target struct {
	URL    *url.URL
	Secret string
}

// Options of a Sink.
type Options struct {
	Timeout time.Duration // per request (default 5s)
	Resync  time.Duration // re-read every target this often; 0: only on changes
	// RetryBase and RetryCap bound the backoff after a failed sync.
	RetryBase, RetryCap time.Duration
}

// Sources of a rule, as status shows them.
const (
	FromConfig = "config"
	FromKV     = "consul kv"
)

// NoSplitAPI is what status says of a target without the split API.
const NoSplitAPI = "no split API here (real dyups, or an nginx.conf without location /split): rules not pushed; " +
	"split with the split_clients recipe of nginx/conf/dyups-split.conf"

// Sink keeps every target's split rules equal to the wanted ones.
type Sink struct {
	log     *slog.Logger
	opt     Options
	targets []*target
	kick    chan struct{}

	mu     sync.Mutex
	config split.Table
	kv     split.Table // nil: no KV rules (none read yet, or no prefix)
	kvErr  string
	groups map[string]bool // upstreams of the last state, lowercased

	kvAPI    KV // nil: no rules from Consul KV
	kvPrefix string
	kvWait   time.Duration
	kvRead   bool // the KV rules were read once: until then nothing is pushed
}

type target struct {
	url    string
	base   *url.URL
	hc     *http.Client
	secret string

	mu          sync.Mutex
	checked     bool // a sync has answered at least once
	mayHold     bool // rules were wanted, or read from KV, while this sink (or its predecessor) ran
	supported   bool // GET /split answered: the Lua module's split API
	inSync      bool
	lastSync    time.Time
	lastError   string
	lastErrorAt time.Time
}

// New returns a sink for targets with the configured rules (valid:
// config.Validate checked them).
func New(targets []Target, rules split.Table, opt Options, log *slog.Logger) *Sink {
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if opt.RetryBase <= 0 {
		opt.RetryBase = 200 * time.Millisecond
	}
	if opt.RetryCap <= 0 {
		opt.RetryCap = 10 * time.Second
	}
	s := &Sink{log: log, opt: opt, config: rules, kick: make(chan struct{}, 1)}
	for _, t := range targets {
		s.targets = append(s.targets, newTarget(t, opt.Timeout))
	}
	return s
}

func newTarget(t Target, timeout time.Duration) *target {
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second, DisableCompression: true,
		DialContext: dialer.DialContext}
	base := t.URL
	if base.Scheme == "unix" {
		sock := base.Opaque
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		base = &url.URL{Scheme: "http", Host: "localhost"}
	}
	return &target{url: t.URL.String(), base: base, secret: t.Secret, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

// SetKV replaces the rules read from Consul KV (nil: none) and pushes the
// result. errMsg, when not empty, is shown in status: the KV rules could
// not be read and the last ones read stay.
func (s *Sink) SetKV(rules split.Table, errMsg string) {
	s.mu.Lock()
	changed := errMsg == "" && (!s.kvRead || !maps.EqualFunc(s.kv, rules, ruleEqual))
	if changed {
		s.kv, s.kvRead = rules, true
	}
	s.kvErr = errMsg
	s.mu.Unlock()
	if changed {
		s.wake()
	}
}

// Inherit takes over what prev (the sink of the previous configuration,
// before a SIGHUP) knows of the targets both have: which of them may hold
// rules, so that removing the last rule from the configuration deletes it
// from nginx. Call it before Run.
func (s *Sink) Inherit(prev *Sink) {
	if prev == nil {
		return
	}
	for _, t := range s.targets {
		for _, o := range prev.targets {
			if o.url == t.url {
				o.mu.Lock()
				t.mayHold = o.mayHold
				o.mu.Unlock()
			}
		}
	}
}

func ruleEqual(a, b split.Rule) bool { return split.Body(a) == split.Body(b) }

func (s *Sink) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Wanted is every rule in force, by upstream name, and where each comes
// from: KV rules replace configured rules of the same upstream (names
// compared without case, as nginx does).
func (s *Sink) Wanted() (split.Table, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, from := split.Table{}, map[string]string{}
	for name, r := range s.config {
		out[name], from[name] = r, FromConfig
	}
	for name, r := range s.kv {
		for old := range out {
			if strings.EqualFold(old, name) {
				delete(out, old)
				delete(from, old)
			}
		}
		out[name], from[name] = r, FromKV
	}
	return out, from
}

// Update takes note of the upstreams nginx should hold (status tells
// whether a split's group exists) and acknowledges at once: the upstream
// state is the dyups targets' business.
func (s *Sink) Update(c engine.Change) {
	groups := make(map[string]bool, len(c.State))
	for name := range c.State {
		groups[strings.ToLower(name)] = true
	}
	s.mu.Lock()
	s.groups = groups
	s.mu.Unlock()
	c.Ack()
}

// Run syncs every target now, on every change of the rules, every
// Resync, and after a failure with backoff, until stop ends.
func (s *Sink) Run(stop, work context.Context) {
	var resync <-chan time.Time
	if s.opt.Resync > 0 {
		tk := time.NewTicker(s.opt.Resync)
		defer tk.Stop()
		resync = tk.C
	}
	if s.kvAPI != nil {
		done := make(chan struct{})
		go func() { defer close(done); s.watchKV(stop) }()
		defer func() { <-done }()
	}
	b := backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	retry := time.NewTimer(0)
	defer retry.Stop()
	<-retry.C
	for {
		retry.Stop()
		if err := s.SyncAll(work); err != nil {
			retry.Reset(b.Next())
		} else {
			b.Reset()
		}
		select {
		case <-stop.Done():
			return
		case <-s.kick:
		case <-resync:
		case <-retry.C:
		}
	}
}

// SyncAll brings every target to the wanted rules and returns the
// failures, joined.
func (s *Sink) SyncAll(ctx context.Context) error {
	s.mu.Lock()
	waiting := s.kvAPI != nil && !s.kvRead
	s.mu.Unlock()
	if waiting {
		// Until Consul KV answered, the configured rules may be the wrong
		// ones (a KV rule replaces them): nginx keeps what it has.
		return nil
	}
	want, _ := s.Wanted()
	bodies := map[string]string{} // lowercased name → body
	names := map[string]string{}  // lowercased name → name
	for name, r := range want {
		bodies[strings.ToLower(name)] = split.Body(r)
		names[strings.ToLower(name)] = name
	}
	var errs []error
	for _, t := range s.targets {
		t.mu.Lock()
		t.mayHold = t.mayHold || len(bodies) > 0 || s.kvAPI != nil
		idle := !t.mayHold
		t.mu.Unlock()
		if idle {
			// Nothing wanted and nothing ever sent: do not even ask, so
			// that a daemon without splits sends nginx no request of this API.
			continue
		}
		err := s.sync(ctx, t, names, bodies)
		t.record(err)
		if err != nil && !errors.Is(err, errNoAPI) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// errNoAPI marks a target that answered GET /split with 404.
var errNoAPI = errors.New("no split API")

func (s *Sink) sync(ctx context.Context, t *target, names, bodies map[string]string) error {
	status, body, err := t.do(ctx, http.MethodGet, "", "")
	if err != nil {
		return err
	}
	var held map[string]string
	switch status {
	case http.StatusNotFound:
		t.mu.Lock()
		first := !t.checked || t.supported
		t.mu.Unlock()
		if first && len(bodies) > 0 {
			s.log.Warn("splits: target has no split API; rules not pushed", "target", t.url, "rules", len(bodies),
				"hint", "real dyups: use the split_clients recipe of nginx/conf/dyups-split.conf; Lua: add location /split as in nginx/conf/lua.conf")
		}
		return errNoAPI
	case http.StatusNoContent:
		held = map[string]string{}
	case http.StatusOK:
		if held, err = split.ParseList(body); err != nil {
			return fmt.Errorf("splits: %s: GET /split: %w", t.url, err)
		}
	default:
		return fmt.Errorf("splits: %s: GET /split: %d %s", t.url, status, strings.TrimSpace(body))
	}

	for _, key := range slices.Sorted(maps.Keys(bodies)) {
		if held[key] == bodies[key] {
			continue
		}
		status, answer, err := t.do(ctx, http.MethodPost, names[key], bodies[key])
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("splits: %s: POST /split/%s: %d %s", t.url, names[key], status, strings.TrimSpace(answer))
		}
		s.log.Info("split set", "target", t.url, "upstream", names[key], "rule", strings.ReplaceAll(strings.TrimSpace(bodies[key]), "\n", "; "))
	}
	for _, key := range slices.Sorted(maps.Keys(held)) {
		if _, ok := bodies[key]; ok {
			continue
		}
		status, answer, err := t.do(ctx, http.MethodDelete, key, "")
		if err != nil {
			return err
		}
		if status != http.StatusOK && status != http.StatusNotFound {
			return fmt.Errorf("splits: %s: DELETE /split/%s: %d %s", t.url, key, status, strings.TrimSpace(answer))
		}
		s.log.Info("split removed", "target", t.url, "upstream", key)
	}
	return nil
}

// do sends one request to /split or /split/NAME and returns the status
// and body (at most 1 MB).
func (t *target) do(ctx context.Context, method, name, body string) (int, string, error) {
	u := t.base.JoinPath("split")
	if name != "" {
		u = u.JoinPath(name)
	}
	where := "/split"
	if name != "" {
		where += "/" + name
	}
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, "", fmt.Errorf("splits: %s: %s %s: %w", t.url, method, where, err)
	}
	if t.secret != "" {
		req.Header.Set("X-SwallowKeeper-Secret", t.secret)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, "", fmt.Errorf("splits: %s: %s %s: %w", t.url, method, where, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", fmt.Errorf("splits: %s: %s %s: read answer: %w", t.url, method, where, err)
	}
	return resp.StatusCode, string(data), nil
}

func (t *target) record(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checked = true
	switch {
	case errors.Is(err, errNoAPI):
		t.supported, t.inSync, t.lastError = false, true, ""
	case err != nil:
		t.inSync, t.lastError, t.lastErrorAt = false, err.Error(), time.Now()
	default:
		t.supported, t.inSync, t.lastSync, t.lastError = true, true, time.Now(), ""
	}
}

// Status is the sink's part of /status, under the key "splits".
type Status struct {
	Rules   []RuleStatus   `json:"rules"`
	Targets []TargetStatus `json:"targets"`
	// KVError is the last failure to read the rules from Consul KV; the
	// rules read before stay in force.
	KVError string `json:"kv_error,omitempty"`
}

// RuleStatus is one rule in force.
type RuleStatus struct {
	Upstream string  `json:"upstream"`
	To       string  `json:"to"`
	Percent  float64 `json:"percent"`
	Sticky   string  `json:"sticky,omitempty"`
	// Match lists the header and cookie matches, "header X-Canary=1".
	Match []string `json:"match,omitempty"`
	From  string   `json:"from"` // config or consul kv
	// GroupMissing: the last state has no upstream To, so every request
	// stays on Upstream.
	GroupMissing bool `json:"group_missing,omitempty"`
}

// TargetStatus is one target's split state.
type TargetStatus struct {
	URL string `json:"url"`
	// Pushed: the target has the split API and holds the rules (in_sync).
	Pushed      bool      `json:"pushed"`
	InSync      bool      `json:"in_sync"`
	Note        string    `json:"note,omitempty"`
	LastSync    time.Time `json:"last_sync,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Status returns the rules in force and every target's state.
func (s *Sink) Status() Status {
	want, from := s.Wanted()
	s.mu.Lock()
	groups, kvErr := s.groups, s.kvErr
	s.mu.Unlock()
	st := Status{Rules: []RuleStatus{}, Targets: []TargetStatus{}, KVError: kvErr}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		r := want[name]
		rs := RuleStatus{Upstream: name, To: r.To, Percent: r.Percent, Sticky: r.Sticky, From: from[name],
			GroupMissing: groups != nil && !groups[strings.ToLower(r.To)]}
		for _, k := range slices.Sorted(maps.Keys(r.Match.Header)) {
			rs.Match = append(rs.Match, "header "+k+"="+r.Match.Header[k])
		}
		for _, k := range slices.Sorted(maps.Keys(r.Match.Cookie)) {
			rs.Match = append(rs.Match, "cookie "+k+"="+r.Match.Cookie[k])
		}
		st.Rules = append(st.Rules, rs)
	}
	for _, t := range s.targets {
		t.mu.Lock()
		ts := TargetStatus{URL: t.url, InSync: t.inSync, LastSync: t.lastSync, LastError: t.lastError, LastErrorAt: t.lastErrorAt}
		ts.Pushed = t.supported && t.inSync
		if !t.checked && !t.mayHold {
			ts.InSync = true // nothing wanted, nothing sent
		}
		if t.checked && !t.supported {
			ts.Note = NoSplitAPI
		}
		t.mu.Unlock()
		st.Targets = append(st.Targets, ts)
	}
	return st
}

// SinkStatus reports the sink: in sync when every target that has the
// split API holds the rules. It never holds the daemon's readiness back:
// without splits nginx still serves every upstream.
func (s *Sink) SinkStatus() engine.SinkStatus {
	st := s.Status()
	// No Name: /status shows it under "splits" only, not among the targets
	// (it pushes to theirs).
	out := engine.SinkStatus{Kind: "splits", InSync: true, Ready: true, Section: "splits", Detail: st}
	for _, t := range st.Targets {
		if !t.InSync {
			out.InSync = false
			if t.LastErrorAt.After(out.LastErrorAt) {
				out.LastError, out.LastErrorAt = t.LastError, t.LastErrorAt
			}
		}
		if t.LastSync.After(out.LastSync) {
			out.LastSync = t.LastSync
		}
	}
	return out
}
