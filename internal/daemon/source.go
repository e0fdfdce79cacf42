package daemon

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
	"github.com/swallowkeeper/swallowkeeper/internal/source/zookeeper"
)

// newSource builds the registry source the configuration selects.
func newSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	switch cfg.Source {
	case config.SourceZooKeeper:
		opt, err := cfg.ZooKeeperOptions()
		if err != nil {
			return nil, err
		}
		return zookeeper.New(cfg.ZooKeeper.Servers, opt, rules, log, reg), nil
	case config.SourceEtcd:
		return newEtcdSource(cfg, rules, log, reg)
	}
	client, err := newConsulClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul: %w", err)
	}
	if cfg.Consul.Mode == config.ConsulModeKV {
		return consul.NewKV(client, rules, cfg.ConsulKVOptions(), log, reg), nil
	}
	return consul.New(client, rules, cfg.ConsulOptions(), log, reg), nil
}

// SourceName says which registry the daemon follows and how it reads it,
// for logs, status and check.
func SourceName(cfg *config.Config) string {
	switch cfg.Source {
	case config.SourceEtcd:
		return fmt.Sprintf("%s (%s layout)", SourceAddr(cfg), cfg.Etcd.Layout)
	case config.SourceZooKeeper:
		return fmt.Sprintf("%s (%s layout, root %s)", SourceAddr(cfg), cfg.ZooKeeper.Layout, cfg.ZooKeeper.Root)
	}
	if cfg.Consul.Mode == config.ConsulModeKV {
		return fmt.Sprintf("%s (kv mode, keys %s/<upstream>/<ip>:<port>)", SourceAddr(cfg), consul.CleanKVPrefix(cfg.Consul.KVPrefix))
	}
	return SourceAddr(cfg) + " (services mode)"
}

// SourceAddr names the registry alone, "consul 127.0.0.1:8500", where a
// line already says what it is about (render -diff's header, a one-shot
// command's error).
func SourceAddr(cfg *config.Config) string {
	switch cfg.Source {
	case config.SourceEtcd:
		return fmt.Sprintf("etcd %v", cfg.Etcd.Endpoints)
	case config.SourceZooKeeper:
		return fmt.Sprintf("zookeeper %v", cfg.ZooKeeper.Servers)
	}
	return "consul " + cfg.Consul.Address
}

func newEtcdSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	opt, err := cfg.EtcdOptions()
	if err != nil {
		return nil, err
	}
	return etcd.New(cfg.Etcd.Endpoints, opt, rules, log, reg), nil
}
