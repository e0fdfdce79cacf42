package dyups

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Target keeps one nginx's dyups interface at the desired state. It runs in
// its own goroutine with its own retries, so a slow or dead nginx never
// delays another.
//
// It is level-triggered: it remembers what the target acknowledged and
// sends only the difference to the newest desired state. A state that
// arrives while it retries supersedes the old one at once.
type Target struct {
	url    string
	client *Client
	log    *slog.Logger
	m      *Metrics
	opt    Options

	mu         sync.Mutex
	pending    engine.Change
	hasPending bool
	wake       chan struct{} // one slot: "pending changed"

	smu    sync.Mutex
	status Status

	// Owned by the Run goroutine (or the caller of Sync).
	acked upstream.State  // what the target acknowledged, per upstream
	owned map[string]bool // names the target may hold because we put them there
	// synced is the state of the last Sync that ended without an error,
	// while acked and owned still say exactly that it is what the target
	// holds: a change from it (Change.From) then syncs from its Touched
	// names alone. nil: unknown.
	synced      upstream.State
	onDrift     func(target string, upstreams []string) // set before Run; the engine's history
	details     detailMemory                            // /detail sections that showed their desired upstream
	detailBuf   []byte                                  // the last /detail answer's buffer, for the next read
	detailFirst []byte                                  // a drift check's first answer, to tell the next ones from it
	procs       Processes                               // nginx's processes, when watched (Options.NginxPID)
	onRepush    atomic.Pointer[func()]                  // see OnRepush
}

var (
	_ engine.Sink          = (*Target)(nil)
	_ engine.DriftReporter = (*Target)(nil)
)

// ReportDriftTo makes the drift check report the upstreams it repairs to
// f (the engine's change history). Call it before Run.
func (t *Target) ReportDriftTo(f func(target string, upstreams []string)) { t.onDrift = f }

// OnRepush makes f run after the target pushed upstreams again because
// nginx lost them (a new worker or master, or a drift repair): the split
// sink then restores the split rules nginx lost with them. Safe while Run
// runs: a SIGHUP hands a kept target to the new configuration's sink.
func (t *Target) OnRepush(f func()) { t.onRepush.Store(&f) }

func (t *Target) repushed() {
	if f := t.onRepush.Load(); f != nil {
		(*f)()
	}
}

// Options tune a target.
type Options struct {
	Timeout     time.Duration // per request
	RetryBase   time.Duration // first retry delay for 409s and transport errors
	RetryCap    time.Duration // longest retry delay
	MaxAttempts int           // per request in Sync; 0 = until superseded or cancelled (Run)
	// Resync is the period of the drift check in Run: read /detail and
	// re-push what nginx lost (a crashed worker, a restart, a manual
	// change). 0 disables it.
	Resync time.Duration
	// DetailReads is how many times each drift check reads /detail, each
	// over a new connection, since each read shows one worker's state.
	DetailReads int
	// DetailMaxReads: while all its answers are the same, a drift check
	// reads on after DetailReads, up to DetailMaxReads reads or
	// DetailBudget, since back-to-back connections mostly land on the same
	// worker and a stale one hides behind it. It stops at the first answer
	// that differs from the first (it has then seen two workers, or a
	// change). DetailReads itself reads no more (the configuration does
	// that when the workers are watched: NginxPID finds a replaced worker
	// by itself).
	DetailMaxReads int
	DetailBudget   time.Duration
	// NginxPID is nginx's pid file, when nginx runs on this host: Run then
	// watches the master's workers and pushes every upstream again
	// WorkerReadyDelay after a worker is gone or a new worker (or master)
	// appears.
	NginxPID string
	// WorkerReadyDelay is how long after such a change the push goes out;
	// 0 pushes at once. Against real dyups at once is best: a replacement
	// worker applies a POST made during its start-up wait before it serves
	// (docs/DYUPS-API.md, "Crashed workers").
	WorkerReadyDelay time.Duration
	// WorkerPoll is how often the workers are listed.
	WorkerPoll time.Duration
	// Processes, when set, lists nginx's processes instead of NginxPID
	// and /proc (tests).
	Processes Processes
}

// DefaultOptions are the options of a target that nothing configures:
// the configuration starts from them (config.Config.TargetOptions), and
// NewTarget takes no zero value for a default.
func DefaultOptions() Options {
	return Options{
		Timeout:        5 * time.Second,
		RetryBase:      100 * time.Millisecond,
		RetryCap:       5 * time.Second,
		DetailReads:    3,
		DetailMaxReads: 12,
		DetailBudget:   time.Second,
		WorkerPoll:     250 * time.Millisecond,
	}
}

// check refuses options that were not resolved: every duration and count
// that has no "off" must be set.
func (o Options) check() error {
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"Timeout", o.Timeout > 0}, {"RetryBase", o.RetryBase > 0}, {"RetryCap", o.RetryCap >= o.RetryBase},
		{"DetailReads", o.DetailReads > 0}, {"DetailMaxReads", o.DetailMaxReads >= o.DetailReads},
		{"DetailBudget", o.DetailBudget > 0}, {"WorkerPoll", o.WorkerPoll > 0},
		{"WorkerReadyDelay", o.WorkerReadyDelay >= 0}, {"MaxAttempts", o.MaxAttempts >= 0}, {"Resync", o.Resync >= 0},
	} {
		if !f.ok {
			return fmt.Errorf("options: %s not set (start from DefaultOptions)", f.name)
		}
	}
	return nil
}

// NewTarget returns a target for the dyups interface at rawURL.
func NewTarget(rawURL string, opt Options, log *slog.Logger, m *Metrics) (*Target, error) {
	base, err := ParseBaseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if err := opt.check(); err != nil {
		return nil, fmt.Errorf("dyups %s: %w", base, err)
	}
	if opt.Processes == nil && opt.NginxPID != "" {
		opt.Processes = NewProcProcesses(opt.NginxPID)
	}
	t := &Target{
		url:    base.String(),
		client: NewClient(base, opt.Timeout),
		log:    log.With("target", base.String()),
		m:      m,
		wake:   make(chan struct{}, 1),
		acked:  upstream.State{},
		owned:  map[string]bool{},
		opt:    opt,
		procs:  opt.Processes,
	}
	// The series alerts depend on exist from the start: a target that
	// never synced reads in_sync 0 and last_sync_timestamp_seconds 0
	// ("never"). WithLabelValues keeps a value already there, so a target
	// made again for the same URL (a reload) does not reset them.
	m.inSync.WithLabelValues(t.url)
	m.lastSync.WithLabelValues(t.url)
	return t, nil
}

// Status is what a target reports about itself; in /status it is the
// target's entry.
type Status struct {
	URL         string    `json:"url"`
	InSync      bool      `json:"in_sync"`   // the last sync or drift check left nothing to do
	LastSync    time.Time `json:"last_sync"` // end of the last sync that succeeded
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Upstreams   int       `json:"upstreams"` // upstreams the target acknowledged
	StatusDetail
}

// StatusDetail is the part of a target's status that only dyups targets
// have: it follows the common fields in the target's /status entry.
type StatusDetail struct {
	DriftRepairs int `json:"drift_repairs"` // upstreams pushed again after a drift check
	// Drift names the upstreams the last drift check found wrong in nginx
	// (then repaired); empty when it found none.
	Drift     []string  `json:"drift,omitempty"`
	LastCheck time.Time `json:"last_check,omitzero"`
	// WorkerRepushes counts the times every upstream was pushed again
	// because nginx had a new worker or master (Options.NginxPID).
	WorkerRepushes int `json:"worker_repushes,omitempty"`
	// WatchError says why nginx's workers cannot be watched (a pid file
	// missing or unreadable, a dead master); empty while they are, or
	// when they are not to be.
	WatchError string `json:"watch_error,omitempty"`
}

// Status returns the target's current status.
func (t *Target) Status() Status {
	t.smu.Lock()
	defer t.smu.Unlock()
	s := t.status
	s.URL = t.url
	return s
}

// SinkStatus reports the target for /status, /readyz and the status page.
// The daemon is ready when at least one target is in sync.
func (t *Target) SinkStatus() engine.SinkStatus {
	s := t.Status()
	return engine.SinkStatus{
		Kind: "dyups", Name: s.URL, InSync: s.InSync, LastSync: s.LastSync, LastError: s.LastError, LastErrorAt: s.LastErrorAt,
		Upstreams: s.Upstreams, Ready: s.InSync, NotReady: "no nginx target in sync yet", Detail: s.StatusDetail,
	}
}

func (t *Target) record(err error, repairs int) {
	t.smu.Lock()
	defer t.smu.Unlock()
	t.status.DriftRepairs += repairs
	t.status.Upstreams = len(t.acked)
	if err != nil && !errors.Is(err, errSuperseded) {
		t.status.InSync = false
		t.status.LastError, t.status.LastErrorAt = err.Error(), time.Now()
		t.m.inSync.WithLabelValues(t.url).Set(0)
		return
	}
	if err == nil {
		t.status.InSync, t.status.LastSync = true, time.Now()
		t.m.inSync.WithLabelValues(t.url).Set(1)
		t.m.lastSync.WithLabelValues(t.url).SetToCurrentTime()
	}
}

// URL is the target's base URL.
func (t *Target) URL() string { return t.url }

// Update hands over the newest desired state without blocking.
func (t *Target) Update(c engine.Change) {
	t.mu.Lock()
	t.pending, t.hasPending = c, true
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Target) take() (engine.Change, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.pending, t.hasPending
	t.pending, t.hasPending = engine.Change{}, false
	return c, ok
}

// Own records that the target may hold these upstreams already (the
// persisted state at start; a change's Prior), so that Sync deletes the
// ones no longer wanted even if it never posted them itself.
func (t *Target) Own(s upstream.State) {
	for name := range s {
		t.owned[name] = true
		t.synced = nil
	}
}

// Run applies states handed over by Update until stop ends, and checks for
// drift every Resync. With NginxPID it also lists nginx's workers every
// WorkerPoll, and pushes every upstream again WorkerReadyDelay after a new
// worker or master appeared (workerWatch). Requests run under work, which
// the caller ends some time after stop, so that a sync in flight at
// shutdown can finish instead of leaving nginx half-updated.
func (t *Target) Run(stop, work context.Context) {
	var tick <-chan time.Time
	if t.opt.Resync > 0 {
		ticker := time.NewTicker(t.opt.Resync)
		defer ticker.Stop()
		tick = ticker.C
	}
	var (
		watch *workerWatch // nil: not watched
		poll  <-chan time.Time
		due   <-chan time.Time
	)
	if t.procs != nil {
		watch = &workerWatch{procs: t.procs, delay: t.opt.WorkerReadyDelay, log: t.log}
		defer watch.stop()
		watch.look(time.Now()) // what is there at start is pushed by the first sync
		t.watchError(watch.lastErr)
		ticker := time.NewTicker(t.opt.WorkerPoll)
		defer ticker.Stop()
		poll = ticker.C
	}
	var current upstream.State // the newest desired state
	ctx := work
	for {
		if watch != nil {
			due = watch.C()
		}
		var err error
		select {
		case <-stop.Done():
			return
		case now := <-poll:
			if watch.look(now) {
				t.watchError(watch.lastErr)
			}
			continue
		case now := <-due:
			reason := watch.fired(now)
			if current == nil {
				continue
			}
			err = t.repush(ctx, current, reason)
		case <-t.wake:
			c, ok := t.take()
			if !ok {
				continue
			}
			current = c.State
			t.Own(c.Prior)
			if c.Touched != nil && t.synced != nil && upstream.SameState(c.From, t.synced) {
				err = t.sync(ctx, c.State, c.Touched)
			} else {
				err = t.Sync(ctx, c.State)
			}
			if err == nil {
				c.Ack()
			} else if !errors.Is(err, errSuperseded) && ctx.Err() == nil {
				c.Fail(err)
			}
		case <-tick:
			if current == nil {
				continue
			}
			err = t.Reconcile(ctx, current)
		}
		switch {
		case errors.Is(err, errSuperseded), ctx.Err() != nil:
		case err != nil:
			t.log.Error("target not fully in sync", "err", err)
		}
	}
}

// watchError shows in the status why the workers cannot be watched.
func (t *Target) watchError(msg string) {
	t.smu.Lock()
	defer t.smu.Unlock()
	t.status.WatchError = msg
}

// repush forgets what the target acknowledged and syncs: every desired
// upstream is posted again, for a new nginx worker that lacks them.
func (t *Target) repush(ctx context.Context, desired upstream.State, reason string) error {
	t.m.repushes.WithLabelValues(t.url, reason).Inc()
	t.smu.Lock()
	t.status.WorkerRepushes++
	t.smu.Unlock()
	t.log.Info("pushing every upstream again", "reason", reason, "upstreams", len(desired))
	t.acked, t.synced = upstream.State{}, nil
	defer t.repushed()
	return t.Sync(ctx, desired)
}

// Reconcile reads what nginx holds (each read over a new connection, so
// that different workers answer), forgets what it had acknowledged for
// every upstream that differs, and syncs: the upstreams nginx lost or that
// were changed behind our back are posted again, and those we own but no
// longer want are deleted.
//
// It reads DetailReads times; while every answer is the same as the first,
// it reads on, up to DetailMaxReads reads or DetailBudget: one answer
// different from the first means two workers (or a change) seen, and
// enough. When all is well (all workers agree) it costs DetailMaxReads
// reads, the same answer again costs a byte comparison and no parse, and
// nothing is sent.
func (t *Target) Reconcile(ctx context.Context, desired upstream.State) error {
	drift := map[string]bool{}
	t.details.begin()
	start := time.Now()
	differs := false // an answer differed from the first
	for read := 0; ; read++ {
		if read >= t.opt.DetailReads && (differs || read >= t.opt.DetailMaxReads || time.Since(start) >= t.opt.DetailBudget) {
			break
		}
		body, err := t.client.DetailBody(ctx, t.detailBuf)
		t.detailBuf = body
		if err != nil {
			err = fmt.Errorf("dyups %s: drift check: %w", t.url, err)
			t.record(err, 0)
			return err
		}
		switch {
		case read == 0: // keep it; read the next ones into the other buffer
			t.detailFirst, t.detailBuf = body, t.detailFirst
		case bytes.Equal(body, t.detailFirst): // the same answer finds the same
			continue
		default:
			differs = true
		}
		if err := t.details.compare(body, desired, t.owned, drift); err != nil {
			err = fmt.Errorf("dyups %s: drift check: GET /detail: %w", t.url, err)
			t.record(err, 0)
			return err
		}
	}
	t.details.end()
	names := sortedKeys(drift)
	for _, name := range names {
		t.m.drift.WithLabelValues(t.url).Inc()
		t.log.Warn("drift: nginx does not hold what it should; repairing", "upstream", name)
		delete(t.acked, name)
		t.synced = nil
	}
	if len(names) > 0 && t.onDrift != nil {
		t.onDrift(t.url, names)
	}
	if len(names) > 0 {
		defer t.repushed()
	}
	t.smu.Lock()
	t.status.Drift, t.status.LastCheck = names, time.Now()
	t.smu.Unlock()
	t.record(nil, len(drift))
	return t.Sync(ctx, desired)
}

// errSuperseded ends a sync whose state is no longer the newest.
var errSuperseded = errors.New("superseded by a newer state")

// Sync brings the target to desired: it POSTs every upstream whose
// configuration differs from what the target acknowledged, then DELETEs
// those it put there that are no longer wanted. A refused body (500) is
// logged with the body and the rest goes on; the error returned joins every
// failure.
func (t *Target) Sync(ctx context.Context, desired upstream.State) (err error) {
	return t.sync(ctx, desired, nil)
}

// sync is Sync; only, when not nil, names every upstream in which desired
// differs from t.synced, and sync looks at no other.
func (t *Target) sync(ctx context.Context, desired upstream.State, only []string) (err error) {
	defer func() { t.record(err, 0) }()
	t.synced = nil
	defer func() {
		if err == nil {
			t.synced = desired
		}
	}()
	// Only what differs is sorted (for a stable order of requests and
	// logs): at thousands of upstreams, sorting every name on each change
	// cost more than finding the few that changed. One pass over desired
	// finds them and owns the new names; a name owned already is only
	// read, not written again.
	var post, del []string
	if only == nil {
		for name, u := range desired {
			if !t.owned[name] {
				t.owned[name] = true
			}
			if old, ok := t.acked[name]; !ok || !old.Equal(u) {
				post = append(post, name)
			}
		}
		for name := range t.owned {
			if _, ok := desired[name]; !ok {
				del = append(del, name)
			}
		}
		del = t.dropRenamed(desired, del)
	} else {
		// From the state synced last: only these names can differ, and
		// only one of them can be the new case of a name that goes.
		came := upstream.State{}
		for _, name := range only {
			u, ok := desired[name]
			switch {
			case ok:
				t.owned[name] = true
				came[name] = u
				if old, ok := t.acked[name]; !ok || !old.Equal(u) {
					post = append(post, name)
				}
			case t.owned[name]:
				del = append(del, name)
			}
		}
		post, del = slices.Compact(slices.Sorted(slices.Values(post))), slices.Compact(slices.Sorted(slices.Values(del)))
		del = t.dropRenamed(came, del)
	}
	slices.Sort(post)
	slices.Sort(del)
	var errs []error
	for _, name := range post {
		u := desired[name]
		err := t.retry(ctx, "POST", name, func(ctx context.Context) error { return t.client.Set(ctx, u) })
		if errors.Is(err, errSuperseded) || ctx.Err() != nil {
			return err
		}
		if err != nil {
			var api *APIError
			if errors.As(err, &api) && api.Status == 500 {
				t.log.Error("nginx refused the upstream body; it keeps the old one", "upstream", name, "status", api.Status, "answer", api.Body, "reason", api.Reason, "body", u.Body())
			}
			delete(t.acked, name)
			errs = append(errs, err)
			continue
		}
		t.acked[name] = u
	}
	for _, name := range del {
		err := t.retry(ctx, "DELETE", name, func(ctx context.Context) error { return t.client.Delete(ctx, name) })
		if errors.Is(err, errSuperseded) || ctx.Err() != nil {
			return err
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(t.acked, name)
		delete(t.owned, name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("dyups %s: %w", t.url, errors.Join(errs...))
	}
	return nil
}

// dropRenamed takes out of del the owned names that fold to a desired
// name (a case-only rename, rn → Rn), and forgets them. dyups matches names
// case-insensitively: the POST of Rn replaces rn in place, and a DELETE of
// rn would delete Rn. The desired name, owned from now on, stands for the
// one upstream nginx holds under either case (a later DELETE of it removes
// rn too, should the POST have failed).
func (t *Target) dropRenamed(desired upstream.State, del []string) []string {
	if len(del) == 0 {
		return del
	}
	folded := make(map[string]bool, len(desired))
	for name := range desired {
		folded[upstream.FoldKey(name)] = true
	}
	keep := del[:0]
	for _, name := range del {
		if !folded[upstream.FoldKey(name)] {
			keep = append(keep, name)
			continue
		}
		delete(t.owned, name)
		delete(t.acked, name)
	}
	return keep
}

// retry runs one request until it succeeds, fails for good, runs out of
// attempts, or a newer state arrives.
func (t *Target) retry(ctx context.Context, op, name string, call func(context.Context) error) error {
	b := backoff.New(t.opt.RetryBase, t.opt.RetryCap)
	for {
		start := time.Now()
		err := call(ctx)
		t.m.observe(t.url, op, err, time.Since(start))
		if err == nil {
			if b.Attempts() > 0 {
				t.log.Info("request succeeded after retries", "op", op, "upstream", name, "retries", b.Attempts())
			}
			return nil
		}
		if !Retryable(err) || t.opt.MaxAttempts > 0 && b.Attempts()+1 >= t.opt.MaxAttempts {
			return err
		}
		d := b.Next()
		t.log.Warn("request failed; retrying", "op", op, "upstream", name, "err", err, "retry_in", d)
		// Out of sync from now on, not only when the whole sync gives up:
		// status, /readyz and the in_sync gauge must show a target that
		// is being retried.
		t.record(fmt.Errorf("%w (retrying)", err), 0)
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-t.wake:
			timer.Stop()
			select { // leave the signal for Run
			case t.wake <- struct{}{}:
			default:
			}
			return errSuperseded
		case <-timer.C:
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	s := make(upstream.State, len(m))
	for k := range m {
		s[k] = upstream.Upstream{}
	}
	return s.Names()
}

// Metrics counts requests to every dyups target.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	drift    *prometheus.CounterVec
	inSync   *prometheus.GaugeVec
	lastSync *prometheus.GaugeVec
	repushes *prometheus.CounterVec
}

// NewMetrics registers the dyups metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: metric.CounterVec("swallowkeeper_dyups_requests_total",
			"Requests to dyups interfaces, by target, operation and outcome (ok, refused, retryable, error).", "target", "op", "outcome"),
		latency: metric.HistogramVec("swallowkeeper_dyups_request_duration_seconds",
			"Duration of requests to dyups interfaces.", prometheus.ExponentialBuckets(0.0005, 2, 14), "target", "op"),
		drift: metric.CounterVec("swallowkeeper_dyups_drift_repairs_total",
			"Upstreams found different in nginx from the desired state by a drift check, and pushed again.", "target"),
		inSync: metric.GaugeVec("swallowkeeper_dyups_in_sync",
			"1 when the target's last sync or drift check left nothing to do, 0 after a failure.", "target"),
		lastSync: metric.GaugeVec("swallowkeeper_dyups_last_sync_timestamp_seconds",
			"When the target last held the desired state (end of a successful sync or drift check).", "target"),
		repushes: metric.CounterVec("swallowkeeper_dyups_worker_repushes_total",
			"Times every upstream was pushed again because the target's nginx had a new worker (reason worker: a crash or a reload) or a new master (reason restart). Only with targets[].nginx_pid.", "target", "reason"),
	}
	metric.Register(reg, m.requests, m.latency, m.drift, m.inSync, m.lastSync, m.repushes)
	return m
}

func (m *Metrics) observe(target, op string, err error, d time.Duration) {
	outcome := "ok"
	var api *APIError
	switch {
	case err == nil:
	case errors.As(err, &api) && !api.Retry:
		outcome = "refused"
	case Retryable(err):
		outcome = "retryable"
	default:
		outcome = "error"
	}
	m.requests.WithLabelValues(target, op, outcome).Inc()
	m.latency.WithLabelValues(target, op).Observe(d.Seconds())
}
