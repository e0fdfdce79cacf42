package daemon

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
)

// splitSink builds the sink that pushes the traffic split rules
// (upstreams.splits, and Consul KV under upstreams.splits_consul_prefix) to
// every dyups target, taking over what prev's sink knew of them. nil when
// there is no dyups target (reload mode: splits need the Lua module).
// secrets are the targets' secrets, as build read them for the dyups
// targets: one read, so both sinks send the same.
func splitSink(cfg *config.Config, secrets []config.Secret, oneShot bool, log *slog.Logger, prev *splits.Sink) (*splits.Sink, error) {
	var ts []splits.Target
	for i, tc := range cfg.Targets {
		base, err := dyups.ParseBaseURL(tc.URL)
		if err != nil {
			return nil, err
		}
		ts = append(ts, splits.Target{URL: base, Secret: secrets[i].Reveal()})
	}
	if len(ts) == 0 {
		return nil, nil
	}
	s := splits.New(ts, cfg.Upstreams.Splits, splits.Options{
		Resync:           splitResync(time.Duration(cfg.Reconcile.Interval)),
		Reserved:         cfg.Upstreams.Reserved,
		AllowACLFiltered: cfg.Consul.AllowACLFiltered,
		Groupless:        groupless(cfg),
		OneShot:          oneShot,
	}, log)
	if prefix := cfg.Upstreams.SplitsConsulPrefix; prefix != "" {
		acfg := consulAPIConfig(cfg)
		client, err := consul.NewClient(acfg, consul.WatchCatalog)
		if err != nil {
			return nil, fmt.Errorf("splits: consul: %w", err)
		}
		s.UseKV(client.KV(), prefix, time.Duration(cfg.Consul.WaitTime), acfg.Transport.CloseIdleConnections)
	}
	s.Inherit(prev)
	return s, nil
}

// groupless says whether the source's layout has no services of its own,
// only upstreams (see splits.Options.Groupless).
func groupless(cfg *config.Config) bool {
	switch cfg.Source {
	case config.SourceEtcd:
		return cfg.Etcd.Layout == "upsync"
	case config.SourceZooKeeper:
		return cfg.ZooKeeper.Layout == "plain"
	}
	return cfg.Consul.Mode == config.ConsulModeKV
}

// splitResync is how often the split sink checks its targets for rules
// they lost (a restarted nginx starts with an empty shared dict): as
// often as the drift check, and at least every maxSplitResync even when
// reconcile.interval is 0 or long, since a split lost from nginx sends
// every request to the main upstream. A target whose workers are watched
// (targets[].nginx_pid) wakes the sink at once instead (see build).
func splitResync(reconcile time.Duration) time.Duration {
	if reconcile <= 0 || reconcile > maxSplitResync {
		return maxSplitResync
	}
	return reconcile
}

const maxSplitResync = 5 * time.Second
