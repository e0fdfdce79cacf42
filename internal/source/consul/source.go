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
package consul

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
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
}

// Source watches one Consul datacenter.
type Source struct {
	client *api.Client
	rules  registry.Rules
	opt    Options
	log    *slog.Logger
	m      *metrics
	reach  engine.Reachability
}

var _ engine.Source = (*Source)(nil)

// Health implements engine.HealthReporter: up while both watches' last
// requests succeeded.
func (s *Source) Health() engine.Health { return s.reach.Health() }

// New returns a source. The client's transport should allow a handful of
// connections to the agent (see NewClient).
func New(client *api.Client, rules registry.Rules, opt Options, log *slog.Logger, reg prometheus.Registerer) *Source {
	if opt.WaitTime <= 0 {
		opt.WaitTime = 5 * time.Minute
	}
	if opt.RetryBase <= 0 {
		opt.RetryBase = 250 * time.Millisecond
	}
	if opt.RetryCap <= 0 {
		opt.RetryCap = 30 * time.Second
	}
	return &Source{client: client, rules: rules, opt: opt, log: log.With("source", "consul"), m: newMetrics(reg)}
}

// MaxConns is the most connections the source opens to the agent: two long
// polls, and reads beside them.
const MaxConns = 4

// NewClient returns a Consul API client whose transport opens at most
// MaxConns connections to the agent.
func NewClient(cfg *api.Config) (*api.Client, error) {
	if cfg.Transport == nil {
		cfg.Transport = api.DefaultConfig().Transport
	}
	cfg.Transport.MaxConnsPerHost = MaxConns
	cfg.Transport.MaxIdleConnsPerHost = MaxConns
	return api.NewClient(cfg)
}

type catalogEvent struct {
	index    uint64
	reset    bool   // the index went backwards: Consul's state was replaced
	doubt    string // why this answer is not to be trusted, "" if it is
	services map[string][]string
}

type checksEvent struct {
	index  uint64
	reset  bool
	doubt  string
	checks []checkLite
}

// checkLite is the part of a health check the source uses. The checks
// watch returns every check of the datacenter on each change; decoding
// only these fields (not Output, Notes, Definition, which an HTTP check
// fills with response bodies) is what keeps a change cheap at thousands of
// instances.
type checkLite struct {
	Node        string
	CheckID     string
	Status      string
	ServiceID   string
	ServiceName string
	ModifyIndex uint64
}

// readChecks reads /v1/health/state/any into checkLite.
func (s *Source) readChecks(o *api.QueryOptions) ([]checkLite, *api.QueryMeta, error) {
	var out []checkLite
	meta, err := s.client.Raw().Query("/v1/health/state/any", &out, o)
	return out, meta, err
}

// serviceData is the last complete read of one service.
type serviceData struct {
	index   uint64
	entries []*api.ServiceEntry
	// instances is entries converted once, at read time: a snapshot is
	// built from every service, so converting there would redo thousands
	// of unchanged services on each change.
	instances []registry.Instance
}

// Run implements engine.Source.
func (s *Source) Run(ctx context.Context, out chan<- engine.Snapshot) {
	catalogC := make(chan catalogEvent, 1)
	checksC := make(chan checksEvent, 1)
	go watch(ctx, s, "catalog/services", catalogC, func(o *api.QueryOptions) (catalogEvent, *api.QueryMeta, error) {
		svcs, meta, err := s.client.Catalog().Services(o)
		return catalogEvent{services: svcs}, meta, err
	}, func(e *catalogEvent, idx uint64, reset bool, doubt string) {
		e.index, e.reset, e.doubt = idx, reset, doubt
	})
	go watch(ctx, s, "health/state/any", checksC, func(o *api.QueryOptions) (checksEvent, *api.QueryMeta, error) {
		checks, meta, err := s.readChecks(o)
		return checksEvent{checks: checks}, meta, err
	}, func(e *checksEvent, idx uint64, reset bool, doubt string) {
		e.index, e.reset, e.doubt = idx, reset, doubt
	})

	st := &tracker{
		src:      s,
		doubts:   map[string]string{},
		catalog:  nil,
		checks:   map[string]checkLite{},
		services: map[string]serviceData{},
		dirty:    map[string]bool{},
		dropped:  map[string]bool{},
	}
	var (
		retry    = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
		retryC   <-chan time.Time
		resync   *time.Ticker
		resyncC  <-chan time.Time
		haveBoth = func() bool { return st.catalog != nil && st.haveChecks }
	)
	if s.opt.Resync > 0 {
		resync = time.NewTicker(s.opt.Resync)
		defer resync.Stop()
		resyncC = resync.C
	}
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
				select {
				case cev := <-checksC:
					st.onChecks(cev)
				case <-time.After(probeGrace):
				case <-ctx.Done():
					return
				}
			}
		case ev := <-checksC:
			st.onChecks(ev)
			retryC = nil
		case <-resyncC:
			st.markAll()
		case <-retryC:
			retryC = nil
		}
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
		snap := st.snapshot()
		select {
		case out <- snap:
			st.sent = true
		case <-ctx.Done():
			return
		}
	}
}

// watch runs one blocking query forever, following Consul's documented
// index rules, and hands each changed result to ch, replacing an unread
// older one.
func watch[E any](ctx context.Context, s *Source, what string, ch chan E,
	query func(*api.QueryOptions) (E, *api.QueryMeta, error), stamp func(*E, uint64, bool, string)) {
	var index uint64
	b := backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	for ctx.Err() == nil {
		o := (&api.QueryOptions{WaitIndex: index, WaitTime: s.opt.WaitTime}).WithContext(ctx)
		ev, meta, err := query(o)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.errors.WithLabelValues(what).Inc()
			s.m.up.WithLabelValues(what).Set(0)
			s.reach.Report(what, fmt.Errorf("consul: watch %s: %w", what, err))
			d := b.Next()
			s.log.Warn("watch failed; retrying", "watch", what, "err", err, "retry_in", d, "attempt", b.Attempts())
			if s.waitForAgent(ctx, d) != nil {
				return
			}
			continue
		}
		if b.Attempts() > 0 {
			s.log.Info("watch recovered", "watch", what, "after_attempts", b.Attempts())
		}
		b.Reset()
		s.m.up.WithLabelValues(what).Set(1)
		s.reach.Report(what, nil)
		s.m.wakes.WithLabelValues(what).Inc()
		reset := false
		switch {
		case meta.LastIndex == index && index != 0:
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
const probeGrace = 250 * time.Millisecond

// agentProbeEvery is how often a watch in backoff asks whether the agent
// answers again: a cheap request, so that the catch-up after an outage
// takes about a second instead of the rest of a backoff that grew during
// it. It is not a retry of the watch: a dead agent still sees the watch's
// jittered, capped backoff.
const agentProbeEvery = time.Second

// waitForAgent sleeps d, or less if the agent answers a status request
// before; it returns ctx's error when ctx ends.
func (s *Source) waitForAgent(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		if err := backoff.Sleep(ctx, min(left, agentProbeEvery)); err != nil {
			return err
		}
		if time.Until(deadline) <= 0 {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, agentProbeEvery)
		_, err := s.client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(pctx))
		cancel()
		if err == nil {
			return nil
		}
	}
}

// tracker holds what the source knows, in the Run goroutine only.
type tracker struct {
	src        *Source
	catalog    map[string][]string // selected services and their tags
	catalogIdx uint64
	checks     map[string]checkLite // by node/checkID
	haveChecks bool
	services   map[string]serviceData
	dirty      map[string]bool
	sweep      bool              // re-read every service
	probe      bool              // read the checks once, then maybe sweep
	dropped    map[string]bool   // instances reported as invalid, to log each once
	badNames   map[string]string // services whose name cannot be an upstream name → why
	removed    bool              // a service left the catalog since the last snapshot
	sent       bool
	doubts     map[string]string // what → why its last answer is doubted
}

func (t *tracker) markAll() {
	for name := range t.catalog {
		t.dirty[name] = true
	}
}

func (t *tracker) onCatalog(ev catalogEvent) {
	t.setDoubt("catalog/services", ev.doubt)
	selected := map[string][]string{}
	badNames := map[string]string{}
	for name, tags := range ev.services {
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
			delete(t.services, name)
			delete(t.dirty, name)
			delete(t.doubts, "health/service/"+name)
			t.removed = true
			explained = true
		}
	}
	t.catalog = selected
	t.catalogIdx = ev.index
	if !explained && len(ev.services) > 0 {
		// An instance came, went or changed without touching the name or
		// tag lists; refresh decides whether the checks explain it.
		t.probe = true
	}
}

func (t *tracker) onChecks(ev checksEvent) {
	t.setDoubt("health/state/any", ev.doubt)
	next := make(map[string]checkLite, len(ev.checks))
	for _, c := range ev.checks {
		next[c.Node+"/"+c.CheckID] = c
	}
	if ev.reset {
		t.markAll()
	}
	for key, c := range next {
		if old, ok := t.checks[key]; !ok || old.Status != c.Status || old.ModifyIndex != c.ModifyIndex || old.ServiceID != c.ServiceID {
			t.touch(c)
		}
	}
	for key, c := range t.checks {
		if _, ok := next[key]; !ok {
			t.touch(c)
		}
	}
	t.checks = next
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
		for _, e := range d.entries {
			if e.Node != nil && e.Node.Node == c.Node {
				t.dirty[name] = true
				break
			}
		}
	}
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
		o := (&api.QueryOptions{}).WithContext(ctx)
		checks, meta, err := t.src.readChecks(o)
		if err != nil {
			return false, fmt.Errorf("consul: read health/state/any: %w", err)
		}
		t.onChecks(checksEvent{index: meta.LastIndex, checks: checks})
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
		o := (&api.QueryOptions{}).WithContext(ctx)
		entries, meta, err := t.src.client.Health().Service(name, "", false, o)
		t.src.m.reads.Inc()
		if err != nil {
			return changed, fmt.Errorf("consul: read service %s: %w", name, err)
		}
		t.setDoubt("health/service/"+name, t.src.doubt("health/service", meta))
		slim(entries)
		old, had := t.services[name]
		if !had || old.index != meta.LastIndex || !sameEntries(old.entries, entries) {
			changed = true
		}
		t.services[name] = serviceData{index: meta.LastIndex, entries: entries, instances: Instances(entries, t.src.opt.OnlyPassing)}
		delete(t.dirty, name)
	}
	return changed, nil
}

// slim drops what the source never reads from a service's entries (check
// output and definitions, which HTTP checks fill with response bodies), so
// that thousands of instances stay cheap to hold.
func slim(entries []*api.ServiceEntry) {
	for _, e := range entries {
		for _, c := range e.Checks {
			if c != nil {
				c.Output, c.Notes, c.Definition = "", "", api.HealthCheckDefinition{}
			}
		}
	}
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
	services := make(map[string][]registry.Instance, len(t.services))
	for name, d := range t.services {
		services[name] = d.instances
	}
	st, dropped := registry.Build(services, t.src.rules)
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
	snap := engine.Snapshot{Upstreams: st, Services: len(t.services), Dropped: dropped}
	if len(t.doubts) > 0 {
		what := slices.Sorted(maps.Keys(t.doubts))[0]
		snap.Doubt = fmt.Sprintf("consul: %s answered %s", what, t.doubts[what])
		if len(t.doubts) > 1 {
			snap.Doubt += fmt.Sprintf(" (and %d more answers in doubt)", len(t.doubts)-1)
		}
	}
	return snap
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

// doubt says why an answer is not to be trusted, or "" if it is: without a
// known leader the data may be stale or partial; filtered by ACLs it may
// lack services the token cannot see, which would look like removals.
func (s *Source) doubt(what string, meta *api.QueryMeta) string {
	var why string
	switch {
	case !meta.KnownLeader:
		why = "without a known leader (X-Consul-KnownLeader: false)"
	case meta.ResultsFilteredByACLs && !s.opt.AllowACLFiltered:
		why = "with results filtered by ACLs (X-Consul-Results-Filtered-By-ACLs: true); give the token read access to every service, or set consul.allow_acl_filtered"
	default:
		return ""
	}
	s.m.doubted.WithLabelValues(what).Inc()
	return why
}

// sameEntries compares what Build reads from two reads of a service.
func sameEntries(a, b []*api.ServiceEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Service == nil || y.Service == nil || x.Node == nil || y.Node == nil {
			return false
		}
		if x.Service.ModifyIndex != y.Service.ModifyIndex || x.Node.ModifyIndex != y.Node.ModifyIndex || len(x.Checks) != len(y.Checks) {
			return false
		}
		for j := range x.Checks {
			if x.Checks[j].Status != y.Checks[j].Status || x.Checks[j].ModifyIndex != y.Checks[j].ModifyIndex {
				return false
			}
		}
	}
	return true
}

type metrics struct {
	errors  *prometheus.CounterVec
	wakes   *prometheus.CounterVec
	up      *prometheus.GaugeVec
	reads   prometheus.Counter
	sweeps  prometheus.Counter
	dropped prometheus.Counter
	doubted *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swallowkeeper_consul_errors_total",
			Help: "Failed Consul requests, by endpoint.",
		}, []string{"endpoint"}),
		doubted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swallowkeeper_consul_doubted_answers_total",
			Help: "Consul answers not trusted (no known leader, or filtered by ACLs), by endpoint; while any is, nothing changes.",
		}, []string{"endpoint"}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swallowkeeper_consul_watch_wakes_total",
			Help: "Blocking queries that returned, by watch.",
		}, []string{"watch"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "swallowkeeper_consul_watch_up",
			Help: "1 while the watch's last request succeeded, 0 after an error.",
		}, []string{"watch"}),
		reads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_consul_service_reads_total",
			Help: "Reads of /v1/health/service/<name>.",
		}),
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_consul_sweeps_total",
			Help: "Re-reads of every service after a catalog change nothing else explained.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swallowkeeper_invalid_instances_dropped_total",
			Help: "Registry instances dropped because their data failed validation (each counted once while it stays invalid).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.errors, m.wakes, m.up, m.reads, m.sweeps, m.dropped, m.doubted)
	}
	return m
}
