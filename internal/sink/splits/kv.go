package splits

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/backoff"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
	"github.com/swallowkeeper/swallowkeeper/internal/split"
)

// KV is the part of Consul's KV API the watch uses (api.KV has it).
type KV interface {
	List(prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
}

// UseKV makes Run watch the keys <prefix>/<upstream> of Consul KV, each
// holding a rule as JSON (split.ParseJSON), with blocking queries.
// closeIdle, if not nil, closes the KV client's idle connections when Run
// ends. Call it before Run.
func (s *Sink) UseKV(kv KV, prefix string, wait time.Duration, closeIdle func()) {
	s.kvAPI, s.kvPrefix, s.kvWait, s.kvClose = kv, strings.Trim(prefix, "/"), wait, closeIdle
}

// KVRules turns the pairs under prefix into rules. A key that is not
// directly under prefix, or holds an invalid rule, is reported through
// bad; an invalid rule keeps the rule prev (the last KV rules) had for
// that upstream, if any, so that a typo in a deploy does not move traffic.
// An empty value (a "folder" key) is ignored.
func KVRules(prefix string, pairs api.KVPairs, prev split.Table, bad func(key string, err error)) split.Table {
	prefix = strings.Trim(prefix, "/") + "/"
	out := split.Table{}
	keep := func(name string) {
		if r, ok := prev[name]; ok {
			out[name] = r
		} else {
			delete(out, name)
		}
	}
	for _, p := range pairs {
		name, ok := strings.CutPrefix(p.Key, prefix)
		if !ok || name == "" || len(p.Value) == 0 {
			continue
		}
		if strings.Contains(name, "/") {
			bad(p.Key, errNested)
			continue
		}
		r, err := split.ParseJSON(name, p.Value)
		if err != nil {
			bad(p.Key, err)
			keep(name)
			continue
		}
		out[name] = r
	}
	// A rule can be wrong only beside others (a group split again, two
	// names differing in case). Each such rule falls back to its previous
	// one; if that is still wrong beside the rest, it is dropped, so that
	// what is returned always passes CheckTable.
	for round := 0; ; round++ {
		problems := split.CheckTable(out)
		if len(problems) == 0 {
			return out
		}
		for _, pr := range problems {
			if round == 0 {
				bad(prefix+pr.Upstream, pr)
				keep(pr.Upstream)
			} else {
				delete(out, pr.Upstream)
			}
		}
	}
}

type kvError string

func (e kvError) Error() string { return string(e) }

const errNested = kvError("want <prefix>/<upstream>, one level only")

// watchKV follows the prefix until ctx ends: one blocking query at a
// time; every answer whose index moved replaces the KV rules; errors back
// off with jitter and keep the rules read before.
func (s *Sink) watchKV(ctx context.Context) {
	b := backoff.New(time.Second, 30*time.Second)
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: s.kvWait, RequireConsistent: false}).WithContext(ctx)
		pairs, meta, err := s.kvAPI.List(s.kvPrefix+"/", q)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("splits: consul kv read failed; the rules read before stay", "prefix", s.kvPrefix, "err", err)
			s.SetKV(nil, err.Error())
			if backoff.Sleep(ctx, b.Next()) != nil {
				return
			}
			continue
		}
		if why := consul.DoubtOf(meta, s.opt.AllowACLFiltered, "every key under "+s.kvPrefix+"/"); why != "" {
			// A missing key would delete its rule from nginx: an answer
			// that may lack keys changes nothing.
			s.log.Warn("splits: consul kv answered "+why+"; the rules read before stay", "prefix", s.kvPrefix)
			s.SetKV(nil, "consul kv answered "+why+"; the rules read before stay")
			if backoff.Sleep(ctx, b.Next()) != nil {
				return
			}
			continue
		}
		b.Reset()
		if meta.LastIndex == index && index != 0 {
			continue // the wait ended with no change
		}
		if meta.LastIndex < index {
			index = 0 // Consul's state was replaced: read again from scratch
		} else {
			index = meta.LastIndex
		}
		s.mu.Lock()
		prev := s.kv
		s.mu.Unlock()
		rules := KVRules(s.kvPrefix, pairs, prev, func(key string, err error) {
			s.log.Warn("splits: consul kv rule ignored", "key", key, "err", err)
		})
		before, _ := s.Wanted()
		s.SetKV(rules, "")
		after, from := s.Wanted()
		logChanges(s.log, before, after, from)
	}
}

// logChanges logs each rule that changed: "split web: 10% to web_canary".
func logChanges(log *slog.Logger, before, after split.Table, from map[string]string) {
	for name, r := range after {
		if old, ok := before[name]; !ok || split.Body(old) != split.Body(r) {
			log.Info("split rule", "upstream", name, "rule", split.Describe(r), "from", from[name])
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			log.Info("split rule removed", "upstream", name)
		}
	}
}
