package cli

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
)

func newEtcdSource(cfg *config.Config, rules registry.Rules, log *slog.Logger, reg prometheus.Registerer) (engine.Source, error) {
	e := cfg.Etcd
	layout, err := etcd.ParseLayout(e.Layout)
	if err != nil {
		return nil, err
	}
	password, err := cfg.ReadPassword()
	if err != nil {
		return nil, err
	}
	resync := time.Duration(e.Resync)
	if resync == 0 {
		resync = -1 // the configuration's 0s means off; the source's 0 means its default
	}
	opt := etcd.Options{
		Layout:      layout,
		Prefix:      e.Prefix,
		DialTimeout: time.Duration(e.DialTimeout),
		Resync:      resync,
		Username:    e.Username,
		Password:    password.Reveal(),
		CAFile:      e.TLS.CAFile,
		CertFile:    e.TLS.CertFile,
		KeyFile:     e.TLS.KeyFile,
	}
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	return etcd.New(e.Endpoints, opt, rules, log, reg), nil
}
