// Package zookeeper is the ZooKeeper source: it follows the service
// directories under one root (<root>/<service>/<instance>) and sends
// complete snapshots. Layout says how an instance znode is read: Curator
// service discovery (Spring Cloud Zookeeper) or plain "<ip>:<port>" names.
//
// ZooKeeper watches are one-shot and go-zookeeper v1.0.4 has no persistent
// recursive watches (AddWatch), so the source keeps a child watch on the
// root and on every service directory and a data watch on every instance
// znode, and re-arms each one when it fires. A watch event is only a cue:
// the source marks what it touches dirty, re-reads just that, and sends the
// whole state once nothing is dirty any more. A read error leaves the marks
// in place and sends nothing (stale beats partial).
//
// Session handling: while the connection is down nothing is read and
// nothing is sent; the engine keeps the last state. When a session is
// (re)established the source re-reads everything before it sends again;
// after a session expiry every watch is gone, so that re-read re-arms them
// all. A snapshot is only sent when its reads all ran in one session that is
// still up. See README.md.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/source/runloop"
	"github.com/swallowkeeper/swallowkeeper/internal/zkdial"
)

// Options configure the source. Nothing is defaulted here: the
// configuration resolves every default (config.Config.ZooKeeperOptions),
// and a zero value means what it says.
type Options struct {
	// Root is the znode whose children are the service directories, an
	// absolute path ("/services" is where Curator and Spring Cloud
	// Zookeeper register). "/" is allowed; its "zookeeper" child is
	// skipped. A trailing slash is dropped.
	Root string
	// Layout says what an instance znode's name and data mean:
	// layout.Curator is Apache Curator service discovery (Spring Cloud
	// Zookeeper), a znode named by the instance id holding Curator's
	// ServiceInstance JSON; layout.Plain names the znode "<ip>:<port>"
	// ("[<ipv6>]:<port>") and its data is empty or nginx-upsync-module's
	// server parameters (weight, max_fails, fail_timeout in seconds,
	// max_conns, backup, down).
	Layout layout.Layout
	// SessionTimeout is the session timeout asked of ZooKeeper; the server
	// clamps it to 2-20 ticks. Losing the connection is noticed after
	// about two thirds of it.
	SessionTimeout time.Duration
	// Resync is the period of a full re-read, a safety net behind the
	// watches; 0 disables it.
	Resync time.Duration
}

// The jittered backoff after errors runs from retryBase to retryCap: the
// source's own timing, not an option.
const (
	retryBase = 250 * time.Millisecond
	retryCap  = 30 * time.Second
)

// Validate reports options the source cannot run with, so that the
// configuration can refuse them at start.
func (o Options) Validate() error {
	return runloop.Tree{Kind: "zookeeper", Layout: string(o.Layout), Offered: []layout.Layout{layout.Curator, layout.Plain},
		RootName: "root", Root: o.Root, RootNoun: "znode", TimeoutName: "session timeout", Timeout: o.SessionTimeout, Resync: o.Resync}.Validate()
}

// Source watches one ZooKeeper ensemble.
type Source struct {
	servers []string
	opt     Options
	rules   registry.Rules
	log     *slog.Logger
	m       *metrics
	reach   engine.Reachability
	// retryBase and retryCap bound the backoff; tests make them small.
	retryBase, retryCap time.Duration
}

var _ engine.Source = (*Source)(nil)

// Health implements engine.HealthReporter.
func (s *Source) Health() engine.Health { return s.reach.Health() }

// New returns a source for the ensemble's servers ("host:port"; the port
// defaults to 2181). reg may be nil when no metrics are wanted.
func New(servers []string, opt Options, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) *Source {
	opt.Root = layout.CleanRoot(opt.Root)
	return &Source{
		servers:   slices.Clone(servers),
		opt:       opt,
		rules:     rules,
		log:       log.With("source", "zookeeper"),
		m:         newMetrics(reg),
		retryBase: retryBase,
		retryCap:  retryCap,
	}
}

// Run implements engine.Source.
func (s *Source) Run(ctx context.Context, out chan<- engine.Snapshot) {
	if !runloop.Usable(ctx, s.log, runloop.Check("zookeeper", "servers", s.servers, s.opt)) {
		return
	}
	ev := &events{wake: make(chan struct{}, 1)}
	conn, ok := s.connect(ctx, ev)
	if !ok {
		return
	}
	// Close unblocks a read in flight when ctx ends; Close is idempotent.
	stop := context.AfterFunc(ctx, conn.Close)
	defer func() {
		stop()
		conn.Close()
		s.m.setUp(false)
	}()

	t := newTracker(s)
	var (
		retry  = backoff.New(s.retryBase, s.retryCap)
		retryC <-chan time.Time
	)
	resyncC, stopResync := backoff.Every(s.opt.Resync)
	defer stopResync()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ev.wake:
		case <-retryC:
			retryC = nil
		case <-resyncC:
			t.markAll()
		}
		if t.apply(ev.take()) {
			retry.Reset() // a new session is a reason to try at once
			retryC = nil
		}
		s.m.watches.Set(float64(len(t.armed)))
		if !t.session || retryC != nil || t.clean() {
			continue // safe mode, backing off, or nothing to read
		}

		sid := conn.SessionID()
		err := t.refresh(conn)
		s.m.watches.Set(float64(len(t.armed)))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := retry.Next()
			s.log.Warn("read failed; keeping the last complete state, will retry",
				"err", err, "retry_in", d, "attempt", retry.Attempts())
			retryC = time.After(d)
			continue
		}
		if retry.Attempts() > 0 {
			s.log.Info("read recovered", "after_attempts", retry.Attempts())
		}
		retry.Reset()
		if conn.SessionID() != sid || ev.sessionMoved() {
			// The session changed while we read: what we read may mix two
			// sessions. The pending session event wakes the loop, which
			// re-reads everything first.
			continue
		}
		if !t.pub.Publish(ctx, out, t.snapshot()) {
			return
		}
	}
}

// connect opens the client. zk.Connect only fails when no server name
// resolves; the client then connects, reconnects and renews expired
// sessions by itself, reporting each step to ev.
func (s *Source) connect(ctx context.Context, ev *events) (*zk.Conn, bool) {
	return runloop.Connect(ctx, backoff.New(s.retryBase, s.retryCap),
		func() (*zk.Conn, error) {
			conn, _, err := zk.Connect(s.servers, s.opt.SessionTimeout,
				zk.WithDialer(zkdial.Bounded(s.opt.SessionTimeout)),
				zk.WithLogger(zkLogger{s.log}), zk.WithLogInfo(false), zk.WithEventCallback(ev.callback))
			return conn, err
		},
		func(err error, d time.Duration) {
			s.m.errors.WithLabelValues("connect").Inc()
			s.log.Warn("cannot set up the ZooKeeper client; retrying", "servers", s.servers, "err", err, "retry_in", d)
		})
}

// events hands what the zk client reports, from its receive goroutine (the
// callback must not block), to the Run goroutine, in order.
type events struct {
	mu     sync.Mutex
	fired  []zk.Event // watch events
	states []zk.State // session transitions
	wake   chan struct{}
}

func (e *events) callback(ev zk.Event) {
	e.mu.Lock()
	if ev.Type == zk.EventSession {
		e.states = append(e.states, ev.State)
	} else {
		e.fired = append(e.fired, ev)
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *events) take() ([]zk.Event, []zk.State) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f, s := e.fired, e.states
	e.fired, e.states = nil, nil
	return f, s
}

// sessionMoved reports whether a session was lost, expired or replaced
// since the last take.
func (e *events) sessionMoved() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.states {
		if s == zk.StateDisconnected || s == zk.StateExpired || s == zk.StateHasSession {
			return true
		}
	}
	return false
}

type watchKind uint8

const (
	childWatch watchKind = iota
	dataWatch
	existWatch
)

type watchKey struct {
	path string
	kind watchKind
}

// firedKinds mirrors which of the client's watches an event consumes.
func firedKinds(t zk.EventType) []watchKind {
	switch t {
	case zk.EventNodeCreated:
		return []watchKind{existWatch}
	case zk.EventNodeDataChanged:
		return []watchKind{existWatch, dataWatch}
	case zk.EventNodeChildrenChanged:
		return []watchKind{childWatch}
	case zk.EventNodeDeleted:
		return []watchKind{existWatch, dataWatch, childWatch}
	}
	return nil
}

type nodeKey struct{ service, node string }

// tracker is what the source knows, in the Run goroutine only: the last
// read of every selected service directory and instance znode, which of
// them must be read again, and which watches are armed.
type tracker struct {
	src     *Source
	root    string
	armed   map[watchKey]bool
	session bool

	rootDirty bool
	services  map[string]map[string]layout.Entry // service → znode name → last read
	dirtySvc  map[string]bool
	dirtyNode map[nodeKey]bool
	svcErr    map[string]error // directories that cannot be listed

	pub layout.Publisher
}

func newTracker(s *Source) *tracker {
	return &tracker{
		src:       s,
		root:      s.opt.Root,
		armed:     map[watchKey]bool{},
		rootDirty: true,
		services:  map[string]map[string]layout.Entry{},
		dirtySvc:  map[string]bool{},
		dirtyNode: map[nodeKey]bool{},
		svcErr:    map[string]error{},
		pub: layout.Publisher{
			Report: func(d registry.Dropped) {
				s.m.dropped.Inc()
				s.log.Warn("invalid znode dropped", "path", d.Instance, "reason", d.Reason)
			},
			Sent: s.m.snapshots.Inc,
		},
	}
}

func (t *tracker) clean() bool {
	return !t.rootDirty && len(t.dirtySvc) == 0 && len(t.dirtyNode) == 0
}

// markAll asks for a full re-read. Armed watches stay armed: a full
// re-read through them uses plain reads.
func (t *tracker) markAll() {
	t.rootDirty = true
	for svc, nodes := range t.services {
		t.dirtySvc[svc] = true
		for n := range nodes {
			t.dirtyNode[nodeKey{svc, n}] = true
		}
	}
}

// apply takes in what the client reported since the last call, in order.
// It reports whether a session was (re)established.
func (t *tracker) apply(fired []zk.Event, states []zk.State) bool {
	up := false
	for _, st := range states {
		up = t.onState(st) || up
	}
	lost := false
	for _, e := range fired {
		t.src.m.watchEvents.Inc()
		if e.Type == zk.EventNotWatching {
			// The client dropped every watch at once (session expired, or
			// closing); it reports each one.
			lost = true
			continue
		}
		t.onWatch(e)
	}
	if lost {
		clear(t.armed)
		t.markAll()
	}
	return up
}

// onState follows the session. It reports whether a session was just
// (re)established.
func (t *tracker) onState(st zk.State) bool {
	log, m := t.src.log, t.src.m
	switch st {
	case zk.StateHasSession:
		if t.session {
			return false
		}
		t.session = true
		m.setUp(true)
		t.src.reach.Report("", nil)
		if t.pub.HasSent() {
			log.Info("ZooKeeper session up again; re-reading everything before sending")
		} else {
			log.Info("ZooKeeper session up")
		}
		t.markAll() // cheap insurance, as Curator's caches do on reconnect
		return true
	case zk.StateExpired:
		m.expirations.Inc()
		log.Warn("ZooKeeper session expired; every watch is gone, re-reading everything in a new session")
		clear(t.armed)
		t.markAll()
		t.session = false
		m.setUp(false)
		t.src.reach.Report("", errors.New("zookeeper: session expired"))
	case zk.StateDisconnected:
		if t.session {
			log.Warn("connection to ZooKeeper lost; sending nothing until the session is back")
		}
		t.session = false
		m.setUp(false)
		t.src.reach.Report("", fmt.Errorf("zookeeper: no session with %s", strings.Join(t.src.servers, ",")))
	}
	return false
}

// onWatch turns a watch event into dirty marks: the event says only that
// something changed under a path, so that path is read again.
func (t *tracker) onWatch(e zk.Event) {
	for _, k := range firedKinds(e.Type) {
		delete(t.armed, watchKey{e.Path, k})
	}
	if e.Path == t.root {
		t.rootDirty = true
		return
	}
	rel, ok := strings.CutPrefix(e.Path, strings.TrimSuffix(t.root, "/")+"/")
	if !ok {
		return
	}
	svc, node, isNode := strings.Cut(rel, "/")
	nodes, known := t.services[svc]
	switch {
	case !known:
		// The root listing decides about directories we do not follow.
	case !isNode:
		t.dirtySvc[svc] = true
	default:
		if _, known := nodes[node]; known {
			t.dirtyNode[nodeKey{svc, node}] = true
		}
	}
}

// refresh reads whatever is dirty: the root listing, then the listings of
// dirty service directories, then dirty instance znodes. Marks are cleared
// only by a successful read, so after an error the next call starts where
// this one stopped.
func (t *tracker) refresh(conn *zk.Conn) error {
	// A pass can find more to read (a directory or znode deleted since it
	// was listed); a few passes settle it, a tree that keeps moving is
	// retried later.
	for range 5 {
		if t.clean() {
			return nil
		}
		if err := t.pass(conn); err != nil {
			return err
		}
	}
	if !t.clean() {
		return errors.New("zookeeper: the tree kept changing while being read")
	}
	return nil
}

func (t *tracker) pass(conn *zk.Conn) error {
	if t.rootDirty {
		if err := t.readRoot(conn); err != nil {
			return err
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(t.dirtySvc)) {
		if err := t.readService(conn, svc); err != nil {
			return err
		}
	}
	keys := slices.SortedFunc(maps.Keys(t.dirtyNode), func(a, b nodeKey) int {
		return strings.Compare(a.service+"/"+a.node, b.service+"/"+b.node)
	})
	for _, k := range keys {
		if err := t.readNode(conn, k); err != nil {
			return err
		}
	}
	return nil
}

func (t *tracker) readRoot(conn *zk.Conn) error {
	names, err := t.children(conn, t.root)
	if errors.Is(err, zk.ErrNoNode) {
		// No root: no services. Watch for it to appear.
		exists, err := t.exists(conn, t.root)
		if err != nil {
			return fmt.Errorf("zookeeper: watch for root %s: %w", t.root, err)
		}
		if exists { // created in between: list it now
			if names, err = t.children(conn, t.root); err != nil {
				return fmt.Errorf("zookeeper: list %s: %w", t.root, err)
			}
		}
	} else if err != nil {
		return fmt.Errorf("zookeeper: list %s: %w", t.root, err)
	}
	seen := map[string]bool{}
	for _, svc := range names {
		if t.root == "/" && svc == "zookeeper" {
			continue // ZooKeeper's own subtree
		}
		if !t.src.rules.WantService(svc) {
			continue
		}
		seen[svc] = true
		if _, ok := t.services[svc]; !ok {
			t.services[svc] = map[string]layout.Entry{}
			t.dirtySvc[svc] = true
		}
	}
	for svc := range t.services {
		if !seen[svc] {
			t.dropService(svc)
		}
	}
	t.rootDirty = false
	return nil
}

func (t *tracker) dropService(svc string) {
	for n := range t.services[svc] {
		delete(t.dirtyNode, nodeKey{svc, n})
	}
	delete(t.services, svc)
	delete(t.dirtySvc, svc)
	delete(t.svcErr, svc)
}

func (t *tracker) readService(conn *zk.Conn, svc string) error {
	nodes, ok := t.services[svc]
	if !ok {
		delete(t.dirtySvc, svc)
		return nil
	}
	path := layout.Join(t.root, svc)
	names, err := t.children(conn, path)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		// Deleted since the root was listed; the root's watch has fired
		// too, and the next pass re-lists it.
		t.dropService(svc)
		t.rootDirty = true
		return nil
	case permanent(err):
		// Known but unreadable: keep it known with no instances, so the
		// engine holds its last servers; snapshot says why.
		t.svcErr[svc] = err
		names = nil
	case err != nil:
		return fmt.Errorf("zookeeper: list %s: %w", path, err)
	default:
		delete(t.svcErr, svc)
	}
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
		if _, ok := nodes[n]; !ok {
			nodes[n] = layout.Entry{Name: n}
			t.dirtyNode[nodeKey{svc, n}] = true
		}
	}
	for n := range nodes {
		if !seen[n] {
			delete(nodes, n)
			delete(t.dirtyNode, nodeKey{svc, n})
		}
	}
	delete(t.dirtySvc, svc)
	return nil
}

func (t *tracker) readNode(conn *zk.Conn, k nodeKey) error {
	nodes, ok := t.services[k.service]
	if _, known := nodes[k.node]; !ok || !known {
		delete(t.dirtyNode, k)
		return nil
	}
	path := layout.Join(t.root, k.service, k.node)
	data, err := t.get(conn, path)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		// Deleted since its directory was listed; that directory's watch
		// has fired and the next pass re-lists it.
		delete(nodes, k.node)
		t.dirtySvc[k.service] = true
	case permanent(err):
		nodes[k.node] = layout.Entry{Name: k.node, Err: err}
	case err != nil:
		return fmt.Errorf("zookeeper: read %s: %w", path, err)
	default:
		nodes[k.node] = layout.Entry{Name: k.node, Value: data}
	}
	delete(t.dirtyNode, k)
	return nil
}

// permanent errors do not go away by retrying: one znode that cannot be
// read must not keep every other change from reaching nginx.
func permanent(err error) bool {
	return errors.Is(err, zk.ErrNoAuth) || errors.Is(err, zk.ErrInvalidPath)
}

// children lists path, arming a child watch.
func (t *tracker) children(conn *zk.Conn, path string) ([]string, error) {
	return watchedRead(t, "children", watchKey{path, childWatch}, conn.Children, conn.ChildrenW)
}

// get reads path's data, arming a data watch.
func (t *tracker) get(conn *zk.Conn, path string) ([]byte, error) {
	return watchedRead(t, "get", watchKey{path, dataWatch}, conn.Get, conn.GetW)
}

// watchedRead reads k's path with arm, which arms the watch k, unless k is
// armed already: then it reads with plain, because arming twice would leave
// the client holding duplicate watchers. op names the read in the metrics;
// a missing znode is an answer, not an error.
func watchedRead[T any](t *tracker, op string, k watchKey,
	plain func(string) (T, *zk.Stat, error),
	arm func(string) (T, *zk.Stat, <-chan zk.Event, error),
) (v T, err error) {
	t.src.m.reads.WithLabelValues(op).Inc()
	if t.armed[k] {
		v, _, err = plain(k.path)
	} else if v, _, _, err = arm(k.path); err == nil {
		t.armed[k] = true
	}
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		t.src.m.errors.WithLabelValues(op).Inc()
	}
	return v, err
}

// exists arms a watch for a missing root. The client files it as an exist
// watch when the znode is missing and as a data watch when it exists.
func (t *tracker) exists(conn *zk.Conn, path string) (bool, error) {
	t.src.m.reads.WithLabelValues("exists").Inc()
	if t.armed[watchKey{path, existWatch}] {
		ok, _, err := conn.Exists(path)
		return ok, err
	}
	ok, _, _, err := conn.ExistsW(path)
	if err != nil {
		t.src.m.errors.WithLabelValues("exists").Inc()
		return false, err
	}
	if ok {
		t.armed[watchKey{path, dataWatch}] = true
	} else {
		t.armed[watchKey{path, existWatch}] = true
	}
	return ok, nil
}

// snapshot builds the complete state from the last reads; a directory
// that cannot be listed is reported invalid.
func (t *tracker) snapshot() engine.Snapshot {
	tree := layout.Tree{Root: t.root, Dirs: make(map[string][]layout.Entry, len(t.services))}
	for svc, nodes := range t.services {
		list := make([]layout.Entry, 0, len(nodes))
		for _, n := range slices.Sorted(maps.Keys(nodes)) {
			list = append(list, nodes[n])
		}
		tree.Dirs[svc] = list
	}
	for svc, err := range t.svcErr {
		tree.Invalid = append(tree.Invalid, layout.Invalid{Path: layout.Join(t.root, svc), Reason: "unreadable service directory: " + err.Error()})
	}
	snap, _ := t.src.opt.Layout.Snapshot(tree, t.src.rules)
	return snap
}

// zkLogger sends the client's own messages (connection attempts, retries)
// to the structured log at debug level; the source logs what matters.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug("zk client", "detail", fmt.Sprintf(format, args...))
}

type metrics struct {
	sessionUp   prometheus.Gauge
	registryUp  prometheus.Gauge
	expirations prometheus.Counter
	errors      *prometheus.CounterVec
	reads       *prometheus.CounterVec
	watchEvents prometheus.Counter
	watches     prometheus.Gauge
	dropped     prometheus.Counter
	snapshots   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessionUp: metric.Gauge("swallowkeeper_zookeeper_session_up",
			"1 while the source holds a ZooKeeper session, 0 while it waits for one (and sends nothing)."),
		registryUp: metric.RegistryUp("zookeeper"),
		expirations: metric.Counter("swallowkeeper_zookeeper_session_expirations_total",
			"ZooKeeper sessions of the source that expired; each is followed by a full re-read."),
		errors: metric.CounterVec("swallowkeeper_zookeeper_errors_total",
			"Failed ZooKeeper client set-ups and reads, by operation.", "op"),
		reads: metric.CounterVec("swallowkeeper_zookeeper_reads_total",
			"ZooKeeper reads, by operation (children, get, exists).", "op"),
		watchEvents: metric.Counter("swallowkeeper_zookeeper_watch_events_total",
			"Watch events received; each one is a cue to re-read what it names."),
		watches: metric.Gauge("swallowkeeper_zookeeper_watches",
			"Watches the source holds armed."),
		dropped: metric.Counter("swallowkeeper_zookeeper_invalid_znodes_dropped_total",
			"Instance znodes left out because their name or data failed validation (each counted once while it stays invalid)."),
		snapshots: metric.Counter("swallowkeeper_zookeeper_snapshots_sent_total",
			"Complete snapshots sent to the engine."),
	}
	metric.Register(reg, m.sessionUp, m.registryUp, m.expirations, m.errors, m.reads, m.watchEvents, m.watches, m.dropped, m.snapshots)
	return m
}

// setUp sets the session gauge and the shared registry_up gauge together.
func (m *metrics) setUp(up bool) {
	m.sessionUp.Set(metric.Bool(up))
	m.registryUp.Set(metric.Bool(up))
}
