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
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
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
	// Reserved are names no split may send requests to
	// (upstreams.reserved: nginx.conf's own upstream blocks).
	Reserved []string
	// AllowACLFiltered trusts Consul KV answers filtered by ACLs
	// (consul.allow_acl_filtered); otherwise such an answer, which may
	// lack rules the token cannot see, changes nothing.
	AllowACLFiltered bool
	// Groupless says the registry layout has no services of its own
	// (Consul KV mode, the upsync layouts of etcd and ZooKeeper's plain
	// layout): every upstream is built from itself, so a group is known by
	// its name alone (<name>_<group>) and not by the service that built it.
	Groupless bool
	// OneShot (the once command) acknowledges a state only once every
	// target holds the rules (and Consul KV, if used, was read): the
	// command ends on the acknowledgement.
	OneShot bool
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
	// pushMu orders a sync's POSTs with withdraw: a sync POSTs only while
	// the verdicts it computed are still the newest (verdictGen), so a rule
	// that a new state refuses is never pushed back after withdraw
	// deleted it.
	pushMu sync.Mutex

	mu         sync.Mutex
	verdictGen uint64 // moves each time learn changes what may be pushed
	config     split.Table
	kv         split.Table // nil: no KV rules (none read yet, or no prefix)
	kvErr      string
	groups     map[string]bool // upstreams of the last state, lowercased
	// learnt is the last state learn took, name → service as given (not
	// lowercased, not filled in): the same again changes nothing.
	learnt map[string]string
	// learntState is the state learnt holds, the map itself: a state
	// told as a change from it (engine.DeltaPlanObserver, Change.From)
	// is compared in its touched names only.
	learntState upstream.State
	// services maps the last state's upstreams, lowercased, to the
	// service each was built from ("" when not known: a state loaded
	// from the persisted file); nil before the first state.
	services map[string]string
	pending  []engine.Change // one-shot: changes to acknowledge after a full sync

	kvAPI    KV // nil: no rules from Consul KV
	kvPrefix string
	kvWait   time.Duration
	kvRead   bool   // the KV rules were read once: until then nothing is pushed
	kvClose  func() // closes the KV client's idle connections when Run ends
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
	tr, base := dyups.Transport(t.URL, timeout)
	return &target{url: t.URL.String(), base: base, secret: t.Secret, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

// SetKV replaces the rules read from Consul KV (nil: none) and pushes the
// result. errMsg, when not empty, is shown in status: the KV rules could
// not be read and the last ones read stay (a one-shot run fails on it).
func (s *Sink) SetKV(rules split.Table, errMsg string) {
	s.mu.Lock()
	changed := errMsg == "" && (!s.kvRead || !maps.EqualFunc(s.kv, rules, ruleEqual))
	if changed {
		s.kv, s.kvRead = rules, true
	}
	s.kvErr = errMsg
	var failed []engine.Change
	if errMsg != "" && s.opt.OneShot {
		failed = s.pending
	}
	s.mu.Unlock()
	for _, c := range failed {
		c.Fail(fmt.Errorf("splits: consul kv %s: %s", s.kvPrefix, errMsg))
	}
	if changed {
		s.Wake()
	}
}

// Inherit takes over what prev (the sink of the previous configuration,
// before a SIGHUP) knows of the targets both have: which of them may hold
// rules, so that removing the last rule from the configuration deletes it
// from nginx; and the services of the last state, which the state the new
// engine loads from the persisted file lacks. Call it before Run.
func (s *Sink) Inherit(prev *Sink) {
	if prev == nil {
		return
	}
	prev.mu.Lock()
	services := prev.services
	prev.mu.Unlock()
	s.mu.Lock()
	if s.services == nil {
		s.services = services // until a state comes: the last one's services
	}
	s.mu.Unlock()
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

// Wake makes Run sync every target now: the rules changed, or a target's
// nginx was restarted (its shared dict, and so its rules, emptied).
func (s *Sink) Wake() {
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
	for _, name := range slices.Sorted(maps.Keys(s.kv)) { // a fixed order, whatever the table holds
		r := s.kv[name]
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

// Update takes note of the upstreams nginx should hold: a rule is pushed
// only when its group is one of the split upstream's own (see refusal),
// and status tells whether a split's group exists. It acknowledges at
// once (the upstream state is the dyups targets' business), except in a
// one-shot run, where it acknowledges after the next full sync. When the
// rules that may be pushed change with the state, it wakes Run.
func (s *Sink) Update(c engine.Change) {
	s.learnChange(c.State, c.From, c.Touched, func() {
		if s.opt.OneShot {
			s.pending = append(s.pending, c)
		}
	})
	if !s.opt.OneShot {
		c.Ack()
	} else {
		s.Wake()
	}
}

var (
	_ engine.PlanObserver      = (*Sink)(nil)
	_ engine.DeltaPlanObserver = (*Sink)(nil)
)

// Planned learns the services of a planned state that the engine does not
// hand over (Equal to the one delivered: a state loaded from the persisted
// file, which lacks them, stays in force).
func (s *Sink) Planned(st upstream.State) { s.learn(st, nil) }

// PlannedFrom is Planned told how st differs from the state planned
// before it.
func (s *Sink) PlannedFrom(st, from upstream.State, touched []string) {
	s.learnChange(st, from, touched, nil)
}

// unchanged reports, under s.mu, whether st gives what learn built last:
// the same map, or one that differs from it (from) only in touched names
// that keep their services, or the same names and services.
func (s *Sink) unchanged(st, from upstream.State, touched []string) bool {
	if s.learnt != nil && (upstream.SameState(st, s.learntState) || touched != nil && upstream.SameState(from, s.learntState) && s.sameTouched(st, touched)) {
		return true
	}
	return s.sameAsLearnt(st)
}

// sameTouched reports whether the touched names of st are, present or
// not, and with their services, what learnt holds.
func (s *Sink) sameTouched(st upstream.State, touched []string) bool {
	for _, name := range touched {
		u, ok := st[name]
		svc, had := s.learnt[name]
		if ok != had || ok && svc != u.Service {
			return false
		}
	}
	return true
}

// learn takes st's upstreams and their services, and wakes Run when that
// changes which rules may be pushed. A service not known in st (a state
// loaded from the persisted file) keeps the one learnt before for that
// name. also runs under s.mu.
func (s *Sink) learn(st upstream.State, also func()) { s.learnChange(st, nil, nil, also) }

// learnChange is learn for st, told how it differs from the state from
// (touched; nil: not known): when from is the state learnt last and the
// touched names keep their services, nothing else can have changed what
// learn builds.
func (s *Sink) learnChange(st, from upstream.State, touched []string, also func()) {
	s.mu.Lock()
	if s.unchanged(st, from, touched) {
		s.learntState = st
		// The same names and services as last time give the same groups
		// and services, so the same verdicts: nothing to withdraw or wake
		// for. The engine hands over every change, and rebuilding both
		// maps each time cost as much as a change's own work at 1,000
		// upstreams.
		if also != nil {
			also()
		}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	groups := make(map[string]bool, len(st))
	services := make(map[string]string, len(st))
	want, _ := s.Wanted()
	s.mu.Lock()
	for name, u := range st {
		key := strings.ToLower(name)
		groups[key] = true
		services[key] = u.Service
		if u.Service == "" {
			services[key] = s.services[key]
		}
	}
	before := s.verdicts(want)
	s.groups, s.services = groups, services
	s.learnt = make(map[string]string, len(st))
	for name, u := range st {
		s.learnt[name] = u.Service
	}
	s.learntState = st
	after := s.verdicts(want)
	changed := !maps.Equal(before, after)
	if changed {
		s.verdictGen++
	}
	if also != nil {
		also()
	}
	s.mu.Unlock()
	var refused []string
	for key, v := range after {
		if before[key] == pushable && v != pushable && v != unknown {
			refused = append(refused, key)
		}
	}
	if len(refused) > 0 {
		s.withdraw(refused)
	}
	if changed {
		s.Wake()
	}
}

// withdraw deletes at once, from every target that may hold them, the rules
// (lowercased names) that a new state refuses: a group that another
// service took over, or that left. The engine hands a state to Planned
// before it pushes its upstreams, so no request follows such a rule to the
// new owner's servers, unless a target does not answer within the request
// timeout (the targets are asked concurrently). Run's next sync deletes
// what is left, and reports it.
func (s *Sink) withdraw(keys []string) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.opt.Timeout)
	defer cancel()
	slices.Sort(keys)
	var wg sync.WaitGroup
	for _, t := range s.targets {
		t.mu.Lock()
		may := t.mayHold && (t.supported || !t.checked)
		t.mu.Unlock()
		if !may {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, key := range keys {
				status, answer, err := t.do(ctx, http.MethodDelete, key, "")
				switch {
				case err != nil:
					s.log.Warn("splits: withdrawing a refused rule failed; the next sync tries again", "target", t.url, "upstream", key, "err", err)
					return
				case status != http.StatusOK && status != http.StatusNotFound:
					s.log.Warn("splits: withdrawing a refused rule failed; the next sync tries again", "target", t.url, "upstream", key,
						"status", status, "answer", strings.TrimSpace(answer))
				case status == http.StatusOK:
					s.log.Info("split withdrawn", "target", t.url, "upstream", key)
				}
			}
		}()
	}
	wg.Wait()
}

// Verdicts of refusal, beside a reason.
const (
	pushable = ""
	unknown  = "?" // the services are not known yet: nginx keeps what it holds
)

// refusal says why rule r of upstream name may not be pushed now, or
// pushable. A split may send requests only to a group of the same service:
// a name such as web_canary (split.Check) that is not a reserved name and
// that the last state built from the same registry service as name. A
// group missing from the state is refused too (nothing to route to; the
// rule comes back with the group), so that an upstream that appears later
// under that name is checked before any request reaches it. Call with
// s.mu held.
func (s *Sink) refusal(name string, r split.Rule) string {
	if registry.IsReserved(s.opt.Reserved, r.To) {
		return fmt.Sprintf("%q is a reserved name (upstreams.reserved)", r.To)
	}
	if !split.IsGroupOf(r.To, name) {
		return fmt.Sprintf("%q is not a group of %s", r.To, name)
	}
	if s.services == nil {
		return unknown
	}
	main, okMain := s.services[strings.ToLower(name)]
	group, okGroup := s.services[strings.ToLower(r.To)]
	switch {
	case !okMain:
		return noUpstream(name)
	case !okGroup:
		return noUpstream(r.To)
	case s.opt.Groupless: // every upstream is its own service: the name is all there is
		return pushable
	case main == "" || group == "":
		return unknown
	case !strings.EqualFold(main, group):
		return fmt.Sprintf("%q is built from service %q, not %s's service %q: a split sends requests only to its own service's groups", r.To, group, name, main)
	}
	return pushable
}

func noUpstream(name string) string { return "no upstream " + name + " in the applied state" }

// verdicts is refusal for every rule, by lowercased name. Call with s.mu
// held.
func (s *Sink) verdicts(want split.Table) map[string]string {
	out := make(map[string]string, len(want))
	for name, r := range want {
		out[strings.ToLower(name)] = s.refusal(name, r)
	}
	return out
}

// Run syncs every target now, on every change of the rules, every
// Resync, and after a failure with backoff, until stop ends.
func (s *Sink) Run(stop, work context.Context) {
	resync, stopResync := backoff.Every(s.opt.Resync)
	defer stopResync()
	if s.kvAPI != nil {
		done := make(chan struct{})
		go func() { defer close(done); s.watchKV(stop) }()
		defer func() { <-done }()
	}
	defer func() {
		// A SIGHUP replaces this sink: its connections would otherwise
		// stay open until nginx or Consul closes them.
		for _, t := range s.targets {
			t.hc.CloseIdleConnections()
		}
		if s.kvClose != nil {
			s.kvClose()
		}
	}()
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
// failures, joined. In a one-shot run it acknowledges (or fails) the
// changes Update took, once the sync is complete.
func (s *Sink) SyncAll(ctx context.Context) error {
	complete, err := s.syncAll(ctx)
	s.mu.Lock()
	var pending []engine.Change
	if complete || err != nil {
		pending = s.pending
	}
	if complete && err == nil {
		s.pending = nil
	}
	s.mu.Unlock()
	for _, c := range pending {
		if err != nil {
			c.Fail(err)
		} else {
			c.Ack()
		}
	}
	return err
}

// syncAll is SyncAll; complete is false when it waited (for Consul KV,
// or for a first state) instead of syncing, or when a newer state cut a
// target's sync short.
func (s *Sink) syncAll(ctx context.Context) (complete bool, err error) {
	want, _ := s.Wanted()
	s.mu.Lock()
	waiting := (s.kvAPI != nil && !s.kvRead) || s.services == nil
	verdicts, gen := s.verdicts(want), s.verdictGen
	s.mu.Unlock()
	if waiting {
		// Until Consul KV answered, the configured rules may be the wrong
		// ones (a KV rule replaces them); until a state came, no rule can
		// be checked against it: nginx keeps what it has.
		return false, nil
	}
	complete = true
	bodies := map[string]string{} // lowercased name → body
	names := map[string]string{}  // lowercased name → name
	keep := map[string]bool{}     // lowercased names left as nginx holds them
	for name, r := range want {
		key := strings.ToLower(name)
		switch v := verdicts[key]; v {
		case pushable:
			bodies[key], names[key] = split.Body(r), name
		case unknown:
			keep[key] = true
		}
	}
	var errs []error
	for _, t := range s.targets {
		t.mu.Lock()
		t.mayHold = t.mayHold || len(want) > 0 || s.kvAPI != nil // a refused rule may be held: it is deleted
		idle := !t.mayHold
		t.mu.Unlock()
		if idle {
			// Nothing wanted and nothing ever sent: do not even ask, so
			// that a daemon without splits sends nginx no request of this API.
			continue
		}
		err := s.sync(ctx, t, gen, names, bodies, keep)
		if errors.Is(err, errStaleSync) {
			complete = false
			continue
		}
		t.record(err)
		if err != nil && !errors.Is(err, errNoAPI) {
			errs = append(errs, err)
		}
	}
	return complete, errors.Join(errs...)
}

// errNoAPI marks a target that answered GET /split with 404.
var errNoAPI = errors.New("no split API")

// errStaleSync marks a sync that stopped because a newer state changed
// what may be pushed: not a failure of the target, and not a complete
// sync either (the next one, which learn woke, completes it).
var errStaleSync = errors.New("a newer state came during the sync")

func (s *Sink) sync(ctx context.Context, t *target, gen uint64, names, bodies map[string]string, keep map[string]bool) error {
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
		status, answer, stale, err := s.post(ctx, t, gen, names[key], bodies[key])
		if stale {
			// A newer state changed what may be pushed since this sync
			// began (learn woke Run for it): what is left is that sync's.
			return errStaleSync
		}
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("splits: %s: POST /split/%s: %d %s", t.url, names[key], status, strings.TrimSpace(answer))
		}
		s.log.Info("split set", "target", t.url, "upstream", names[key], "rule", strings.ReplaceAll(strings.TrimSpace(bodies[key]), "\n", "; "))
	}
	for _, key := range slices.Sorted(maps.Keys(held)) {
		if _, ok := bodies[key]; ok || keep[key] {
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

// post POSTs a rule to t unless the verdicts moved past gen, the
// generation the caller's bodies were chosen under (stale).
func (s *Sink) post(ctx context.Context, t *target, gen uint64, name, body string) (status int, answer string, stale bool, err error) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	s.mu.Lock()
	stale = s.verdictGen != gen
	s.mu.Unlock()
	if stale {
		return 0, "", true, nil
	}
	status, answer, err = t.do(ctx, http.MethodPost, name, body)
	return status, answer, false, err
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
	if errors.Is(err, context.Canceled) {
		return // the sink is stopping: that says nothing of the target
	}
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
	// Refused says why the rule is not pushed (and is deleted where
	// nginx holds it): its group is not one of Upstream's own.
	Refused string `json:"refused,omitempty"`
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
	verdicts := s.verdicts(want)
	s.mu.Unlock()
	st := Status{Rules: []RuleStatus{}, Targets: []TargetStatus{}, KVError: kvErr}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		r := want[name]
		rs := RuleStatus{Upstream: name, To: r.To, Percent: r.Percent, Sticky: r.Sticky, From: from[name],
			GroupMissing: groups != nil && !groups[strings.ToLower(r.To)]}
		if v := verdicts[strings.ToLower(name)]; v != pushable && v != unknown && v != noUpstream(r.To) { // group_missing says that one
			rs.Refused = v
		}
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

// sameAsLearnt reports whether st has the names and services of the last
// state learn took. s.mu must be held.
func (s *Sink) sameAsLearnt(st upstream.State) bool {
	if s.learnt == nil || len(st) != len(s.learnt) {
		return false
	}
	for name, u := range st {
		if svc, ok := s.learnt[name]; !ok || svc != u.Service {
			return false
		}
	}
	return true
}
