package daemon

import (
	"fmt"
	"log/slog"

	"github.com/hashicorp/consul/api"
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
	acfg := api.DefaultConfig()
	addr, scheme, _ := config.SplitConsulAddress(cfg.Consul.Address, cfg.Consul.Scheme) // validated
	acfg.Address, acfg.Scheme = addr, scheme
	acfg.Datacenter = cfg.Consul.Datacenter
	acfg.Token, acfg.TokenFile = cfg.Consul.Token.Reveal(), ""
	acfg.TLSConfig = api.TLSConfig{
		Address:            cfg.Consul.TLS.ServerName,
		CAFile:             cfg.Consul.TLS.CAFile,
		CertFile:           cfg.Consul.TLS.CertFile,
		KeyFile:            cfg.Consul.TLS.KeyFile,
		InsecureSkipVerify: cfg.Consul.TLS.InsecureSkipVerify,
	}
	client, err := consul.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("consul: %w", err)
	}
	if cfg.Consul.Mode == config.ConsulModeKV {
		return consul.NewKV(client, rules, cfg.ConsulKVOptions(), log, reg), nil
	}
	return consul.New(client, rules, cfg.ConsulOptions(), log, reg), nil
}

// SourceName says which registry the daemon follows, for logs and status.
func SourceName(cfg *config.Config) string {
	switch cfg.Source {
	case config.SourceEtcd:
		return fmt.Sprintf("etcd %v (%s layout)", cfg.Etcd.Endpoints, cfg.Etcd.Layout)
	case config.SourceZooKeeper:
		return fmt.Sprintf("zookeeper %v (%s layout, root %s)", cfg.ZooKeeper.Servers, cfg.ZooKeeper.Layout, cfg.ZooKeeper.Root)
	}
	if cfg.Consul.Mode == config.ConsulModeKV {
		return fmt.Sprintf("consul %s (kv mode, keys %s/<upstream>/<ip>:<port>)", cfg.Consul.Address, consul.CleanKVPrefix(cfg.Consul.KVPrefix))
	}
	return "consul " + cfg.Consul.Address + " (services mode)"
}

func newEtcdSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	opt, err := cfg.EtcdOptions()
	if err != nil {
		return nil, err
	}
	return etcd.New(cfg.Etcd.Endpoints, opt, rules, log, reg), nil
}
