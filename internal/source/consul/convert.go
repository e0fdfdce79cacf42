package consul

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// Convert says how Consul health entries become registry instances.
type Convert struct {
	// OnlyPassing takes instances in warning out too; by default only a
	// critical check (or maintenance) of the instance or its node does.
	OnlyPassing bool
	// NativeWeights takes the weight from the service's Weights, as
	// Consul's DNS does for SRV records: Weights.Passing for a passing
	// instance, Weights.Warning for one in warning (0: the instance serves
	// nothing, since nginx has no weight 0). An entry whose Weights.Passing
	// is 0 (a catalog registration without weights) keeps the weight meta
	// or the default, as without the option.
	NativeWeights bool
	// AddressFrom, when set, is the tagged address (lan_ipv4, wan, ...)
	// to send traffic to: the service's entry (with its port, when set),
	// else the node's (with the service port). An instance with neither is
	// dropped with that reason: the operator chose a network, and the
	// service address may lie on another.
	AddressFrom string
}

// TaggedAddressKeys are the tagged address keys Consul defines and
// AddressFrom accepts.
var TaggedAddressKeys = []string{"lan", "lan_ipv4", "lan_ipv6", "wan", "wan_ipv4", "wan_ipv6"}

// CheckAddressFrom refuses an AddressFrom that is not one of
// TaggedAddressKeys ("" is the default, the service or node address).
func CheckAddressFrom(key string) error {
	if key == "" || slices.Contains(TaggedAddressKeys, key) {
		return nil
	}
	return fmt.Errorf("%q: want one of %v, or empty for the service (else node) address", key, TaggedAddressKeys)
}

// Instances converts Consul health entries to registry instances: the
// service address, or the node's when the service has none (or the tagged
// address c.AddressFrom); healthy unless a check of the instance or of its
// node (serfHealth, maintenance) is critical, or, with c.OnlyPassing, in
// warning. notes maps the label of each instance that Consul's data
// cannot place (no such tagged address) to why: registry.BuildService
// drops such an instance, whose address is empty, and BuildService puts
// the note in as the reason.
func (c Convert) Instances(entries []*api.ServiceEntry) (out []registry.Instance, notes map[string]string) {
	out = make([]registry.Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil {
			continue
		}
		in := registry.Instance{
			Service: e.Service.Service,
			ID:      e.Service.ID,
			Node:    e.Node.Node,
			Address: e.Service.Address,
			Port:    e.Service.Port,
			Tags:    e.Service.Tags,
			Meta:    e.Service.Meta,
		}
		if in.Address == "" {
			in.Address = e.Node.Address
		}
		if c.AddressFrom != "" {
			addr, port, ok := c.tagged(e)
			if !ok {
				if notes == nil {
					notes = map[string]string{}
				}
				notes[in.Label()] = fmt.Sprintf("no tagged address %s on the service or its node (consul.address_from)", strconv.Quote(c.AddressFrom))
			}
			in.Address, in.Port = addr, port
		}
		status := aggregate(e.Checks)
		in.Healthy = status == api.HealthPassing || status == api.HealthWarning && !c.OnlyPassing
		if c.NativeWeights && in.Healthy && e.Service.Weights.Passing != 0 {
			w := e.Service.Weights.Passing
			if status == api.HealthWarning {
				w = e.Service.Weights.Warning
			}
			if w == 0 {
				in.Healthy = false // Weights.Warning 0: no traffic while in warning
			} else {
				in.Params.Weight = &w // out of range: registry.Build drops it
			}
		}
		out = append(out, in)
	}
	return out, notes
}

// tagged returns the tagged address c.AddressFrom of the entry: the
// service's, whose port is used when set, else the node's.
func (c Convert) tagged(e *api.ServiceEntry) (string, int, bool) {
	if a, ok := e.Service.TaggedAddresses[c.AddressFrom]; ok && a.Address != "" {
		port := a.Port
		if port == 0 {
			port = e.Service.Port
		}
		return a.Address, port, true
	}
	if a := e.Node.TaggedAddresses[c.AddressFrom]; a != "" {
		return a, e.Service.Port, true
	}
	return "", e.Service.Port, false
}

// BuildService converts the entries of the service name and builds its
// part of the state (registry.BuildService), with the reasons Instances
// noted for the instances it could not place.
func (c Convert) BuildService(name string, entries []*api.ServiceEntry, r registry.Rules) registry.Part {
	list, notes := c.Instances(entries)
	p := registry.BuildService(name, list, r)
	for i, d := range p.Dropped {
		if note, ok := notes[d.Instance]; ok {
			p.Dropped[i].Reason = note
		}
	}
	return p
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

// aggregate is the status of the worst check: passing, warning, or
// critical for critical, maintenance and anything unknown.
func aggregate(checks api.HealthChecks) string {
	status := api.HealthPassing
	for _, c := range checks {
		if c == nil {
			return api.HealthCritical // a null in the list: nothing says it passes
		}
		switch c.Status {
		case api.HealthPassing:
		case api.HealthWarning:
			status = api.HealthWarning
		default: // critical, maintenance, or anything unknown
			return api.HealthCritical
		}
	}
	return status
}

// convert is how the source converts entries.
func (o Options) convert() Convert {
	return Convert{OnlyPassing: o.OnlyPassing, NativeWeights: o.NativeWeights, AddressFrom: o.AddressFrom}
}
