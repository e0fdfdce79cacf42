package wrapper

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Consul registers through the local agent, with the health check the
// agent then runs. Without an address the service is registered without
// one, and Consul gives the node's address (the agent's advertise
// address) to whoever reads it, the daemon included.
type Consul struct{ Client *api.Client }

var _ AddressResolver = Consul{}

// Register implements Registrar. The check starts passing: the wrapper has
// just seen the app answer it.
func (c Consul) Register(ctx context.Context, o Options) error {
	r := &api.AgentServiceRegistration{
		ID: o.ID, Name: o.Service, Address: o.Address, Port: o.Port, Tags: o.Tags, Meta: o.Meta,
	}
	if o.Check != "" {
		chk := &api.AgentServiceCheck{
			Interval: o.CheckInterval.String(), Timeout: o.CheckTimeout.String(), Status: api.HealthPassing,
		}
		if o.DeregisterAfter > 0 {
			chk.DeregisterCriticalServiceAfter = o.DeregisterAfter.String()
		}
		if hostport, ok := strings.CutPrefix(o.Check, "tcp://"); ok {
			chk.TCP = hostport
		} else {
			chk.HTTP = o.Check
		}
		r.Check = chk
	}
	err := c.Client.Agent().ServiceRegisterOpts(r, api.ServiceRegisterOpts{}.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: register %s: %w", o.ID, err)
	}
	return nil
}

// Deregister implements Registrar.
func (c Consul) Deregister(ctx context.Context, id string) error {
	if err := c.Client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: deregister %s: %w", id, err)
	}
	return nil
}

// InstanceAddress implements AddressResolver: the address the catalog
// gives the registered instance (its own, else its node's), as the daemon
// reads it. It needs the catalog entry, so call it after Register; it
// fails while the agent has not synced it yet, and when several nodes
// hold an instance with this ID.
func (c Consul) InstanceAddress(ctx context.Context, o Options) (string, error) {
	entries, _, err := c.Client.Catalog().Service(o.Service, "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("consul: read %s back from the catalog: %w", o.ID, err)
	}
	var found []string
	for _, e := range entries {
		if e.ServiceID != o.ID || e.ServiceName != o.Service {
			continue
		}
		addr := e.ServiceAddress
		if addr == "" {
			addr = e.Address
		}
		found = append(found, addr)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("consul: %s is not in the catalog yet", o.ID)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("consul: %d nodes hold an instance %s of %s: cannot tell which one is ours", len(found), o.ID, o.Service)
}
