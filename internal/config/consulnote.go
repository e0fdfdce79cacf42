package config

import (
	"fmt"

	"github.com/swallowkeeper/swallowkeeper/internal/source/consul"
)

// ConsulModeNotes says, for `swallowkeeper check`, which consul settings
// the chosen consul.mode does not read, so that a setting that does
// nothing is not accepted silently: weights and address_from shape
// catalog instances, which kv mode does not read (its keys carry upsync's
// JSON), and kv_prefix is read in kv mode only. A setting left at its
// default is not noted (the file cannot tell it from one written out).
// Empty when the source is not Consul: then no consul setting applies, as
// CONFIGURATION.md says.
func (c *Config) ConsulModeNotes() []string {
	if c.Source != SourceConsul {
		return nil
	}
	k := c.Consul
	var notes []string
	switch k.Mode {
	case ConsulModeKV:
		if k.Weights != Default().Consul.Weights {
			notes = append(notes, fmt.Sprintf("consul.weights: %q does not apply in kv mode: weights come from each key's upsync JSON (\"weight\")", k.Weights))
		}
		if k.AddressFrom != "" {
			notes = append(notes, fmt.Sprintf("consul.address_from: %q does not apply in kv mode: the address is the key's last element (<kv_prefix>/<upstream>/<ip>:<port>)", k.AddressFrom))
		}
		if k.Watch != Default().Consul.Watch {
			notes = append(notes, fmt.Sprintf("consul.watch: %q does not apply in kv mode: it follows its folder with one long poll", k.Watch))
		}
	case ConsulModeServices:
		if consul.CleanKVPrefix(k.KVPrefix) != consul.CleanKVPrefix(Default().Consul.KVPrefix) {
			notes = append(notes, fmt.Sprintf("consul.kv_prefix: %q does not apply in services mode: it is read with consul.mode: kv only", k.KVPrefix))
		}
		if _, scheme, err := SplitConsulAddress(k.Address, k.Scheme); err == nil && k.Watch == consul.WatchPerService && scheme != "https" {
			notes = append(notes, "consul.watch: per_service over plain http holds one connection per service, and a Consul agent refuses more than limits.http_max_conns_per_client (default 200) from one address: use https, where HTTP/2 carries the long polls over a few connections, or raise that limit")
		}
		if k.Watch == consul.WatchPerService && k.Resync != Default().Consul.Resync {
			notes = append(notes, "consul.resync does not apply with consul.watch: per_service: each change of a service is read whole")
		}
	}
	return notes
}
