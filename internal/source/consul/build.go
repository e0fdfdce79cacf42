package consul

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Rules turn registry entries into upstreams: which services and instances
// count, how upstreams are named, and the server parameters.
type Rules struct {
	Include     []string // if set, only these services
	Exclude     []string // never these services (default: consul)
	RequireTags []string // an instance must carry every one of these tags
	// CanaryTag is the tag key of the canary rule: an instance tagged
	// "<CanaryTag>=x" goes to upstream "<service>_x"; "<CanaryTag>=default"
	// or no such tag to "<service>". Empty disables the rule.
	CanaryTag string
	// WeightMeta is the service meta key holding an instance's weight.
	WeightMeta string
	// OnlyPassing also takes instances out whose checks are in warning;
	// by default only critical checks (and maintenance) take them out.
	OnlyPassing bool

	Weight       int
	MaxFails     int
	FailTimeout  time.Duration
	MaxConns     int
	Keepalive    int
	KeepaliveFor map[string]int // per upstream name
}

// WantService reports whether a service is selected by name.
func (r Rules) WantService(name string) bool {
	if slices.Contains(r.Exclude, name) {
		return false
	}
	return len(r.Include) == 0 || slices.Contains(r.Include, name)
}

// Dropped is an instance left out because its registry data is invalid.
type Dropped struct {
	Service  string
	Instance string // "<service id> on <node>"
	Reason   string
}

func (d Dropped) String() string {
	return fmt.Sprintf("service %s instance %s: %s", d.Service, d.Instance, d.Reason)
}

// Build turns the health entries of each service into upstreams. Every
// value from the registry is validated here; an invalid instance is dropped
// and reported, never rendered. An upstream whose instances are all
// unhealthy is still returned, with no servers, so that the engine knows it
// exists and keeps its last servers.
func Build(entries map[string][]*api.ServiceEntry, r Rules) (upstream.State, []Dropped) {
	st := upstream.State{}
	var dropped []Dropped
	services := make([]string, 0, len(entries))
	for name := range entries {
		services = append(services, name)
	}
	slices.Sort(services)
	for _, svc := range services {
		list := slices.Clone(entries[svc])
		// Deterministic order, so that of two instances on one address the
		// same one always wins.
		slices.SortFunc(list, func(a, b *api.ServiceEntry) int {
			return strings.Compare(instanceLabel(a), instanceLabel(b))
		})
		for _, e := range list {
			if e == nil || e.Service == nil || e.Node == nil {
				continue
			}
			if !hasAll(e.Service.Tags, r.RequireTags) {
				continue
			}
			name, s, err := r.server(svc, e)
			if err != nil {
				dropped = append(dropped, Dropped{Service: svc, Instance: instanceLabel(e), Reason: err.Error()})
				continue
			}
			u, ok := st[name]
			if !ok {
				u = upstream.Upstream{Name: name, Service: svc, Keepalive: r.Keepalive}
				if k, ok := r.KeepaliveFor[name]; ok {
					u.Keepalive = k
				}
			}
			if healthy(e.Checks, r.OnlyPassing) {
				if i := slices.IndexFunc(u.Servers, func(o upstream.Server) bool { return o.Addr == s.Addr }); i >= 0 {
					dropped = append(dropped, Dropped{Service: svc, Instance: instanceLabel(e),
						Reason: fmt.Sprintf("address %v already used by instance %s in upstream %s", s.Addr, u.Servers[i].Instance, name)})
				} else {
					u.Servers = append(u.Servers, s)
				}
			}
			st[name] = u
		}
	}
	for name, u := range st {
		u.Sort()
		st[name] = u
	}
	return st, dropped
}

// server validates one instance and returns its upstream name and server.
func (r Rules) server(svc string, e *api.ServiceEntry) (string, upstream.Server, error) {
	name, err := r.upstreamName(svc, e.Service.Tags)
	if err != nil {
		return "", upstream.Server{}, err
	}
	addr := e.Service.Address
	if addr == "" {
		addr = e.Node.Address
	}
	ip, err := upstream.ParseIP(addr)
	if err != nil {
		return "", upstream.Server{}, err
	}
	if err := upstream.ValidPort(e.Service.Port); err != nil {
		return "", upstream.Server{}, err
	}
	s := upstream.Server{
		Weight:      r.Weight,
		MaxFails:    r.MaxFails,
		FailTimeout: r.FailTimeout,
		MaxConns:    r.MaxConns,
		Instance:    instanceLabel(e),
	}
	s.Addr = netipAddrPort(ip, e.Service.Port)
	if v, ok := e.Service.Meta[r.WeightMeta]; ok && r.WeightMeta != "" {
		w, err := upstream.ParseCount("weight meta "+r.WeightMeta, v, 1, upstream.MaxWeight)
		if err != nil {
			return "", upstream.Server{}, err
		}
		s.Weight = w
	}
	if err := s.Validate(); err != nil {
		return "", upstream.Server{}, err
	}
	return name, s, nil
}

// upstreamName applies the canary rule and validates the result.
func (r Rules) upstreamName(svc string, tags []string) (string, error) {
	name := svc
	if r.CanaryTag != "" {
		prefix := r.CanaryTag + "="
		group := ""
		for _, t := range tags {
			v, ok := strings.CutPrefix(t, prefix)
			if !ok {
				continue
			}
			if group != "" && v != group {
				return "", fmt.Errorf("conflicting tags %s%s and %s%s", prefix, group, prefix, v)
			}
			group = v
		}
		if group != "" && group != "default" {
			name = svc + "_" + group
		}
	}
	if err := upstream.ValidName(name); err != nil {
		return "", err
	}
	return name, nil
}

// healthy reports whether no check of the instance, its own or its node's
// (serfHealth, maintenance), is critical; with onlyPassing, warning counts
// as unhealthy too.
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

func hasAll(tags, want []string) bool {
	for _, w := range want {
		if !slices.Contains(tags, w) {
			return false
		}
	}
	return true
}

// instanceLabel names an instance "id@node" for logs and status; registry
// strings with anything unusual in them are quoted, so a hostile ID cannot
// forge log lines.
func instanceLabel(e *api.ServiceEntry) string {
	if e == nil || e.Service == nil || e.Node == nil {
		return "?"
	}
	return safeLabel(e.Service.ID) + "@" + safeLabel(e.Node.Node)
}

func safeLabel(s string) string {
	for _, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && !strings.ContainsRune("-_.:", c) {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}
