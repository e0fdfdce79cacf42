package config

import (
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
	"github.com/swallowkeeper/swallowkeeper/internal/source/etcd"
	"github.com/swallowkeeper/swallowkeeper/internal/source/zookeeper"
)

// EtcdOptions are the etcd source's options, every default resolved: an
// unset prefix is the layout's (/upstreams for upsync, /services for
// service), the password comes from password_file, and resync 0 is off,
// as in every source. The layout, like every option, is checked by the
// source's Validate: the source knows which layouts it reads.
func (cfg *Config) EtcdOptions() (etcd.Options, error) {
	e := cfg.Etcd
	password, err := cfg.ReadPassword()
	if err != nil {
		return etcd.Options{}, err
	}
	opt := etcd.Options{
		Layout:      layout.Layout(e.Layout),
		Prefix:      e.Prefix,
		DialTimeout: time.Duration(e.DialTimeout),
		Resync:      time.Duration(e.Resync),
		Username:    e.Username,
		Password:    password,
		CAFile:      e.TLS.CAFile,
		CertFile:    e.TLS.CertFile,
		KeyFile:     e.TLS.KeyFile,
	}
	if opt.Prefix == "" {
		opt.Prefix = opt.Layout.DefaultRoot()
	}
	return opt, opt.Validate()
}

// ZooKeeperOptions are the ZooKeeper source's options, every default
// resolved (the root, the layout and the session timeout come from the
// defaults of the zookeeper section; resync 0 is off).
func (cfg *Config) ZooKeeperOptions() (zookeeper.Options, error) {
	z := cfg.ZooKeeper
	opt := zookeeper.Options{
		Root:           z.Root,
		Layout:         layout.Layout(z.Layout),
		SessionTimeout: time.Duration(z.SessionTimeout),
		Resync:         time.Duration(z.Resync),
	}
	return opt, opt.Validate()
}

// defaultConsulKVPrefix is nginx-upsync-module's folder.
const defaultConsulKVPrefix = consul.DefaultKVPrefix

// validateConsulMode checks consul.mode and what goes with it.
func (c *Config) validateConsulMode(bad badFunc) {
	k := c.Consul
	switch k.Mode {
	case ConsulModeServices:
	case ConsulModeKV:
		if err := consul.CheckKVPrefix(k.KVPrefix); err != nil {
			bad("consul.kv_prefix", "%q: %v", k.KVPrefix, err)
		}
	default:
		bad("consul.mode", "%q: want services or kv", k.Mode)
	}
	if k.Weights != ConsulWeightsMeta && k.Weights != ConsulWeightsNative {
		bad("consul.weights", "%q: want meta or native", k.Weights)
	}
	if k.Watch != consul.WatchCatalog && k.Watch != consul.WatchPerService {
		bad("consul.watch", "%q: want %s or %s", k.Watch, consul.WatchCatalog, consul.WatchPerService)
	}
	if err := consul.CheckAddressFrom(k.AddressFrom); err != nil {
		bad("consul.address_from", "%v", err)
	}
}

// ConsulOptions are the Consul source's options in services mode.
func (cfg *Config) ConsulOptions() consul.Options {
	k := cfg.Consul
	return consul.Options{
		WaitTime:         time.Duration(k.WaitTime),
		Resync:           time.Duration(k.Resync),
		OnlyPassing:      k.OnlyPassing,
		AllowACLFiltered: k.AllowACLFiltered,
		NativeWeights:    k.Weights == ConsulWeightsNative,
		AddressFrom:      k.AddressFrom,
		Watch:            k.Watch,
	}
}

// ConsulKVOptions are the Consul source's options in kv mode.
func (cfg *Config) ConsulKVOptions() consul.KVOptions {
	o := cfg.ConsulOptions()
	return consul.KVOptions{Prefix: consul.CleanKVPrefix(cfg.Consul.KVPrefix), WaitTime: o.WaitTime, AllowACLFiltered: o.AllowACLFiltered}
}
