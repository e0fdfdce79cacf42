// Package registry is what every source shares: the registry-neutral
// Instance, the Rules that select instances and shape upstreams, and Build,
// which validates every value and turns instances into upstreams. It is
// pure: each source (Consul, etcd, ZooKeeper) reads its registry, converts
// what it read into Instances, and calls Build, so that all of them
// validate registry data the same way.
package registry

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Instance is one registered instance of a service, as read from a
// registry. Every string in it is untrusted.
type Instance struct {
	Service string
	ID      string // the registry's instance id
	Node    string // where it runs, when the registry says (Consul node)
	Address string // an IP literal, or Build drops the instance
	Port    int
	Tags    []string
	Meta    map[string]string
	// Healthy is false when the registry says the instance must not get
	// traffic (a critical check, a node down). Unhealthy instances keep
	// their upstream known to the engine.
	Healthy bool
	// Params carries per-server values the registry sets explicitly (the
	// nginx-upsync layout in etcd does); nil fields take the Rules' values.
	Params Params
}

// Params are optional per-instance server parameters.
type Params struct {
	Weight, MaxFails, MaxConns *int
	FailTimeout                *time.Duration
	Backup, Down               *bool
}

// apply sets the fields of s that p gives.
func (p Params) apply(s *upstream.Server) {
	set(&s.Weight, p.Weight)
	set(&s.MaxFails, p.MaxFails)
	set(&s.MaxConns, p.MaxConns)
	set(&s.FailTimeout, p.FailTimeout)
	set(&s.Backup, p.Backup)
	set(&s.Down, p.Down)
}

func set[T any](field *T, v *T) {
	if v != nil {
		*field = *v
	}
}

// Label names an instance "id@node" (or "id") for logs and status; a
// registry string with anything unusual in it is quoted, so a hostile id
// cannot forge log lines.
func (i Instance) Label() string {
	if i.Node == "" {
		return safeLabel(i.ID)
	}
	return safeLabel(i.ID) + "@" + safeLabel(i.Node)
}

// Rules select instances and shape upstreams.
type Rules struct {
	Include     []string // if set, only these services
	Exclude     []string // never these services (default: consul)
	RequireTags []string // an instance must carry every one of these tags
	// CanaryTag is the tag key of the canary rule: an instance tagged
	// "<CanaryTag>=x" goes to upstream "<service>_x"; "<CanaryTag>=default"
	// or no such tag to "<service>". Empty disables the rule.
	CanaryTag string
	// WeightMeta is the meta key holding an instance's weight.
	WeightMeta string

	// Addresses says which server addresses are allowed; its zero value
	// refuses loopback, link-local, multicast, broadcast and unspecified
	// addresses (upstream.RefusedByDefault).
	Addresses upstream.AddressPolicy
	// Reserved names are never created (compared case-insensitively):
	// the names of nginx.conf's own upstream blocks, which a registry
	// service of the same name would duplicate in the persisted file.
	Reserved []string

	Weight       int
	MaxFails     int
	FailTimeout  time.Duration
	MaxConns     int
	Keepalive    int
	KeepaliveFor map[string]int // per upstream name

	// BalanceFor is the balancing method per upstream name (absent: round
	// robin).
	BalanceFor map[string]upstream.Balance
	// DefaultsFor holds per upstream name the server defaults that replace
	// Weight, MaxFails, FailTimeout and MaxConns above (nil fields keep
	// them; Backup and Down are not used). A value the registry gives (the
	// weight meta, an instance's Params) still wins over them.
	DefaultsFor map[string]Params
}

// NewUpstream is upstream name of service svc with no servers yet, with
// the keepalive and balancing method the Rules give it.
func (r Rules) NewUpstream(name, svc string) upstream.Upstream {
	b, _ := overrideFor(r.BalanceFor, name)
	u := upstream.Upstream{Name: name, Service: svc, Keepalive: r.Keepalive, Balance: b}
	if ka, ok := overrideFor(r.KeepaliveFor, name); ok {
		u.Keepalive = ka
	}
	return u
}

// overrideFor is m's entry for upstream name. Keys match names as dyups
// and every other name check here do, case-insensitively (the
// configuration refuses two keys that differ only in case); an exact key
// is looked up first, the scan is over the few overrides configured.
func overrideFor[V any](m map[string]V, name string) (V, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	k := upstream.FoldKey(name)
	for key, v := range m {
		if upstream.FoldKey(key) == k {
			return v, true
		}
	}
	var zero V
	return zero, false
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
	Instance string // Instance.Label()
	Reason   string
}

func (d Dropped) String() string {
	return fmt.Sprintf("service %s instance %s: %s", strconv.Quote(d.Service), d.Instance, d.Reason)
}

// Build turns the instances of each service into upstreams. Every value
// from the registry is validated here; an invalid instance is dropped and
// reported, never rendered. An upstream whose instances are all unhealthy
// is still returned, with no servers, so that the engine knows it exists
// and keeps its last servers. Services not selected by the Rules, and
// instances without the required tags, are left out silently.
//
// Build is Merge of every service's BuildService; a source that keeps
// each service's Part rebuilds only the services that changed.
func Build(services map[string][]Instance, r Rules) (upstream.State, []Dropped) {
	parts := make([]Part, 0, len(services))
	for svc, list := range services {
		parts = append(parts, BuildService(svc, list, r))
	}
	return Merge(parts)
}

// Part is what one service contributes to the state: its upstreams, in
// name order, and its instances dropped as invalid.
type Part struct {
	Service   string
	Upstreams []upstream.Upstream
	Dropped   []Dropped
}

// BuildService builds the Part of one service; it is empty when the Rules
// do not select the service.
func BuildService(svc string, instances []Instance, r Rules) Part {
	p := Part{Service: svc}
	if !r.WantService(svc) {
		return p
	}
	list := slices.Clone(instances)
	// Deterministic order, so that of two instances on one address the
	// same one always wins.
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.Label(), b.Label()) })
	byName := map[string]int{} // upstream name → index in p.Upstreams
	for _, in := range list {
		if !hasAll(in.Tags, r.RequireTags) {
			continue
		}
		name, err := r.upstreamName(svc, in.Tags)
		if err != nil {
			p.Dropped = append(p.Dropped, Dropped{Service: svc, Instance: in.Label(), Reason: err.Error()})
			continue
		}
		k, ok := byName[name]
		if !ok {
			k = len(p.Upstreams)
			u := r.NewUpstream(name, svc)
			byName[name] = k
			p.Upstreams = append(p.Upstreams, u)
		}
		// The upstream is known from here on, even when this instance is
		// invalid: a service whose instances all turn invalid (agents
		// switching to hostnames, a weight meta of 0) keeps its last
		// servers under the empty guard instead of being removed.
		s, err := r.server(in, name)
		if err == nil && s.Backup && !p.Upstreams[k].Balance.AllowsBackup() {
			err = fmt.Errorf("backup server refused: upstream %s balances by %s, which nginx runs without backup servers", name, p.Upstreams[k].Balance.Method)
		}
		if err != nil {
			p.Dropped = append(p.Dropped, Dropped{Service: svc, Instance: in.Label(), Reason: err.Error()})
			continue
		}
		if !in.Healthy {
			continue // the upstream exists; the instance serves nothing
		}
		u := &p.Upstreams[k]
		if d := u.ServerAt(s.Addr); d >= 0 {
			p.Dropped = append(p.Dropped, duplicate(svc, in.Label(), s, u.Servers[d], name))
			continue
		}
		u.Servers = append(u.Servers, s)
	}
	for k := range p.Upstreams {
		p.Upstreams[k].Sort()
		// Registry weights up to 10000 would make rings of millions of
		// points in nginx and in the Lua module (see RingUnits).
		p.Upstreams[k].BoundRingWeights()
	}
	slices.SortFunc(p.Upstreams, func(a, b upstream.Upstream) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// Merge assembles the state from the parts, in service name order. An
// upstream name belongs to one service: a canary group's upstream
// ("<service>_<group>") whose name is also a service's name (compared
// case-insensitively) is refused, so that registering an instance of one
// service can never put it into another service's upstream; and of two
// services whose canary groups make the same name, the first keeps it and
// the other's instances are refused. The state shares server lists with
// the parts; neither may be changed in place.
func Merge(parts []Part) (upstream.State, []Dropped) {
	parts = slices.Clone(parts)
	slices.SortFunc(parts, func(a, b Part) int { return strings.Compare(a.Service, b.Service) })
	services := make(map[string]string, len(parts)) // folded name → service
	for _, p := range parts {
		services[upstream.FoldKey(p.Service)] = p.Service
	}
	st := make(upstream.State, len(parts))
	var dropped []Dropped
	for _, p := range parts {
		dropped = append(dropped, p.Dropped...)
		for _, u := range p.Upstreams {
			owner, isService := services[upstream.FoldKey(u.Name)]
			if u.Name != p.Service && isService {
				dropped = append(dropped, refused(p.Service, u, fmt.Sprintf("canary group upstream %s is also the name of service %s; refused (one service's instances never serve another's upstream)", u.Name, owner))...)
				continue
			}
			if have, taken := st[u.Name]; taken {
				dropped = append(dropped, refused(p.Service, u, fmt.Sprintf("upstream %s already belongs to service %s; refused", u.Name, have.Service))...)
				continue
			}
			st[u.Name] = u
		}
	}
	return st, dropped
}

// refused reports every server of an upstream that Merge refuses (one
// entry for the group when it has none).
func refused(svc string, u upstream.Upstream, reason string) []Dropped {
	if len(u.Servers) == 0 {
		return []Dropped{{Service: svc, Instance: "(every instance of " + u.Name + ")", Reason: reason}}
	}
	out := make([]Dropped, 0, len(u.Servers))
	for _, s := range u.Servers {
		out = append(out, Dropped{Service: svc, Instance: s.Instance, Reason: reason})
	}
	return out
}

func duplicate(svc, instance string, s, holder upstream.Server, name string) Dropped {
	return Dropped{Service: svc, Instance: instance,
		Reason: fmt.Sprintf("address %v already used by instance %s in upstream %s", s.Addr, holder.Instance, name)}
}

// server validates one instance and returns its server for upstream
// name. Precedence, lowest first: the Rules' defaults, the upstream's
// DefaultsFor, the weight meta, the instance's Params.
func (r Rules) server(in Instance, name string) (upstream.Server, error) {
	ip, err := upstream.ParseIP(in.Address)
	if err != nil {
		return upstream.Server{}, err
	}
	if err := r.Addresses.Check(ip); err != nil {
		return upstream.Server{}, err
	}
	if err := upstream.ValidPort(in.Port); err != nil {
		return upstream.Server{}, err
	}
	s := upstream.Server{
		Addr:        netip.AddrPortFrom(ip, uint16(in.Port)),
		Weight:      r.Weight,
		MaxFails:    r.MaxFails,
		FailTimeout: r.FailTimeout,
		MaxConns:    r.MaxConns,
		Instance:    in.Label(),
		Tags:        slices.Clone(in.Tags),
	}
	if d, ok := overrideFor(r.DefaultsFor, name); ok {
		d.Backup, d.Down = nil, nil // not defaults: only the registry sets them
		d.apply(&s)
	}
	if v, ok := in.Meta[r.WeightMeta]; ok && r.WeightMeta != "" {
		w, err := upstream.ParseCount("weight meta "+strconv.Quote(r.WeightMeta), v, 1, upstream.MaxWeight)
		if err != nil {
			return upstream.Server{}, err
		}
		s.Weight = w
	}
	in.Params.apply(&s)
	if err := s.Validate(); err != nil {
		return upstream.Server{}, err
	}
	return s, nil
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
				return "", fmt.Errorf("conflicting tags %q and %q", prefix+group, prefix+v)
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
	if IsReserved(r.Reserved, name) {
		return "", fmt.Errorf("upstream name %s is reserved (upstreams.reserved: nginx.conf defines it)", name)
	}
	return name, nil
}

// IsReserved reports whether name is in the reserved list,
// case-insensitively (nginx compares upstream names that way). The
// builder never creates such a name, and the engine never keeps one.
func IsReserved(reserved []string, name string) bool {
	return slices.ContainsFunc(reserved, func(r string) bool { return strings.EqualFold(r, name) })
}

func hasAll(tags, want []string) bool {
	for _, w := range want {
		if !slices.Contains(tags, w) {
			return false
		}
	}
	return true
}

func safeLabel(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && !strings.ContainsRune("-_.:", c) {
			return strconv.Quote(s)
		}
	}
	return s
}
