package consul

import (
	"slices"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// Instances converts Consul health entries to registry instances: the
// service address, or the node's when the service has none; healthy unless
// a check of the instance or of its node (serfHealth, maintenance) is
// critical, or, with onlyPassing, in warning.
func Instances(entries []*api.ServiceEntry, onlyPassing bool) []registry.Instance {
	out := make([]registry.Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil {
			continue
		}
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out = append(out, registry.Instance{
			Service: e.Service.Service,
			ID:      e.Service.ID,
			Node:    e.Node.Node,
			Address: addr,
			Port:    e.Service.Port,
			Tags:    e.Service.Tags,
			Meta:    e.Service.Meta,
			Healthy: healthy(e.Checks, onlyPassing),
		})
	}
	return out
}

// OnlyService keeps the entries of exactly the service name. Consul's
// /v1/health/service/<name> matches the name case-insensitively: the
// answer for "Api" holds the instances of "api" too, and without this
// filter they would join the other service's upstream.
func OnlyService(entries []*api.ServiceEntry, name string) []*api.ServiceEntry {
	for i, e := range entries {
		if e != nil && e.Service != nil && e.Service.Service == name {
			continue
		}
		// Rare: copy only when an entry must go.
		out := slices.Clone(entries[:i])
		for _, e := range entries[i+1:] {
			if e != nil && e.Service != nil && e.Service.Service == name {
				out = append(out, e)
			}
		}
		return out
	}
	return entries
}

func healthy(checks api.HealthChecks, onlyPassing bool) bool {
	for _, c := range checks {
		switch c.Status {
		case api.HealthPassing:
		case api.HealthWarning:
			if onlyPassing {
				return false
			}
		default: // critical, maintenance, or anything unknown
			return false
		}
	}
	return true
}
