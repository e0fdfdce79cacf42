package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/metric"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// KVOptions configure the KV source.
type KVOptions struct {
	// Prefix is the KV folder holding the upstreams, "upstreams" for
	// keys upstreams/<upstream>/<ip>:<port>; slashes around it are
	// dropped (CleanKVPrefix).
	Prefix string
	// WaitTime bounds each blocking query (Consul caps it at 10m).
	WaitTime time.Duration
	// RetryBase and RetryCap bound the jittered backoff after errors.
	RetryBase, RetryCap time.Duration
	// AllowACLFiltered: see Options.
	AllowACLFiltered bool
}

// DefaultKVPrefix is nginx-upsync-module's folder in its examples.
const DefaultKVPrefix = "upstreams"

// CleanKVPrefix drops the slashes around a KV prefix: Consul's keys have
// no leading slash, and upsync's URLs (/v1/kv/upstreams/web) none after.
func CleanKVPrefix(p string) string { return strings.Trim(p, "/") }

// CheckKVPrefix refuses a prefix (after CleanKVPrefix) that is empty (the
// whole KV store would be read as upstreams), holds empty, "." or ".."
// elements, or is not valid UTF-8 without control characters.
func CheckKVPrefix(p string) error {
	p = CleanKVPrefix(p)
	if p == "" {
		return errors.New("empty: want a KV folder such as upstreams")
	}
	if !utf8.ValidString(p) || strings.ContainsFunc(p, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return errors.New("not valid UTF-8 without control characters")
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return errors.New(`empty, "." or ".." path element`)
		}
	}
	return nil
}

// KVSource follows one folder of Consul's KV store laid out as
// nginx-upsync-module lays it out: a key <prefix>/<upstream>/<ip>:<port>
// per server, holding nothing or the module's JSON parameters (weight,
// max_fails, fail_timeout, down, backup), read by layout.Upsync exactly as
// the etcd source reads them. A folder key <prefix>/<upstream>/ (the UI
// makes one) is an upstream with no servers yet.
//
// One blocking query on the folder (/v1/kv/<prefix>/?recurse&index=…)
// answers with the whole folder each time it changes, so every answer is
// a complete read: it is decoded, validated (registry.Build through
// layout.Upsync.Snapshot) and sent when it differs from the last one sent.
// A failed request sends nothing (the engine keeps the last state) and is
// retried with backoff; an answer without a known leader, or filtered by
// ACLs, is sent with its Doubt set, so that the engine changes nothing.
type KVSource struct {
	client *Client
	rules  registry.Rules
	opt    KVOptions
	dir    string // the prefix with its trailing slash
	log    *slog.Logger
	m      *modeMetrics
	reach  engine.Reachability
}

var _ engine.Source = (*KVSource)(nil)

// NewKV returns a KV source reading through client (see NewClient); reg
// may be nil.
func NewKV(client *Client, rules registry.Rules, opt KVOptions, log *slog.Logger, reg prometheus.Registerer) *KVSource {
	opt.Prefix = CleanKVPrefix(opt.Prefix)
	pollDefaults(&opt.WaitTime, &opt.RetryBase, &opt.RetryCap)
	return &KVSource{client: client, rules: rules, opt: opt, dir: opt.Prefix + "/",
		log: log.With("source", "consul", "kv_prefix", opt.Prefix), m: newKVMetrics(reg)}
}

// Health implements engine.HealthReporter: up while the last request
// succeeded.
func (s *KVSource) Health() engine.Health { return s.reach.Health() }

// Run implements engine.Source.
func (s *KVSource) Run(ctx context.Context, out chan<- engine.Snapshot) {
	if err := CheckKVPrefix(s.opt.Prefix); err != nil {
		s.log.Error("unusable KV prefix; sending nothing", "err", err)
		<-ctx.Done()
		return
	}
	var (
		index uint64
		b     = backoff.New(s.opt.RetryBase, s.opt.RetryCap)
		pub   = layout.Publisher{Report: s.report}
	)
	for ctx.Err() == nil {
		wait := index
		if b.Attempts() > 0 {
			// After a failure ask without blocking, as the services
			// mode's watches do: an agent back with nothing new would
			// otherwise hold the query and the source read as down.
			wait = 0
		}
		o := (&api.QueryOptions{WaitIndex: wait, WaitTime: s.opt.WaitTime}).WithContext(ctx)
		pairs, meta, err := s.client.KV().List(s.dir, o)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.errors.WithLabelValues("kv").Inc()
			s.m.registryUp.Set(0)
			s.reach.Report("kv", fmt.Errorf("consul: watch kv %s: %w", s.dir, err))
			d := b.Next()
			s.log.Warn("watch failed; retrying", "watch", "kv", "err", err, "retry_in", d, "attempt", b.Attempts())
			if waitForAgent(ctx, s.client, d) != nil {
				return
			}
			continue
		}
		if b.Attempts() > 0 {
			s.log.Info("watch recovered", "watch", "kv", "after_attempts", b.Attempts())
		}
		b.Reset()
		s.m.registryUp.Set(1)
		s.reach.Report("kv", nil)
		s.m.wakes.WithLabelValues("kv").Inc()
		if meta.LastIndex == index && index != 0 && pub.HasSent() {
			continue // the wait timed out: nothing changed
		}
		if meta.LastIndex < index {
			s.log.Warn("KV index went back (snapshot restore or a new cluster?); following the new state", "index_was", index, "index", meta.LastIndex)
		}
		index = max(meta.LastIndex, 1) // never block on 0: it would return at once forever
		snap := s.snapshot(pairs)
		snap.Doubt = s.doubt(meta)
		if !pub.Publish(ctx, out, snap) {
			return
		}
	}
}

// report logs and counts an entry newly dropped.
func (s *KVSource) report(d registry.Dropped) {
	s.m.dropped.Inc()
	s.log.Warn("invalid key dropped", "key", d.Instance, "reason", d.Reason)
}

// doubt says why an answer is not to be trusted, or "" (see DoubtOf).
func (s *KVSource) doubt(meta *api.QueryMeta) string {
	why := DoubtOf(meta, s.opt.AllowACLFiltered, "every key under the prefix")
	if why == "" {
		return ""
	}
	s.m.doubted.WithLabelValues("kv").Inc()
	return "consul: kv/" + s.dir + " answered " + why
}

// snapshot converts one complete read of the folder.
func (s *KVSource) snapshot(pairs api.KVPairs) engine.Snapshot {
	snap, _ := layout.Upsync.Snapshot(KVTree(s.opt.Prefix, pairs), s.rules)
	return snap
}

// KVTree arranges the keys under prefix (cleaned, without slashes around
// it) as the tree layout.Upsync reads: <prefix>/<upstream>/<name>. A
// folder key <prefix>/<upstream>/ makes the upstream known with no entry;
// the folder key <prefix>/ is nothing; a key of another shape is invalid.
func KVTree(prefix string, pairs api.KVPairs) layout.Tree {
	dir := prefix + "/"
	t := layout.Tree{Root: prefix, Dirs: map[string][]layout.Entry{}}
	bad := func(key, why string) {
		t.Invalid = append(t.Invalid, layout.Invalid{Path: key, Reason: why})
	}
	for _, p := range pairs {
		if p == nil {
			continue
		}
		rest, ok := strings.CutPrefix(p.Key, dir)
		if !ok {
			bad(p.Key, "key outside the prefix "+dir) // Consul answered more than asked
			continue
		}
		if rest == "" {
			continue
		}
		svc, name, ok := strings.Cut(rest, "/")
		switch {
		case !ok:
			bad(p.Key, "key is not <prefix>/<upstream>/<ip>:<port>")
		case svc == "":
			bad(p.Key, "empty upstream name in key")
		case strings.Contains(name, "/"):
			bad(p.Key, "key nests deeper than <prefix>/<upstream>/<ip>:<port>")
		case name == "":
			if _, ok := t.Dirs[svc]; !ok {
				t.Dirs[svc] = nil
			}
		default:
			t.Dirs[svc] = append(t.Dirs[svc], layout.Entry{Name: name, Value: p.Value})
		}
	}
	return t
}

// waitForAgent sleeps d, or less if the agent answers a status request
// before; it returns ctx's error when ctx ends. It is not a retry of the
// watch: a dead agent still sees the watch's jittered, capped backoff,
// but the catch-up after an outage takes about agentProbeEvery instead of
// the rest of a backoff that grew during it.
func waitForAgent(ctx context.Context, c *Client, d time.Duration) error {
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
		_, err := c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(pctx))
		cancel()
		if err == nil {
			return nil
		}
	}
}

// newKVMetrics declares the KV mode's metrics: the families both modes
// share (modeMetrics), its one watch labelled "kv".
func newKVMetrics(reg prometheus.Registerer) *modeMetrics {
	m := newModeMetrics()
	m.errors.WithLabelValues("kv")
	m.wakes.WithLabelValues("kv")
	metric.Register(reg, m.registryUp, m.errors, m.doubted, m.wakes, m.dropped)
	return &m
}
