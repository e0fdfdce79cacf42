package cli

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
)

func newEtcdSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	opt, err := cfg.EtcdOptions()
	if err != nil {
		return nil, err
	}
	return etcd.New(cfg.Etcd.Endpoints, opt, rules, log, reg), nil
}
