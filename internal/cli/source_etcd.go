package cli

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

func newEtcdSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	return nil, errors.New("etcd: not wired yet")
}
