package consul

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
)

// Watch modes of the services mode (Options.Watch).
const (
	// WatchCatalog follows the whole datacenter with two long polls, the
	// catalog's service list and every check (/v1/health/state/any), and
	// re-reads the services they show changed. Few connections at any
	// size, but each change makes Consul send, and the source read, every
	// check of the datacenter: megabytes at thousands of instances.
	WatchCatalog = "catalog"
	// WatchPerService follows the catalog's service list and holds one
	// long poll of /v1/health/service/<name> per selected service, as
	// consul-template and Prometheus do. A change then costs one answer of
	// the service that changed, for Consul and for the source, and Consul
	// agents serve these queries from their streaming backend (or cache)
	// rather than asking the servers. The polls need one connection each
	// over HTTP/1.1: use https, where HTTP/2 carries them over a few
	// connections, or raise the agent's limits.http_max_conns_per_client.
	WatchPerService = "per_service"
)

// MaxConnsFor is the most connections the source opens to the agent in
// watch mode w: a fixed few with WatchCatalog; with WatchPerService no
// limit, since a long poll waiting for a connection would never be read
// (over HTTP/2 the polls share connections, up to the agent's stream limit
// on each: 250 for Consul's Go server).
func MaxConnsFor(w string) int {
	if w == WatchPerService {
		return 0
	}
	return MaxConns
}

// plainHTTPPolls is how many long polls over plain http the source holds
// before it warns: Consul's default limit per client address is 200.
const plainHTTPPolls = 150

// serviceEvent is one answer of a service's long poll that changed what
// the source knows of the service, or whether it is doubted.
type serviceEvent struct {
	name  string
	gen   uint64 // of the follower that read it: a name removed and added again gets a new one
	data  serviceData
	doubt string
}

// follower is the long poll of one service.
type follower struct {
	gen    uint64
	cancel context.CancelFunc
}

// runPerService is Run in WatchPerService mode: the catalog watch says
// which services exist, and one follower per selected service says what
// each holds. The first snapshot waits until every selected service has
// answered once, so that a slow service is not taken for an empty one.
func (s *Source) runPerService(ctx context.Context, out chan<- engine.Snapshot) {
	catalogC := make(chan catalogEvent, 1)
	go watch(ctx, s, "catalog/services", catalogC, func(o *api.QueryOptions) (catalogEvent, *api.QueryMeta, error) {
		body, meta, err := s.client.getRaw(ctx, "/v1/catalog/services", o, nil)
		return catalogEvent{body: body}, meta, err
	}, func(e *catalogEvent, idx uint64, reset bool, doubt string) {
		e.index, e.reset, e.doubt = idx, reset, doubt
	})
	events := make(chan serviceEvent, 64)
	st := newTracker(s)
	followers := map[string]follower{}
	var (
		gen    uint64
		wg     sync.WaitGroup
		warned bool // about plain http
	)
	defer func() {
		for _, f := range followers {
			f.cancel()
		}
		wg.Wait()
	}()
	for {
		changed := false
		select {
		case <-ctx.Done():
			return
		case ev := <-catalogC:
			st.onCatalog(ev)
			// The followers see every change of their services; the
			// catalog only says which services there are.
			st.probe = false
			clear(st.dirty)
			if !warned && s.client.cfg.Scheme != "https" && len(st.catalog) > plainHTTPPolls {
				warned = true
				s.log.Warn("consul.watch: per_service over plain http holds one connection per service; an agent refuses more than limits.http_max_conns_per_client (default 200) from one address: use https (HTTP/2) or raise that limit",
					"services", len(st.catalog))
			}
			for name := range st.catalog {
				if _, ok := followers[name]; !ok {
					gen++
					fctx, cancel := context.WithCancel(ctx)
					followers[name] = follower{gen: gen, cancel: cancel}
					g := gen
					wg.Go(func() { s.follow(fctx, name, g, events) })
				}
			}
			for name, f := range followers {
				if _, ok := st.catalog[name]; !ok {
					f.cancel()
					delete(followers, name)
					s.followerGone(name)
				}
			}
			// With no follower (no service selected) nothing else would
			// set health/service, and registry_up would stay 0.
			s.followerGone("")
		case ev := <-events:
			if f, ok := followers[ev.name]; !ok || f.gen != ev.gen {
				continue // from a follower stopped since
			}
			st.setDoubt("health/service/"+ev.name, ev.doubt)
			if old, had := st.services[ev.name]; !had || old.index != ev.data.index || !sameVersions(old.versions, ev.data.versions) {
				st.setService(ev.name, ev.data)
				changed = true
			}
		}
		if st.catalog == nil || (!st.sent && !st.everyServiceRead()) {
			continue
		}
		changed = changed || st.removed
		st.removed = false
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

// everyServiceRead reports whether every selected service has answered.
// Only the first snapshot waits for that: after it, a service new in the
// catalog is absent from snapshots until its first answer, as it was
// absent from the catalog before (nothing of it is in nginx to lose), and
// the others' changes do not wait for it.
func (t *tracker) everyServiceRead() bool {
	for name := range t.catalog {
		if _, ok := t.services[name]; !ok {
			return false
		}
	}
	return true
}

// follow runs the long poll of service name until ctx ends, sending each
// answer that changes the service's instances, or whether the answer is
// doubted. It follows Consul's index rules as watch does; an answer whose
// index moved for nothing of this service (a node the service does not
// run on, say) is dropped here, not sent.
func (s *Source) follow(ctx context.Context, name string, gen uint64, events chan<- serviceEvent) {
	what := "health/service/" + name
	var (
		index    uint64
		last     []entryVersion
		lastSent bool
		doubt    string
		b        = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	)
	for ctx.Err() == nil {
		wait := index
		if b.Attempts() > 0 {
			wait = 0 // see watch: ask without blocking after a failure
		}
		o := (&api.QueryOptions{WaitIndex: wait, WaitTime: s.opt.WaitTime}).WithContext(ctx)
		entries, meta, err := s.client.Health().Service(name, "", false, o)
		s.m.reads.Inc()
		if ctx.Err() != nil {
			return // stopped: followerGone has forgotten it, nothing may report it again
		}
		if err != nil {
			s.m.errors.WithLabelValues("health/service").Inc()
			s.followerFailed(name, fmt.Errorf("consul: watch %s: %w", what, err))
			d := b.Next()
			s.log.Warn("watch failed; retrying", "watch", what, "err", err, "retry_in", d, "attempt", b.Attempts())
			if s.waitForAgent(ctx, d) != nil {
				return
			}
			continue
		}
		b.Reset()
		s.followerFailed(name, nil)
		if meta.LastIndex == index && index != 0 {
			continue // the wait timed out: nothing changed
		}
		if meta.LastIndex < index {
			last = nil // the index went backwards: this answer is a full read
		}
		index = max(meta.LastIndex, 1) // never block on 0
		entries = OnlyService(entries, name)
		versions := versionsOf(entries)
		why := s.doubt("health/service", streamingMeta(meta))
		if lastSent && why == doubt && last != nil && sameVersions(last, versions) {
			continue
		}
		last, doubt, lastSent = versions, why, true
		ev := serviceEvent{name: name, gen: gen, doubt: why, data: serviceData{index: meta.LastIndex, versions: versions,
			part: s.opt.convert().BuildService(name, entries, s.rules)}}
		select {
		case events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// followerFailed records the outcome of service name's last request: in
// the source's health (each follower its own connection) and in
// swallowkeeper_consul_watch_up{watch="health/service"}, 1 while no
// follower's last request failed.
func (s *Source) followerFailed(name string, err error) {
	s.reach.Report("health/service/"+name, err)
	s.failingMu.Lock()
	defer s.failingMu.Unlock()
	if err != nil {
		s.failing[name] = true
	} else {
		delete(s.failing, name)
	}
	s.m.setWatch("health/service", len(s.failing) == 0)
}

// followerGone forgets a stopped follower's outcome: its service left the
// catalog, and an error it had must not keep the source down. It also
// sets swallowkeeper_consul_watch_up{watch="health/service"} from the
// followers left ("": no follower to forget).
func (s *Source) followerGone(name string) {
	s.reach.Forget("health/service/" + name)
	s.failingMu.Lock()
	defer s.failingMu.Unlock()
	delete(s.failing, name)
	s.m.setWatch("health/service", len(s.failing) == 0)
}

// streamingMeta is meta as DoubtOf should judge it. Consul's streaming
// backend, which an agent uses for blocking queries of
// /v1/health/service/<name> (X-Consul-Query-Backend: streaming), always
// answers X-Consul-KnownLeader: false (seen on 1.20.1, for a server agent
// with a leader too): the agent's view is fed by events from the servers
// and knows nothing of their leader. Whether the servers have one is then
// what the catalog watch says: its answers come from the blocking-query
// backend, carry the header, and a doubted one holds every change.
func streamingMeta(meta *api.QueryMeta) *api.QueryMeta {
	if meta.QueryBackend != api.QueryBackendStreaming || meta.KnownLeader {
		return meta
	}
	m := *meta
	m.KnownLeader = true
	return &m
}
