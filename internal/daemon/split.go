package daemon

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/dyups"
	"github.com/swallowkeeper/swallowkeeper/internal/sink/splits"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
)

// splitSink builds the sink that pushes the traffic split rules
// (upstreams.splits, and Consul KV under upstreams.splits_consul_prefix) to
// every dyups target, taking over what prev's sink knew of them. nil when
// there is no dyups target (reload mode: splits need the Lua module).
func splitSink(cfg *config.Config, log *slog.Logger, prev *splits.Sink) (*splits.Sink, error) {
	var ts []splits.Target
	for i, tc := range cfg.Targets {
		base, err := dyups.ParseBaseURL(tc.URL)
		if err != nil {
			return nil, err
		}
		secret, err := cfg.TargetSecret(i)
		if err != nil {
			return nil, err
		}
		ts = append(ts, splits.Target{URL: base, Secret: secret.Reveal()})
	}
	if len(ts) == 0 {
		return nil, nil
	}
	s := splits.New(ts, cfg.Upstreams.Splits, splits.Options{Resync: time.Duration(cfg.Reconcile.Interval)}, log)
	if prefix := cfg.Upstreams.SplitsConsulPrefix; prefix != "" {
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
			return nil, fmt.Errorf("splits: consul: %w", err)
		}
		s.UseKV(client.KV(), prefix, time.Duration(cfg.Consul.WaitTime))
	}
	s.Inherit(prev)
	return s, nil
}
