package consul

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
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
	// consul-template and Prometheus do. A change then costs the answers
	// of the service that changed (the agent's streaming answer, a cue,
	// and one read it prompts; see follow), for Consul and for the
	// source, and agents hold the long polls on their streaming backend
	// rather than on the servers. The polls need one connection each
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
	catalogC := s.watchCatalog(ctx, true)
	events := make(chan serviceEvent, 64)
	deepCtx, stopDeep := context.WithCancel(ctx)
	f := &followers{src: s, st: newTracker(s), events: events, running: map[string]follower{},
		deep: newDeepPool(deepCtx, runtime.GOMAXPROCS(0))}
	f.probe.ctx = ctx
	defer func() {
		f.stopAll() // the followers first: a job they handed the pool runs to its end
		stopDeep()
		f.deep.stop()
	}()
	st := f.st
	reread := backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	var rereadC <-chan time.Time
	for {
		changed := false
		select {
		case <-ctx.Done():
			return
		case ev := <-catalogC:
			if st.onCatalog(ev) {
				f.follow(ctx)
			} else {
				// The same services: only an instance came, went or
				// changed, which its follower sees. Not a pass over
				// every service on each such change.
				f.settle()
			}
		case <-rereadC:
			rereadC = nil
			if err := st.reread(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("re-read after a broken answer failed; will retry", "err", err)
			}
			f.follow(ctx)
		case ev := <-events:
			changed = f.take(ev)
			// Take what else came meanwhile (a node's failure wakes every
			// service on it): one snapshot for all of it, not one each.
			for more := true; more; {
				select {
				case ev := <-events:
					changed = f.take(ev) || changed
				default:
					more = false
				}
			}
		}
		// A catalog answer that did not decode moved the watch's index: read
		// it again, with backoff, until one does (see Run).
		armReread(st.rereadCatalog, reread, &rereadC)
		// While the catalog watch fails, nothing is trusted: the agent
		// or the servers are in trouble, and a follower's answer may come
		// from the agent's view of a server that lost touch.
		why := ""
		if !s.m.isUp("catalog/services") && st.catalog != nil {
			why = "no answer (the catalog watch is failing; the services' answers may be stale)"
		}
		st.setDoubt("catalog/services (watch)", why)
		if st.catalog == nil || (!st.sent && !st.everyServiceRead()) {
			continue
		}
		changed = changed || st.removed
		st.removed = false
		if !changed && st.sent {
			continue
		}
		if !st.send(ctx, out) {
			return
		}
	}
}

// followers are the long polls of runPerService, one per selected
// service, and the tracker they feed; Run's goroutine only.
type followers struct {
	src     *Source
	st      *tracker
	events  chan serviceEvent
	running map[string]follower
	gen     uint64
	wg      sync.WaitGroup
	warned  bool // about plain http
	probe   agentProbe
	deep    *deepPool // decodes and builds for the followers
}

// agentProbe lets the followers in backoff wait together for the agent to
// answer one status request a second, as one waits in waitForAgent,
// rather than each asking on its own: 1,000 requests a second at 1,000
// services during an outage.
type agentProbe struct {
	ctx  context.Context // Run's: the probe outlives any one follower
	mu   sync.Mutex
	back chan struct{} // closed when the agent answered; nil while no probe runs
}

// wait sleeps d, or less if the agent answers a status request before;
// it returns ctx's error when ctx ends.
func (p *agentProbe) wait(ctx context.Context, c *Client, d time.Duration) error {
	p.mu.Lock()
	if p.back == nil {
		p.back = make(chan struct{})
		go p.run(c, p.back)
	}
	back := p.back
	p.mu.Unlock()
	if err := backoff.SleepOr(ctx, d, back); err != nil {
		return err
	}
	select {
	case <-back:
		// Woken with every other follower waiting: spread the reads that
		// follow over catchUpSpread instead of sending them all at once.
		return backoff.Sleep(ctx, rand.N(catchUpSpread))
	default:
		return nil
	}
}

// catchUpSpread is how long the followers woken together by the agent's
// answer take to read again, spread at random.
const catchUpSpread = time.Second

// run asks the agent every agentProbeEvery until it answers, then closes
// back for every waiter.
func (p *agentProbe) run(c *Client, back chan struct{}) {
	for {
		if backoff.Sleep(p.ctx, agentProbeEvery) != nil {
			return // Run ended: its followers end with it
		}
		pctx, cancel := context.WithTimeout(p.ctx, agentProbeEvery)
		_, err := c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(pctx))
		cancel()
		if err == nil {
			p.mu.Lock()
			p.back = nil
			p.mu.Unlock()
			close(back)
			return
		}
	}
}

// follow starts a follower for each selected service that has none and
// stops those of services no longer selected.
func (f *followers) follow(ctx context.Context) {
	s, st := f.src, f.st
	f.settle()
	if !f.warned && s.client.cfg.Scheme != "https" && len(st.catalog) > plainHTTPPolls {
		f.warned = true
		s.log.Warn("consul.watch: per_service over plain http holds one connection per service; an agent refuses more than limits.http_max_conns_per_client (default 200) from one address: use https (HTTP/2) or raise that limit",
			"services", len(st.catalog))
	}
	for name := range st.catalog {
		if _, ok := f.running[name]; !ok {
			f.gen++
			fctx, cancel := context.WithCancel(ctx)
			f.running[name] = follower{gen: f.gen, cancel: cancel}
			g := f.gen
			f.wg.Go(func() { s.follow(fctx, name, g, f.events, &f.probe, f.deep.run) })
		}
	}
	for name, fl := range f.running {
		if _, ok := st.catalog[name]; !ok {
			fl.cancel()
			delete(f.running, name)
			s.followerGone(name)
		}
	}
	// With no follower (no service selected) nothing else would set
	// health/service, and registry_up would stay 0.
	s.followerGone("")
}

// settle drops what a catalog answer asks of the catalog mode (a probe
// of the checks, services to read): the followers see every change of
// their services; the catalog only says which services there are.
func (f *followers) settle() {
	f.st.probe = false
	clear(f.st.dirty)
}

// take applies a follower's answer; it reports whether the service's data
// changed. An answer of a follower stopped since is dropped.
func (f *followers) take(ev serviceEvent) bool {
	if fl, ok := f.running[ev.name]; !ok || fl.gen != ev.gen {
		return false
	}
	st := f.st
	st.setDoubt("health/service/"+ev.name, ev.doubt)
	if old, had := st.services[ev.name]; had && old.index == ev.data.index && old.versions == ev.data.versions {
		return false
	}
	st.setService(ev.name, ev.data)
	return true
}

// stopAll stops every follower and waits for them.
func (f *followers) stopAll() {
	for _, fl := range f.running {
		fl.cancel()
	}
	f.wg.Wait()
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
//
// An answer of Consul's streaming backend (which agents use for these
// long polls) is only a cue: it says neither whether the servers have a
// leader nor whether ACLs filtered it (X-Consul-KnownLeader is always
// false, and the servers drop what the token cannot read without a
// word), so the service is read again at once without an index, from the
// blocking-query backend, whose answer says both, and that answer is the
// one sent. A change costs one more small read, and every answer the
// source trusts is one it can doubt, as in catalog mode.
func (s *Source) follow(ctx context.Context, name string, gen uint64, events chan<- serviceEvent, probe *agentProbe, deep runner) {
	what := "health/service/" + name
	var (
		index    uint64
		last     serviceVersion
		lastSent bool
		doubt    string
		reread   bool   // the last answer was a streaming one: read without an index
		cue      uint64 // its index: the next long poll waits past it
		b        = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
	)
	for ctx.Err() == nil {
		wait := index
		if b.Attempts() > 0 || reread {
			wait = 0 // see watch: ask without blocking after a failure
		}
		o := &api.QueryOptions{WaitIndex: wait, WaitTime: s.opt.WaitTime}
		entries, versions, meta, err := s.client.readService(ctx, name, o, func(m *api.QueryMeta) bool {
			return !isCue(m, wait) // a cue's entries are never used
		}, deep)
		s.m.reads.Inc()
		if ctx.Err() != nil {
			return // stopped: followerGone has forgotten it
		}
		if err != nil {
			s.m.errors.WithLabelValues("health/service").Inc()
			s.followerFailed(ctx, name, fmt.Errorf("consul: watch %s: %w", what, err))
			d := b.Next()
			agentDown := !s.m.isUp("catalog/services")
			// While the catalog watch fails too, the agent is what fails,
			// and the catalog watch says so: one line, not one per service.
			level := slog.LevelDebug
			if !agentDown && (b.Attempts() == 1 || b.Attempts()%10 == 0) {
				level = slog.LevelWarn
			}
			s.log.Log(ctx, level, "watch failed; retrying", "watch", what, "err", err, "retry_in", d, "attempt", b.Attempts())
			// Only an agent that does not answer is worth waiting for with
			// the shared probe; an error of this service alone (a 403, a
			// 429) waits out its backoff.
			if agentDown {
				err = probe.wait(ctx, s.client, d)
			} else {
				err = backoff.Sleep(ctx, d)
			}
			if err != nil {
				return
			}
			continue
		}
		b.Reset()
		s.followerFailed(ctx, name, nil)
		if meta.LastIndex == index && index != 0 && wait != 0 {
			continue // the wait timed out: nothing changed
		}
		if isCue(meta, wait) {
			reread, cue = true, meta.LastIndex // a cue: read it again without an index
			continue
		}
		reread = false
		if meta.LastIndex < index {
			lastSent = false // the index went backwards: this answer is a full read
		}
		// Never block on 0; and not below the cue, or a server behind the
		// agent's view would make every long poll return at once.
		index = max(meta.LastIndex, cue, 1)
		why := s.doubt("health/service", meta)
		if lastSent && why == doubt && last == versions {
			continue
		}
		last, doubt, lastSent = versions, why, true
		var part registry.Part
		if !deep(ctx, func() { part = s.opt.convert().BuildService(name, entries, s.rules) }) {
			return
		}
		ev := serviceEvent{name: name, gen: gen, doubt: why, data: serviceData{index: meta.LastIndex, versions: versions, part: part}}
		select {
		case events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// isCue reports whether an answer to a long poll that waited past index
// wait is one of the streaming backend: only a cue to read again (see
// follow).
func isCue(meta *api.QueryMeta, wait uint64) bool {
	return meta.QueryBackend == api.QueryBackendStreaming && wait != 0
}

// followerFailed records the outcome of service name's last request: in
// the source's health (each follower its own connection) and in
// swallowkeeper_consul_watch_up{watch="health/service"}, 1 while no
// follower's last request failed.
//
// It does nothing once ctx (the follower's) has ended: Run cancels a
// follower before followerGone forgets it, both under failingMu here, so
// a request that was in flight then cannot report a service that left.
func (s *Source) followerFailed(ctx context.Context, name string, err error) {
	s.failingMu.Lock()
	defer s.failingMu.Unlock()
	if ctx.Err() != nil {
		return
	}
	s.reach.Report("health/service/"+name, err)
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
	s.failingMu.Lock()
	defer s.failingMu.Unlock()
	s.reach.Forget("health/service/" + name)
	delete(s.failing, name)
	s.m.setWatch("health/service", len(s.failing) == 0)
}
