package consul

import (
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
