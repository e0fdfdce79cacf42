package daemon

import (
	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/config"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
)

// newConsulClient is the client of the Consul agent the configuration
// names (validated), for the source and for the split rules in KV alike.
func newConsulClient(cfg *config.Config) (*consul.Client, error) {
	return consul.NewClient(consulAPIConfig(cfg), cfg.Consul.Watch)
}

// consulAPIConfig is the api.Config of newConsulClient, for a caller that
// keeps its Transport (to close idle connections when done).
func consulAPIConfig(cfg *config.Config) *api.Config {
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
	return acfg
}
