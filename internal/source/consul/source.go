// Package consul is the Consul source: it follows the catalog and the
// health of every selected service with a fixed, small number of blocking
// queries, whatever the number of services, and sends complete snapshots.
//
// Two long polls run all the time:
//   - /v1/catalog/services moves when a service instance registers,
//     deregisters or changes (but not on health changes);
//   - /v1/health/state/any moves when any check changes, node checks such
//     as serfHealth included.
//
// A wake is only a cue: the source works out which services it can have
// changed (new or vanished names, changed tags, changed checks, checks of
// a node the service runs on) and re-reads just those with
// /v1/health/service/<name>. A catalog wake that none of that explains (an
// instance without checks, an address change) is followed by one plain read
// of the checks and, if still unexplained, by a re-read of every service.
// A periodic full re-read is the safety net.
//
// That is the default watch mode, WatchCatalog. WatchPerService
// (perservice.go) keeps the catalog watch and replaces the checks watch
// with one long poll per selected service: a change then costs two small
// answers of one service (the streaming cue and the read it prompts)
// instead of every check of the datacenter, for the source and for
// Consul, at the price of a connection per poll over HTTP/1.1 (over
// https, HTTP/2 carries them on a few).
package consul

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Options configure the source.
type Options struct {
	// WaitTime bounds each blocking query (Consul caps it at 10m).
	WaitTime time.Duration
	// Resync is the period of the full re-read safety net; 0 disables it.
	Resync time.Duration
	// RetryBase and RetryCap bound the jittered backoff after errors.
	RetryBase, RetryCap time.Duration
	// OnlyPassing also takes instances out whose checks are in warning;
	// by default only critical checks (and maintenance) take them out.
	OnlyPassing bool
	// AllowACLFiltered accepts answers that Consul filtered by ACLs. By
	// default such an answer is doubted (it may lack services the token
	// cannot see) and changes nothing; set it when the token is scoped on
	// purpose to the services it should follow.
	AllowACLFiltered bool
	// NativeWeights and AddressFrom: see Convert.
	NativeWeights bool
	AddressFrom   string
	// Watch is WatchCatalog (the default when empty) or WatchPerService.
	Watch string
}

// Source watches one Consul datacenter.
type Source struct {
	client *Client
	rules  registry.Rules
	opt    Options
	log    *slog.Logger
	m      *metrics
	reach  engine.Reachability
	// spare holds a checks answer no longer needed, for the next read to
	// reuse (see Client.getRaw).
	spare chan []byte
	// checksLen is the length of the last checks answer: a new buffer is
	// made that size (and a bit), not grown by halves through copies,
	// which left up to half of it unused for the life of the daemon.
	checksLen atomic.Int64
	// failing holds the services whose follower's last request failed
	// (WatchPerService).
	failingMu sync.Mutex
	failing   map[string]bool
}

var _ engine.Source = (*Source)(nil)

// Health implements engine.HealthReporter: up while both watches' last
// requests succeeded.
func (s *Source) Health() engine.Health { return s.reach.Health() }

// pollDefaults fills the blocking-query and backoff options left zero,
// the same for the services and the KV mode.
func pollDefaults(wait, retryBase, retryCap *time.Duration) {
	if *wait <= 0 {
		*wait = 5 * time.Minute
	}
	if *retryBase <= 0 {
		*retryBase = 250 * time.Millisecond
	}
	if *retryCap <= 0 {
		*retryCap = 30 * time.Second
	}
}

// New returns a source reading through client (see NewClient).
func New(client *Client, rules registry.Rules, opt Options, log *slog.Logger, reg prometheus.Registerer) *Source {
	pollDefaults(&opt.WaitTime, &opt.RetryBase, &opt.RetryCap)
	watches := []string{"catalog/services", "health/state/any"}
	if opt.Watch == WatchPerService {
		watches = []string{"catalog/services", "health/service"}
	}
	return &Source{client: client, rules: rules, opt: opt, log: log.With("source", "consul"), m: newMetrics(reg, watches...),
		spare: make(chan []byte, 1), failing: map[string]bool{}}
}

type catalogEvent struct {
	index uint64
	reset bool   // the index went backwards: Consul's state was replaced
	doubt string // why this answer is not to be trusted, "" if it is
	body  []byte // the raw answer: service names and their tags
}

type checksEvent struct {
	index uint64
	reset bool
	doubt string
	body  []byte // the raw answer, for checkList.apply
}

// checkLite is the part of a health check the source uses: not Output,
// Notes or Definition, which an HTTP check fills with response bodies.
type checkLite struct {
	Node        string
	CheckID     string
	Status      string
	ServiceID   string
	ServiceName string
	ModifyIndex uint64
}

// readChecks reads /v1/health/state/any, unparsed.
func (s *Source) readChecks(ctx context.Context, o *api.QueryOptions) ([]byte, *api.QueryMeta, error) {
	var buf []byte
	body, meta, err := s.client.getRaw(ctx, "/v1/health/state/any", o, func() []byte {
		select {
		case buf = <-s.spare:
		default:
			if n := s.checksLen.Load(); n > 0 {
				buf = make([]byte, 0, n+n/64+4096) // room for a few more checks
			}
		}
		return buf
	})
	if err != nil {
		s.release(buf)
		return nil, nil, err
	}
	s.checksLen.Store(int64(len(body)))
	return body, meta, nil
}

// release hands a checks answer that nothing refers to any more back for
// reuse.
func (s *Source) release(b []byte) {
	if n := s.checksLen.Load(); cap(b) == 0 || int64(cap(b)) > n+n/8+64<<10 {
		return // one much larger than answers now are: let it go
	}
	select {
	case s.spare <- b[:0]:
	default:
	}
}

// serviceData is what the source keeps of the last read of one service:
// not the decoded entries (kilobytes each, with every node and service
// field), but what tells whether a re-read changed anything, and the
// service's part of the state, built once at read time, since a snapshot
// merges every service and rebuilding thousands of unchanged ones on each
// change would cost more than the change.
type serviceData struct {
	index    uint64
	versions serviceVersion
	nodes    []string // the nodes of its instances; catalog mode only (touch)
	part     registry.Part
}

// serviceVersion stands for what changes in a service's answer when an
// instance, its node or one of its checks does: every entry's node, the
// modify indexes of its service and node, and each check's status and
// modify index, in the answer's order. It is the length of an encoding of
// them and two hashes of it seeded at random per process, not the list (at
// 10,000 services × 10 the lists were 11.5 MB of the daemon's live heap).
// Two different lists share it only if both hashes collide at the same
// length: both come from the runtime's hash, so that is as unlikely as the
// runtime's hash is sound, about 2^-64 or less per compare.
type serviceVersion [3]uint64

var versionSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func versionsOf(entries []*api.ServiceEntry) serviceVersion {
	// A prefix-free encoding of the list: every field is its length or a
	// tag first, so that two lists encode alike only when they are alike.
	var stack [1024]byte
	b := stack[:0]
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil {
			continue
		}
		b = binary.AppendUvarint(b, uint64(len(e.Node.Node)))
		b = append(b, e.Node.Node...)
		b = binary.AppendUvarint(b, e.Service.ModifyIndex)
		b = binary.AppendUvarint(b, e.Node.ModifyIndex)
		b = binary.AppendUvarint(b, uint64(len(e.Checks)))
		for _, c := range e.Checks {
			if c == nil {
				// A null in the list makes the instance fail (aggregate):
				// its coming or going is a change like any other.
				b = append(b, 0)
				continue
			}
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(len(c.Status)))
			b = append(b, c.Status...)
			b = binary.AppendUvarint(b, c.ModifyIndex)
		}
	}
	return serviceVersion{uint64(len(b)), maphash.Bytes(versionSeeds[0], b), maphash.Bytes(versionSeeds[1], b)}
}

// nodesOf returns the distinct nodes of entries, sorted: those of every
// entry with a node (a superset of what versionsOf counts, which also
// skips entries without a service).
func nodesOf(entries []*api.ServiceEntry) []string {
	var nodes []string
	for _, e := range entries {
		if e != nil && e.Node != nil {
			nodes = append(nodes, e.Node.Node)
		}
	}
	slices.Sort(nodes)
	return slices.Clip(slices.Compact(nodes))
}

// Run implements engine.Source.
func (s *Source) Run(ctx context.Context, out chan<- engine.Snapshot) {
	if s.opt.Watch == WatchPerService {
		s.runPerService(ctx, out)
		return
	}
	catalogC, checksC := s.startWatches(ctx)
	st := newTracker(s)
	var (
		retry    = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
		retryC   <-chan time.Time
		reread   = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
		rereadC  <-chan time.Time
		haveBoth = func() bool { return st.catalog != nil && st.haveChecks }
	)
	resyncC, stopResync := backoff.Every(s.opt.Resync)
	defer stopResync()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-catalogC:
			st.onCatalog(ev)
			retryC = nil // the agent answers again: read now, not after the backoff
			if st.probe {
				// A change the catalog list does not explain nearly always
				// moves a check too (a registration with its check, a
				// deregistration), and the checks watch answers within
				// milliseconds: wait briefly for it rather than read every
				// check of the datacenter once more.
				st.waitChecks(time.Now())
				select {
				case cev := <-checksC:
					st.checksCame(time.Now())
					st.onChecks(cev)
				case <-time.After(st.grace()):
				case <-ctx.Done():
					return
				}
			}
		case ev := <-checksC:
			st.checksCame(time.Now())
			st.onChecks(ev)
			retryC = nil
		case <-resyncC:
			st.markAll()
		case <-retryC:
			retryC = nil
		case <-rereadC:
			rereadC = nil
			if err := st.reread(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("re-read after a broken answer failed; will retry", "err", err)
			}
		}
		// A broken answer (one that does not decode) moved its watch's
		// index like any answer, and that watch may not wake again for a
		// long time: read the endpoint again, with backoff, until it
		// answers well. Until then the answer is doubted and nothing
		// changes.
		armReread(st.rereadCatalog || st.rereadChecks, reread, &rereadC)
		if !haveBoth() || retryC != nil {
			continue
		}
		changed, err := st.refresh(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := retry.Next()
			s.m.errors.WithLabelValues("health/service").Inc()
			s.log.Warn("read failed; keeping the last complete state, will retry", "err", err, "retry_in", d)
			retryC = time.After(d)
			continue
		}
		retry.Reset()
		if !changed && st.sent {
			continue
		}
		if !st.send(ctx, out) {
			return
		}
	}
}

// send hands out a snapshot of what the tracker knows; false when ctx
// ended first.
func (t *tracker) send(ctx context.Context, out chan<- engine.Snapshot) bool {
	snap := t.snapshot()
	select {
	case out <- snap:
		t.sent = true
		return true
	case <-ctx.Done():
		return false
	}
}

// watch runs one blocking query forever, following Consul's documented
// index rules, and hands each changed result to ch, replacing an unread
// older one.
//
// With passRecovery, the first answer after a failure is handed over even
// when the index did not move, for a reader that holds changes while the
// watch fails (runPerService) to learn that it answers again.
func watch[E any](ctx context.Context, s *Source, what string, ch chan E, passRecovery bool,
	query func(*api.QueryOptions) (E, *api.QueryMeta, error), stamp func(*E, uint64, bool, string)) {
	var index uint64
	b := backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	for ctx.Err() == nil {
		wait := index
		if b.Attempts() > 0 {
			// After a failure, ask without blocking: an agent that is back
			// with nothing new would otherwise hold the query for the
			// whole wait time, and the watch would read as down (and
			// registry_up stay 0) that long. An unchanged index is then
			// "nothing changed", as below.
			wait = 0
		}
		o := (&api.QueryOptions{WaitIndex: wait, WaitTime: s.opt.WaitTime}).WithContext(ctx)
		ev, meta, err := query(o)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.errors.WithLabelValues(what).Inc()
			s.m.setWatch(what, false)
			s.reach.Report(what, fmt.Errorf("consul: watch %s: %w", what, err))
			d := b.Next()
			s.log.Warn("watch failed; retrying", "watch", what, "err", err, "retry_in", d, "attempt", b.Attempts())
			if s.waitForAgent(ctx, d) != nil {
				return
			}
			continue
		}
		recovered := b.Attempts() > 0
		if recovered {
			s.log.Info("watch recovered", "watch", what, "after_attempts", b.Attempts())
		}
		b.Reset()
		s.m.setWatch(what, true)
		s.reach.Report(what, nil)
		s.m.wakes.WithLabelValues(what).Inc()
		reset := false
		switch {
		case meta.LastIndex == index && index != 0 && !(recovered && passRecovery):
			continue // the wait timed out: nothing changed
		case meta.LastIndex < index:
			// The index went backwards (a snapshot restore, a new
			// cluster): what we knew is void; this answer is a full read.
			reset = true
		}
		index = meta.LastIndex
		if index == 0 {
			index = 1 // never block on 0: it would return at once forever
		}
		stamp(&ev, index, reset, s.doubt(what, meta))
		select { // one slot: drop an unread older result for the newer one
		case <-ch:
		default:
		}
		ch <- ev
	}
}

// probeGrace is how long an unexplained catalog change waits for the
// checks watch before the source reads the checks itself. The watch's
// answer holds every check of the datacenter, and decoding it takes tens of
// milliseconds at thousands of instances, so the wait must cover that;
// only an instance registered or removed without any check pays it.
//
// At tens of thousands of checks Consul takes longer than that to answer
// (the answer is megabytes): the grace then grows to twice how late the
// watch answered the last time (see tracker.grace), up to maxProbeGrace,
// so that a change is not read twice, once by the source after the grace
// and again when the watch answers. What that costs: an instance
// registered or removed without any check waits up to that grace.
const (
	probeGrace    = 250 * time.Millisecond
	maxProbeGrace = 2 * time.Second
)

// agentProbeEvery is how often a watch in backoff asks whether the agent
// answers again: a cheap request, so that the catch-up after an outage
// takes about a second instead of the rest of a backoff that grew during
// it. It is not a retry of the watch: a dead agent still sees the watch's
// jittered, capped backoff.
const agentProbeEvery = time.Second

// waitForAgent sleeps d, or less if the agent answers a status request
// before; it returns ctx's error when ctx ends.
func (s *Source) waitForAgent(ctx context.Context, d time.Duration) error {
	return waitForAgent(ctx, s.client, d)
}

// startWatches starts the two blocking queries, whose answers come on the
// channels until ctx ends.
func (s *Source) startWatches(ctx context.Context) (<-chan catalogEvent, <-chan checksEvent) {
	catalogC := s.watchCatalog(ctx, false)
	checksC := make(chan checksEvent, 1)
	go watch(ctx, s, "health/state/any", checksC, false, func(o *api.QueryOptions) (checksEvent, *api.QueryMeta, error) {
		body, meta, err := s.readChecks(ctx, o)
		return checksEvent{body: body}, meta, err
	}, func(e *checksEvent, idx uint64, reset bool, doubt string) {
		e.index, e.reset, e.doubt = idx, reset, doubt
	})
	return catalogC, checksC
}

// armReread sets *c to fire after the backoff's next delay when an
// endpoint must be read again (need) and no re-read is due yet, and resets
// the backoff when none must.
func armReread(need bool, b *backoff.Backoff, c *<-chan time.Time) {
	switch {
	case !need:
		b.Reset()
	case *c == nil:
		*c = time.After(b.Next())
	}
}

// watchCatalog starts the catalog watch (/v1/catalog/services), whose
// answers come on the channel until ctx ends; passRecovery: see watch.
func (s *Source) watchCatalog(ctx context.Context, passRecovery bool) <-chan catalogEvent {
	catalogC := make(chan catalogEvent, 1)
	go watch(ctx, s, "catalog/services", catalogC, passRecovery, func(o *api.QueryOptions) (catalogEvent, *api.QueryMeta, error) {
		body, meta, err := s.client.getRaw(ctx, "/v1/catalog/services", o, nil)
		return catalogEvent{body: body}, meta, err
	}, func(e *catalogEvent, idx uint64, reset bool, doubt string) {
		e.index, e.reset, e.doubt = idx, reset, doubt
	})
	return catalogC
}

func newTracker(s *Source) *tracker {
	return &tracker{src: s, doubts: map[string]string{}, services: map[string]serviceData{}, dirty: map[string]bool{}, dropped: map[string]bool{}}
}

// tracker holds what the source knows, in the Run goroutine only.
type tracker struct {
	src         *Source
	catalog     map[string][]string // selected services and their tags
	catalogIdx  uint64
	catalogBody []byte // the last catalog answer decoded
	catalogSize int    // services in it, selected or not
	// rereadCatalog and rereadChecks: the watch's last answer did not
	// decode; Run reads the endpoint again until one does.
	rereadCatalog, rereadChecks bool
	checks                      checkList // holds the last good checks answer
	haveChecks                  bool
	services                    map[string]serviceData
	dirty                       map[string]bool
	probe                       bool              // read the checks once, then maybe sweep
	dropped                     map[string]bool   // instances reported as invalid, to log each once
	badNames                    map[string]string // services whose name cannot be an upstream name → why
	removed                     bool              // a service left the catalog since the last snapshot
	sent                        bool
	doubts                      map[string]string // what → why its last answer is doubted
	// merged is the last snapshot's state when its merge refused and
	// dropped nothing; changed holds, by service, the part that service
	// had in it, for each service read anew since. The next snapshot
	// then replaces only those services' upstreams (see mergeChanged).
	merged  upstream.State
	changed map[string]registry.Part
	// checksLag is how long after a catalog change that needed the checks
	// the checks watch last answered; waitSince, when set, is when the
	// last such change began to wait, and no answer has come since.
	checksLag time.Duration
	waitSince time.Time
}

// waitChecks notes that a catalog change began at now to wait for the
// checks watch.
func (t *tracker) waitChecks(now time.Time) { t.waitSince = now }

// checksCame notes that the checks watch answered at now: how long after
// the change that waited for it, within the grace or after it, unless so
// long after that the answer is surely for another change.
func (t *tracker) checksCame(now time.Time) {
	if !t.waitSince.IsZero() {
		if lag := now.Sub(t.waitSince); lag <= maxProbeGrace {
			t.checksLag = lag
		}
	}
	t.waitSince = time.Time{}
}

// grace is how long a catalog change waits for the checks watch: probeGrace,
// or twice the watch's last lag when that is longer, up to maxProbeGrace.
func (t *tracker) grace() time.Duration {
	return min(max(probeGrace, 2*t.checksLag), maxProbeGrace)
}

// setService keeps what a read of the service name gave, noting the part
// it replaces for mergeChanged.
func (t *tracker) setService(name string, d serviceData) {
	old, had := t.services[name]
	if _, noted := t.changed[name]; !noted {
		if !had {
			t.merged = nil // a new service: its names may take others'
		}
		if t.changed == nil {
			t.changed = map[string]registry.Part{}
		}
		t.changed[name] = old.part
	}
	t.services[name] = d
}

// forgetService drops a service that left the catalog.
func (t *tracker) forgetService(name string) {
	delete(t.services, name)
	t.merged = nil
}

func (t *tracker) markAll() {
	for name := range t.catalog {
		t.dirty[name] = true
	}
}

// onCatalog takes a catalog answer; it reports whether it took a new list
// of services (one with other names or tags, or the first), which may
// start or stop the services' followers.
func (t *tracker) onCatalog(ev catalogEvent) bool {
	if t.catalog != nil && !ev.reset && bytes.Equal(ev.body, t.catalogBody) {
		t.rereadCatalog = false
		// The same names and tags, so nothing to decode, yet the index
		// moved: an instance came, went or changed (the usual change at
		// scale, where decoding thousands of names each time would cost
		// more than the rest of the change).
		t.setDoubt("catalog/services", ev.doubt)
		t.catalogIdx = ev.index
		if t.catalogSize > 0 {
			t.probe = true
		}
		return false
	}
	var services map[string][]string
	if err := json.Unmarshal(ev.body, &services); err != nil {
		t.broken("catalog/services", "a map of services", err)
		t.rereadCatalog = true
		return false
	}
	t.rereadCatalog = false
	t.setDoubt("catalog/services", ev.doubt)
	t.catalogBody, t.catalogSize = ev.body, len(services)
	selected := map[string][]string{}
	badNames := map[string]string{}
	for name, tags := range services {
		if !t.src.rules.WantService(name) {
			continue
		}
		// A service name that cannot be an upstream name is never read:
		// nothing of it could be rendered, and a name holding '#', '?' or
		// a line break would not even make a valid request path; one such
		// registration must not stop the others from flowing.
		if err := upstream.ValidName(name); err != nil {
			badNames[name] = err.Error()
			continue
		}
		selected[name] = tags
	}
	if !maps.Equal(badNames, t.badNames) {
		t.badNames = badNames
		t.merged = nil
		t.removed = true // the snapshot's dropped list changed
	}
	first := t.catalog == nil
	explained := false
	for name, tags := range selected {
		old, ok := t.catalog[name]
		if !ok || !slices.Equal(old, tags) || ev.reset || first {
			t.dirty[name] = true
			explained = true
		}
	}
	for name := range t.catalog {
		if _, ok := selected[name]; !ok {
			t.forgetService(name)
			delete(t.dirty, name)
			delete(t.doubts, "health/service/"+name)
			t.removed = true
			explained = true
		}
	}
	t.catalog = selected
	t.catalogIdx = ev.index
	if !explained && len(services) > 0 {
		// An instance came, went or changed without touching the name or
		// tag lists; refresh decides whether the checks explain it.
		t.probe = true
	}
	return true
}

// broken records an answer of the endpoint what that does not decode as
// the expected kind: counted, logged and doubted, so that nothing changes
// until a good answer comes.
func (t *tracker) broken(what, kind string, err error) {
	t.src.m.errors.WithLabelValues(what).Inc()
	t.src.log.Warn("answer is not "+kind+"; holding changes", "endpoint", "/v1/"+what, "err", err)
	t.setDoubt(what, "an answer that is not "+kind+" ("+err.Error()+")")
}

func (t *tracker) onChecks(ev checksEvent) {
	gone, came, full, err := t.checks.apply(ev.body)
	t.src.release(ev.body) // the list keeps hashes of it, not the bytes
	if err != nil {
		t.broken("health/state/any", "a list of checks", err) // compared with the last good one when a good one comes
		t.rereadChecks = true
		return
	}
	t.rereadChecks = false
	if full {
		t.src.m.fullChecksReads.Inc()
	}
	t.setDoubt("health/state/any", ev.doubt)
	if ev.reset {
		t.markAll()
	}
	was := make(map[string]checkLite, len(gone))
	for _, c := range gone {
		was[c.Node+"/"+c.CheckID] = c
	}
	for _, c := range came {
		key := c.Node + "/" + c.CheckID
		old, ok := was[key]
		delete(was, key)
		if !ok || old.Status != c.Status || old.ModifyIndex != c.ModifyIndex || old.ServiceID != c.ServiceID {
			t.touch(c)
		}
	}
	for _, c := range was {
		t.touch(c) // the check left
	}
	t.haveChecks = true
}

// touch marks what a changed check can affect: its service, or for a node
// check every service with an instance on that node.
func (t *tracker) touch(c checkLite) {
	if c.ServiceName != "" {
		t.dirty[c.ServiceName] = true // readDirty skips unselected names
		return
	}
	for name, d := range t.services {
		if _, ok := slices.BinarySearch(d.nodes, c.Node); ok {
			t.dirty[name] = true
		}
	}
}

// reread reads again, without blocking, the endpoints whose last answer
// did not decode.
func (t *tracker) reread(ctx context.Context) error {
	if t.rereadCatalog {
		body, meta, err := t.src.client.getRaw(ctx, "/v1/catalog/services", &api.QueryOptions{}, nil)
		if err != nil {
			return fmt.Errorf("consul: read catalog/services: %w", err)
		}
		t.onCatalog(catalogEvent{index: meta.LastIndex, body: body, doubt: t.src.doubt("catalog/services", meta)})
	}
	if t.rereadChecks {
		return t.readChecksNow(ctx)
	}
	return nil
}

// readChecksNow reads the checks without blocking and takes the answer in
// as the watch's would be.
func (t *tracker) readChecksNow(ctx context.Context) error {
	body, meta, err := t.src.readChecks(ctx, &api.QueryOptions{})
	if err != nil {
		return fmt.Errorf("consul: read health/state/any: %w", err)
	}
	t.onChecks(checksEvent{index: meta.LastIndex, body: body, doubt: t.src.doubt("health/state/any", meta)})
	return nil
}

// refresh re-reads the dirty services; it reports whether any data changed.
// On an error the dirty marks stay, so the next attempt reads them again.
func (t *tracker) refresh(ctx context.Context) (bool, error) {
	for name := range t.catalog {
		if _, ok := t.services[name]; !ok {
			t.dirty[name] = true // never read yet
		}
	}
	changed, err := t.readDirty(ctx)
	if err != nil {
		return false, err
	}
	if t.probe && t.maxIndex() < t.catalogIdx {
		// Not yet explained: the checks may tell which service moved.
		if err := t.readChecksNow(ctx); err != nil {
			return false, err
		}
		c, err := t.readDirty(ctx)
		if err != nil {
			return false, err
		}
		changed = changed || c
		if t.maxIndex() < t.catalogIdx {
			t.src.log.Debug("catalog change not explained by checks; re-reading every service", "catalog_index", t.catalogIdx, "services", len(t.catalog))
			t.src.m.sweeps.Inc()
			t.markAll()
			c, err := t.readDirty(ctx)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
	}
	t.probe = false
	changed = changed || t.removed
	t.removed = false
	return changed, nil
}

func (t *tracker) readDirty(ctx context.Context) (bool, error) {
	changed := false
	for _, name := range slices.Sorted(maps.Keys(t.dirty)) {
		if _, selected := t.catalog[name]; !selected {
			delete(t.dirty, name) // excluded, or gone from the catalog
			continue
		}
		entries, versions, meta, err := t.src.client.readService(ctx, name, &api.QueryOptions{}, always, inline)
		t.src.m.reads.Inc()
		if err != nil {
			return changed, fmt.Errorf("consul: read service %s: %w", name, err)
		}
		t.setDoubt("health/service/"+name, t.src.doubt("health/service", meta))
		old, had := t.services[name]
		if had && old.index == meta.LastIndex && old.versions == versions {
			delete(t.dirty, name)
			continue
		}
		changed = true
		t.setService(name, serviceData{index: meta.LastIndex, versions: versions, nodes: nodesOf(entries),
			part: t.src.opt.convert().BuildService(name, entries, t.src.rules)})
		delete(t.dirty, name)
	}
	return changed, nil
}

func (t *tracker) maxIndex() uint64 {
	var m uint64
	for _, d := range t.services {
		m = max(m, d.index)
	}
	return m
}

// snapshot builds the complete state from the last read of every selected
// service, logging and counting each newly invalid instance once.
func (t *tracker) snapshot() engine.Snapshot {
	st, touched, ok := t.mergeChanged()
	var dropped []registry.Dropped
	if !ok {
		parts := make([]registry.Part, 0, len(t.services))
		for _, d := range t.services {
			parts = append(parts, d.part)
		}
		st, dropped = registry.Merge(parts)
	}
	t.merged, t.changed = nil, nil
	if len(dropped) == 0 && len(t.badNames) == 0 {
		t.merged = st
	}
	for _, name := range slices.Sorted(maps.Keys(t.badNames)) {
		dropped = append(dropped, registry.Dropped{Service: name, Instance: "(every instance)", Reason: "service name: " + t.badNames[name]})
	}
	now := map[string]bool{}
	for _, d := range dropped {
		key := d.String()
		now[key] = true
		if !t.dropped[key] {
			t.src.m.dropped.Inc()
			t.src.log.Warn("invalid instance dropped", "service", d.Service, "instance", d.Instance, "reason", d.Reason)
		}
	}
	t.dropped = now
	snap := engine.Snapshot{Upstreams: st, Services: len(t.services), Dropped: dropped, Touched: touched}
	if len(t.doubts) > 0 {
		what := slices.Sorted(maps.Keys(t.doubts))[0]
		snap.Doubt = fmt.Sprintf("consul: %s answered %s", what, t.doubts[what])
		if len(t.doubts) > 1 {
			snap.Doubt += fmt.Sprintf(" (and %d more answers in doubt)", len(t.doubts)-1)
		}
	}
	return snap
}

// mergeChanged is registry.Merge of every service's part, made from the
// last snapshot's state when that is known to give the same: the merge
// before refused and dropped nothing, no service came or went since, and
// each service read anew still builds upstreams of the names it had, in
// the same order, and drops nothing. Each name then still belongs to its
// service, and replacing those upstreams is the whole change: a copy of
// the state, not a merge that sorts every service. ok is false when it
// cannot tell. touched names the upstreams of the services read anew
// (Snapshot.Touched): every other name keeps its Upstream.
func (t *tracker) mergeChanged() (st upstream.State, touched []string, ok bool) {
	if t.merged == nil || len(t.badNames) > 0 {
		return nil, nil, false
	}
	for name, old := range t.changed {
		now := t.services[name].part
		if len(old.Dropped) > 0 || len(now.Dropped) > 0 || len(old.Upstreams) != len(now.Upstreams) {
			return nil, nil, false
		}
		for i, u := range now.Upstreams {
			if u.Name != old.Upstreams[i].Name || t.merged[u.Name].Service != name {
				return nil, nil, false
			}
		}
	}
	st = maps.Clone(t.merged) // the engine holds the last snapshot's
	touched = []string{}      // not nil: a doubt alone touches nothing
	for name := range t.changed {
		for _, u := range t.services[name].part.Upstreams {
			st[u.Name] = u
			touched = append(touched, u.Name) // the same names as before
		}
	}
	return st, touched, true
}

// setDoubt records whether the newest answer of what is doubted. A change
// of doubt is a change of the snapshot: the engine must learn both that
// it should hold and that it may go on.
func (t *tracker) setDoubt(what, why string) {
	if t.doubts[what] == why {
		return
	}
	if why == "" {
		delete(t.doubts, what)
	} else {
		t.doubts[what] = why
	}
	t.removed = true // forces a snapshot (see refresh)
}

// DoubtOf says why an answer is not to be trusted, or "" if it is: without
// a known leader the data may be stale or partial; filtered by ACLs (and
// not allowed to be) it may lack what the token cannot see, which would
// look like removals. readAll names what the token must be able to read.
func DoubtOf(meta *api.QueryMeta, allowACLFiltered bool, readAll string) string {
	switch {
	case !meta.KnownLeader:
		return "without a known leader (X-Consul-KnownLeader: false)"
	case meta.ResultsFilteredByACLs && !allowACLFiltered:
		return "with results filtered by ACLs (X-Consul-Results-Filtered-By-ACLs: true); give the token read access to " +
			readAll + ", or set consul.allow_acl_filtered"
	}
	return ""
}

// doubt is DoubtOf for the services mode, counted under what.
func (s *Source) doubt(what string, meta *api.QueryMeta) string {
	why := DoubtOf(meta, s.opt.AllowACLFiltered, "every service")
	if why != "" {
		s.m.doubted.WithLabelValues(what).Inc()
	}
	return why
}

// modeMetrics are the families both modes declare, with the same help and
// labels: a SIGHUP switching the mode replaces them in one registry.
type modeMetrics struct {
	registryUp prometheus.Gauge
	errors     *prometheus.CounterVec
	doubted    *prometheus.CounterVec
	wakes      *prometheus.CounterVec
	dropped    prometheus.Counter
}

func newModeMetrics() modeMetrics {
	return modeMetrics{
		registryUp: metric.RegistryUp("consul"),
		errors: metric.CounterVec("swallowkeeper_consul_errors_total",
			"Failed Consul requests, by endpoint.", "endpoint"),
		doubted: metric.CounterVec("swallowkeeper_consul_doubted_answers_total",
			"Consul answers not trusted (no known leader, or filtered by ACLs), by endpoint; while any is, nothing changes.", "endpoint"),
		wakes: metric.CounterVec("swallowkeeper_consul_watch_wakes_total",
			"Blocking queries that returned, by watch.", "watch"),
		dropped: metric.Counter("swallowkeeper_invalid_instances_dropped_total",
			"Registry instances dropped because their data failed validation (each counted once while it stays invalid)."),
	}
}

type metrics struct {
	modeMetrics
	watchMu         sync.Mutex
	watchUp         map[string]bool // the watches of startWatches → last request succeeded
	up              *prometheus.GaugeVec
	reads           prometheus.Counter
	sweeps          prometheus.Counter
	fullChecksReads prometheus.Counter
}

// newMetrics declares the source's series; registry_up is 1 once every
// one of watches has succeeded.
func newMetrics(reg prometheus.Registerer, watches ...string) *metrics {
	m := &metrics{
		modeMetrics: newModeMetrics(),
		watchUp:     map[string]bool{},
		up: metric.GaugeVec("swallowkeeper_consul_watch_up",
			"1 while the watch's last request succeeded, 0 after an error.", "watch"),
		reads: metric.Counter("swallowkeeper_consul_service_reads_total",
			"Reads of /v1/health/service/<name>."),
		fullChecksReads: metric.Counter("swallowkeeper_consul_full_checks_decodes_total",
			"Answers of /v1/health/state/any decoded whole; the others were compared with the previous answer and only the checks that differ decoded."),
		sweeps: metric.Counter("swallowkeeper_consul_sweeps_total",
			"Re-reads of every service after a catalog change nothing else explained."),
	}
	for _, w := range watches {
		m.watchUp[w] = false
	}
	metric.Register(reg, m.registryUp, m.errors, m.wakes, m.up, m.reads, m.sweeps, m.fullChecksReads, m.dropped, m.doubted)
	return m
}

// isUp reports whether the watch what's last request succeeded.
func (m *metrics) isUp(what string) bool {
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	return m.watchUp[what]
}

// setWatch records the outcome of the watch what's last request in
// swallowkeeper_consul_watch_up and sets registry_up: 1 only while every
// watch's last request succeeded.
func (m *metrics) setWatch(what string, up bool) {
	m.up.WithLabelValues(what).Set(metric.Bool(up))
	m.watchMu.Lock()
	defer m.watchMu.Unlock()
	m.watchUp[what] = up
	all := 1.0
	for _, ok := range m.watchUp {
		if !ok {
			all = 0
		}
	}
	m.registryUp.Set(all)
}
