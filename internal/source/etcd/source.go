// Package etcd is the etcd source: it follows every key under one prefix
// (<prefix>/<service>/<instance>, one key per instance) through the v3 API
// and sends complete snapshots. Layout says how a key and its value are
// read: nginx-upsync-module's "<ip>:<port>" keys, or service registrations
// in JSON.
//
// The source mirrors the prefix as etcd's own mirror does: a paginated Get
// at one revision R, then a watch from R+1 whose events it applies to its
// copy, so that the copy is always the prefix as it stood at one revision.
// Revisions are checked to grow. When the watch cannot continue (its start
// revision was compacted, the server canceled it, the leader is gone, a
// revision went back or the cluster changed) the source lists again and
// watches from the new revision. A periodic full re-list (Resync) is a
// safety net behind all of that.
//
// While etcd cannot be reached nothing is sent; the engine keeps the last
// state. The client resumes a broken watch on its own from the next
// revision it expects, so a reconnect costs no re-list, unless the
// revision has meanwhile been compacted. See README.md.
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/secret"
	"github.com/swallowkeeper/swallowkeeper/internal/source/runloop"
)

// Options configure the source. Nothing is defaulted here: the
// configuration resolves every default (config.Config.EtcdOptions), and a
// zero value means what it says.
type Options struct {
	// Layout says what a key's instance name and its value mean; the keys
	// are always <prefix>/<service>/<name>, one per instance.
	// layout.Upsync is nginx-upsync-module's (<ip>:<port> names, a value
	// of server parameters); layout.Service holds a JSON registration
	// under the instance id, usually with a lease so that a dead instance
	// disappears.
	Layout layout.Layout
	// Prefix is where the service directories live, an absolute key path;
	// "/" is allowed, a trailing slash is dropped.
	Prefix string
	// DialTimeout bounds connecting and authenticating.
	DialTimeout time.Duration
	// Resync is the period of a full re-list behind the watch; 0 disables
	// it.
	Resync time.Duration
	// Username and Password log in when etcd has authentication enabled;
	// set both or neither.
	Username string
	Password secret.Secret
	// CAFile verifies the server's certificate (the system's roots when
	// an endpoint is https:// and CAFile is empty); CertFile and KeyFile
	// are the client certificate, both or neither.
	CAFile, CertFile, KeyFile string
}

// The source's own timings, not options: each read is bounded by
// requestTimeout, and the jittered backoff after errors (and the client's
// reconnection backoff) runs from retryBase to retryCap.
const (
	requestTimeout = 10 * time.Second
	retryBase      = 250 * time.Millisecond
	retryCap       = 30 * time.Second
)

// The client pings the server after this long without traffic and gives
// the connection up when no answer comes in keepAliveTimeout. etcd refuses
// pings more often than every 5s (--grpc-keepalive-min-time).
const (
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 5 * time.Second
)

// Coalescing: after a watch response with events the source waits until
// none has come for coalesceQuiet, but at most coalesceMax, so that a burst
// of writes becomes one snapshot.
const (
	coalesceQuiet = 20 * time.Millisecond
	coalesceMax   = 200 * time.Millisecond
)

// pageSize is the number of keys a listing reads per request.
const pageSize = 1000

// Validate reports options the source cannot run with, so that the
// configuration can refuse them at start.
func (o Options) Validate() error {
	if err := (runloop.Tree{Kind: "etcd", Layout: string(o.Layout), Offered: []layout.Layout{layout.Upsync, layout.Service},
		RootName: "prefix", Root: o.Prefix, RootNoun: "key", TimeoutName: "dial timeout", Timeout: o.DialTimeout, Resync: o.Resync}).Validate(); err != nil {
		return err
	}
	if (o.Username == "") != (o.Password == "") {
		return errors.New("etcd: set both username and password, or neither")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("etcd: set both cert_file and key_file, or neither")
	}
	return nil
}

// dir is the prefix with its trailing slash: every key read lies under it.
func (o Options) dir() string {
	return layout.Join(layout.CleanRoot(o.Prefix))
}

// tlsConfig reads the certificate files; nil when none is set.
func (o Options) tlsConfig() (*tls.Config, error) {
	if o.CAFile == "" && o.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd: CA file %s: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Source follows one prefix of one etcd cluster.
type Source struct {
	endpoints []string
	opt       Options
	rules     registry.Rules
	log       *slog.Logger
	m         *metrics
	reach     engine.Reachability
	// Timings and the page size, which tests make small.
	requestTimeout      time.Duration
	retryBase, retryCap time.Duration
	pageSize            int
}

// Health implements engine.HealthReporter.
func (s *Source) Health() engine.Health { return s.reach.Health() }

var _ engine.Source = (*Source)(nil)

// New returns a source for the cluster's endpoints ("host:port",
// "http://host:port" or "https://host:port"). reg may be nil when no
// metrics are wanted.
func New(endpoints []string, opt Options, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) *Source {
	opt.Prefix = layout.CleanRoot(opt.Prefix)
	return &Source{
		endpoints:      slices.Clone(endpoints),
		opt:            opt,
		rules:          rules,
		log:            log.With("source", "etcd"),
		m:              newMetrics(reg),
		requestTimeout: requestTimeout,
		retryBase:      retryBase,
		retryCap:       retryCap,
		pageSize:       pageSize,
	}
}

// Run implements engine.Source.
func (s *Source) Run(ctx context.Context, out chan<- engine.Snapshot) {
	if !runloop.Usable(ctx, s.log, runloop.Check("etcd", "endpoints", s.endpoints, s.opt)) {
		return
	}
	cli, ok := s.connect(ctx)
	if !ok {
		return
	}
	f := &follower{
		s:    s,
		cli:  cli,
		dir:  s.opt.dir(),
		conn: &connState{wake: make(chan struct{}, 1)},
		pub: layout.Publisher{
			Report: func(d registry.Dropped) {
				s.m.dropped.Inc()
				s.log.Warn("invalid key dropped", "key", d.Instance, "reason", d.Reason)
			},
			Sent: s.m.snapshots.Inc,
		},
	}
	mctx, stopMonitor := context.WithCancel(ctx)
	var monitor sync.WaitGroup
	monitor.Go(func() { f.conn.follow(mctx, cli.ActiveConnection()) })
	defer func() {
		f.stopWatch()
		stopMonitor()
		monitor.Wait()
		cli.Close()
		s.m.setUp(false)
	}()
	f.run(ctx, out)
}

// connect sets the client up. clientv3.New does not wait for a connection
// unless it must log in; it fails on unreadable certificates too, which
// may appear later, so every failure is retried.
func (s *Source) connect(ctx context.Context) (*clientv3.Client, bool) {
	return runloop.Connect(ctx, backoff.New(s.retryBase, s.retryCap),
		func() (*clientv3.Client, error) { return s.newClient(ctx) },
		func(err error, d time.Duration) {
			s.m.errors.WithLabelValues("connect").Inc()
			s.log.Warn("cannot set up the etcd client; retrying", "endpoints", s.endpoints, "err", err, "retry_in", d)
		})
}

func (s *Source) newClient(ctx context.Context) (*clientv3.Client, error) {
	tlsCfg, err := s.opt.tlsConfig()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{
		Endpoints:            s.endpoints,
		DialTimeout:          s.opt.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		Username:             s.opt.Username,
		Password:             s.opt.Password.Reveal(),
		TLS:                  tlsCfg,
		Context:              ctx,
		Logger:               zap.NewNop(), // the source logs what matters
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay: s.retryBase, Multiplier: 1.6, Jitter: 0.2, MaxDelay: s.retryCap,
			},
			MinConnectTimeout: s.opt.DialTimeout,
		})},
	})
}

// connState follows the client connection's state from its own goroutine
// and hands the newest one to the Run goroutine, with a count of the times
// it was lost, so that a short loss is not missed between two looks.
type connState struct {
	ready atomic.Bool
	drops atomic.Uint64
	wake  chan struct{}
}

func (c *connState) follow(ctx context.Context, conn *grpc.ClientConn) {
	for {
		st := conn.GetState()
		ready := st == connectivity.Ready
		if c.ready.Swap(ready) && !ready {
			c.drops.Add(1)
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
		if !conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

// Reasons to list again, the values of the relists metric's label.
const (
	reasonCompacted = "compacted" // the watch's start revision was compacted
	reasonCanceled  = "canceled"  // the server or the client ended the watch
	reasonGap       = "gap"       // a revision did not grow, or the cluster changed
	reasonResync    = "resync"    // the periodic safety net
)

// follower is the state of one Run, in the Run goroutine only.
type follower struct {
	s    *Source
	cli  *clientv3.Client
	dir  string
	conn *connState

	kvs     map[string][]byte // the prefix as it stood at rev
	rev     int64             // 0 before the first listing
	cluster uint64
	// valid is false after a gap: kvs may not be any revision's state, and
	// nothing is sent until a listing replaces it.
	valid bool

	wch      clientv3.WatchChan
	wcancel  context.CancelFunc
	watching bool   // the server confirmed the watch
	ready    bool   // the connection is up
	drops    uint64 // connection losses seen
	lost     bool   // lost since it was last up: the next up is a reconnect

	pub layout.Publisher
}

func (f *follower) run(ctx context.Context, out chan<- engine.Snapshot) {
	s := f.s
	var (
		need   = "start" // why a listing is due; "" when none is
		retry  = backoff.New(s.retryBase, s.retryCap)
		retryC <-chan time.Time
	)
	resyncC, stopResync := backoff.Every(s.opt.Resync)
	defer stopResync()
	relist := func(reason string, wait bool) {
		f.stopWatch()
		need = reason
		s.m.relists.WithLabelValues(reason).Inc()
		if wait && retryC == nil {
			// A watch that ends before the server confirmed it must not
			// make a tight list-watch loop.
			d := retry.Next()
			retryC = time.After(d)
		}
	}
	var lastErr error
	for {
		if need != "" && retryC == nil {
			if err := f.list(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				lastErr = err
				s.m.errors.WithLabelValues("list").Inc()
				d := retry.Next()
				s.log.Warn("listing failed; keeping the last complete state, will retry",
					"prefix", f.dir, "err", err, "retry_in", d, "attempt", retry.Attempts())
				retryC = time.After(d)
			} else {
				need = ""
				f.startWatch(ctx)
				if !f.send(ctx, out) {
					return
				}
			}
		}
		s.m.setUp(f.ready && f.watching)
		switch {
		case f.ready && f.watching:
			s.reach.Report("", nil)
			lastErr = nil
		case lastErr != nil:
			s.reach.Report("", lastErr)
		case !f.ready:
			s.reach.Report("", errors.New("etcd: no connection to "+strings.Join(s.endpoints, ",")))
		default:
			s.reach.Report("", errors.New("etcd: watch not confirmed yet"))
		}

		select {
		case <-ctx.Done():
			return
		case <-retryC:
			retryC = nil
		case <-resyncC:
			if need == "" {
				// The watch keeps running until the listing succeeds.
				need = reasonResync
				s.m.relists.WithLabelValues(reasonResync).Inc()
			}
		case <-f.conn.wake:
			reason, up := f.onConn(ctx, need == "")
			if up && need != "" {
				retryC = nil // a connection that comes up is a reason to try at once
			}
			if reason != "" {
				relist(reason, false)
			}
		case resp, ok := <-f.wch:
			reason, events := f.apply(resp, ok)
			if resp.Created && reason == "" {
				if retry.Attempts() > 0 {
					s.log.Info("watching again", "prefix", f.dir, "after_attempts", retry.Attempts())
				}
				retry.Reset()
			}
			if events && reason == "" {
				reason = f.coalesce(ctx)
			}
			if reason != "" {
				relist(reason, reason != reasonCompacted)
				continue
			}
			if events && f.valid {
				if !f.send(ctx, out) {
					return
				}
			}
		}
	}
}

// list reads the whole prefix at one revision, page by page, and replaces
// the copy with it.
func (f *follower) list(ctx context.Context) error {
	s := f.s
	kvs := map[string][]byte{}
	var (
		rev     int64
		cluster uint64
		key     = f.dir
		end     = clientv3.GetPrefixRangeEnd(f.dir)
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(s.pageSize))}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev)) // later pages read the first page's revision
		}
		rctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
		resp, err := f.cli.Get(rctx, key, opts...)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd: list %s: %w", f.dir, err)
		}
		if rev == 0 {
			rev, cluster = resp.Header.Revision, resp.Header.ClusterId
		}
		for _, kv := range resp.Kvs {
			kvs[string(kv.Key)] = kv.Value
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	switch {
	case f.cluster != 0 && cluster != 0 && cluster != f.cluster:
		s.log.Warn("etcd cluster changed; following the new one", "cluster_was", fmt.Sprintf("%x", f.cluster), "cluster", fmt.Sprintf("%x", cluster))
	case rev < f.rev:
		s.log.Warn("etcd revision went back (cluster restored or rebuilt?); following the new state", "revision_was", f.rev, "revision", rev)
	}
	first := f.rev == 0
	f.kvs, f.rev, f.cluster, f.valid = kvs, rev, cluster, true
	s.m.revision.Set(float64(rev))
	if first {
		s.log.Info("listed", "prefix", f.dir, "keys", len(kvs), "revision", rev)
	} else {
		s.log.Debug("listed again", "prefix", f.dir, "keys", len(kvs), "revision", rev)
	}
	return nil
}

// startWatch watches the prefix from the revision after the copy's; a
// watch already running is replaced.
func (f *follower) startWatch(ctx context.Context) {
	f.stopWatch()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	f.wcancel = cancel
	f.wch = f.cli.Watch(wctx, f.dir, clientv3.WithPrefix(), clientv3.WithRev(f.rev+1),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
}

func (f *follower) stopWatch() {
	if f.wcancel != nil {
		f.wcancel()
	}
	f.wch, f.wcancel, f.watching = nil, nil, false
}

// apply takes one watch response in. It returns why the source must list
// again ("" if it need not) and whether the copy changed.
func (f *follower) apply(resp clientv3.WatchResponse, ok bool) (string, bool) {
	s := f.s
	switch {
	case !ok:
		s.log.Warn("watch closed; listing again", "prefix", f.dir)
		return reasonCanceled, false
	case resp.CompactRevision != 0:
		s.log.Warn("watch start revision compacted; listing again",
			"prefix", f.dir, "want_revision", f.rev+1, "compacted_to", resp.CompactRevision)
		f.valid = false
		return reasonCompacted, false
	case resp.Canceled || resp.Err() != nil:
		s.m.errors.WithLabelValues("watch").Inc()
		s.log.Warn("watch ended; listing again", "prefix", f.dir, "err", resp.Err())
		f.valid = false
		return reasonCanceled, false
	}
	h := resp.Header
	if h.ClusterId != 0 && f.cluster != 0 && h.ClusterId != f.cluster {
		s.log.Warn("watch answered by another etcd cluster; listing again", "cluster_was", fmt.Sprintf("%x", f.cluster), "cluster", fmt.Sprintf("%x", h.ClusterId))
		f.valid = false
		return reasonGap, false
	}
	if resp.Created {
		// A member that lags behind the one that served the listing may
		// confirm the watch at an older revision; it sends the events
		// from the watch's start revision on all the same.
		f.watching = true
		return "", false
	}
	if h.Revision < f.rev {
		s.log.Warn("watch revision went back; listing again", "revision_was", f.rev, "revision", h.Revision)
		f.valid = false
		return reasonGap, false
	}
	if resp.IsProgressNotify() {
		// The server sends these only once the watch has caught up: the
		// copy is the prefix at the header's revision.
		f.setRev(h.Revision)
		return "", false
	}
	s.m.watchEvents.Add(float64(len(resp.Events)))
	prev := f.rev
	for _, ev := range resp.Events {
		r := ev.Kv.ModRevision
		// Events of one transaction share a revision; across responses
		// revisions grow strictly.
		if r <= f.rev || r < prev {
			s.log.Warn("watch event out of revision order; listing again", "revision", f.rev, "event_revision", r, "key", string(ev.Kv.Key))
			f.valid = false
			return reasonGap, false
		}
		prev = r
		switch ev.Type {
		case clientv3.EventTypePut:
			f.kvs[string(ev.Kv.Key)] = ev.Kv.Value
		case clientv3.EventTypeDelete:
			delete(f.kvs, string(ev.Kv.Key))
		}
	}
	f.setRev(prev)
	return "", len(resp.Events) > 0
}

func (f *follower) setRev(r int64) {
	if r > f.rev {
		f.rev = r
		f.s.m.revision.Set(float64(r))
	}
}

// coalesce takes in the responses that follow a first one closely, so that
// a burst of writes becomes one snapshot.
func (f *follower) coalesce(ctx context.Context) string {
	quiet := time.NewTimer(coalesceQuiet)
	defer quiet.Stop()
	limit := time.NewTimer(coalesceMax)
	defer limit.Stop()
	for {
		select {
		case resp, ok := <-f.wch:
			if reason, _ := f.apply(resp, ok); reason != "" {
				return reason
			}
			quiet.Reset(coalesceQuiet)
		case <-quiet.C:
			return ""
		case <-limit.C:
			return ""
		case <-ctx.Done():
			return ""
		}
	}
}

// onConn follows the connection state; up reports that it just came up.
// After a loss, when the watch resumes (check), it verifies with a cheap
// read that the cluster is the same and its revision has not gone back: a
// resumed watch would otherwise wait, silently, for a revision that a
// rebuilt cluster reaches only much later. It returns a reason to list
// again, or "".
func (f *follower) onConn(ctx context.Context, check bool) (reason string, up bool) {
	s := f.s
	ready, drops := f.conn.ready.Load(), f.conn.drops.Load()
	if drops != f.drops {
		f.drops, f.lost = drops, true
	}
	if !ready {
		if f.ready {
			s.log.Warn("connection to etcd lost; sending nothing until it is back", "endpoints", s.endpoints)
		}
		f.ready = false
		return "", false
	}
	up = !f.ready || f.lost
	f.ready = true
	if !f.lost {
		return "", up
	}
	f.lost = false
	if !check || f.wch == nil {
		s.log.Info("connection to etcd back; listing again", "endpoints", s.endpoints)
		return "", true
	}
	s.log.Info("connection to etcd back; the watch resumes", "endpoints", s.endpoints, "revision", f.rev)
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	resp, err := f.cli.Get(rctx, f.dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		s.m.errors.WithLabelValues("probe").Inc()
		s.log.Debug("revision check after reconnect failed; the watch will tell", "err", err)
		return "", true
	}
	h := resp.Header
	if h.ClusterId != f.cluster || h.Revision < f.rev {
		s.log.Warn("etcd is not the cluster it was, or its revision went back; listing again",
			"revision_was", f.rev, "revision", h.Revision, "cluster_was", fmt.Sprintf("%x", f.cluster), "cluster", fmt.Sprintf("%x", h.ClusterId))
		f.valid = false
		return reasonGap, true
	}
	return "", true
}

// send builds the snapshot from the copy and sends it if it differs from
// the last one sent, logging and counting each newly invalid key once. It
// reports false when ctx ended.
func (f *follower) send(ctx context.Context, out chan<- engine.Snapshot) bool {
	list := make([]KV, 0, len(f.kvs))
	for _, k := range slices.Sorted(maps.Keys(f.kvs)) {
		list = append(list, KV{Key: k, Value: f.kvs[k]})
	}
	snap, _ := Snapshot(f.s.opt.Layout, f.dir, list, f.s.rules)
	return f.pub.Publish(ctx, out, snap)
}

type metrics struct {
	watchUp     prometheus.Gauge
	registryUp  prometheus.Gauge
	revision    prometheus.Gauge
	relists     *prometheus.CounterVec
	errors      *prometheus.CounterVec
	watchEvents prometheus.Counter
	dropped     prometheus.Counter
	snapshots   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		watchUp: metric.Gauge("swallowkeeper_etcd_watch_up",
			"1 while the source is connected to etcd and its watch is confirmed, 0 otherwise (and then it sends nothing new)."),
		registryUp: metric.RegistryUp("etcd"),
		revision: metric.Gauge("swallowkeeper_etcd_revision",
			"The etcd revision of the state the source holds."),
		relists: metric.CounterVec("swallowkeeper_etcd_relists_total",
			"Full listings after the first, by reason: compacted, canceled, gap (revision or cluster), resync.", "reason"),
		errors: metric.CounterVec("swallowkeeper_etcd_errors_total",
			"Failed etcd client set-ups, listings, watches and reconnect checks, by operation.", "op"),
		watchEvents: metric.Counter("swallowkeeper_etcd_watch_events_total",
			"Watch events (puts and deletes under the prefix) received."),
		dropped: metric.Counter("swallowkeeper_etcd_invalid_keys_dropped_total",
			"Keys left out because their name or value failed validation (each counted once while it stays invalid)."),
		snapshots: metric.Counter("swallowkeeper_etcd_snapshots_sent_total",
			"Complete snapshots sent to the engine."),
	}
	for _, r := range []string{reasonCompacted, reasonCanceled, reasonGap, reasonResync} {
		m.relists.WithLabelValues(r)
	}
	for _, op := range []string{"connect", "list", "watch", "probe"} {
		m.errors.WithLabelValues(op)
	}
	metric.Register(reg, m.watchUp, m.registryUp, m.revision, m.relists, m.errors, m.watchEvents, m.dropped, m.snapshots)
	return m
}

// setUp sets the watch gauge and the shared registry_up gauge together.
func (m *metrics) setUp(up bool) {
	m.watchUp.Set(metric.Bool(up))
	m.registryUp.Set(metric.Bool(up))
}
