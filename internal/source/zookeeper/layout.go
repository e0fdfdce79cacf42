package zookeeper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// Layout is how services and their instances are stored under the root:
// always <root>/<service>/<instance>, one znode per instance; the layout
// says what the instance znode's name and data mean.
type Layout string

const (
	// Curator is Apache Curator service discovery, which Spring Cloud
	// Zookeeper uses: the znode is named by the instance id and holds
	// Curator's ServiceInstance JSON.
	Curator Layout = "curator"
	// Plain names the znode "<ip>:<port>" ("[<ipv6>]:<port>"); its data is
	// empty or a JSON object of server parameters in nginx-upsync-module's
	// format: weight, max_fails, fail_timeout (seconds), max_conns, backup,
	// down.
	Plain Layout = "plain"
)

// ParseLayout checks a layout name from the configuration.
func ParseLayout(s string) (Layout, error) {
	switch l := Layout(s); l {
	case Curator, Plain:
		return l, nil
	}
	return "", fmt.Errorf("zookeeper: unknown layout %q (want %q or %q)", s, Curator, Plain)
}

// Znode is one instance znode as read.
type Znode struct {
	Name string
	Data []byte
	// Err is set when the znode exists but cannot be read (no read
	// permission); such a znode is reported invalid.
	Err error
}

// Invalid is a znode left out of a snapshot, and why.
type Invalid struct {
	Path   string
	Reason string
}

// Snapshot converts one complete read of the tree into the engine's
// snapshot. tree maps every service directory under root to its instance
// znodes. Services not selected by the rules are left out; Services counts
// the selected ones.
//
// Every znode the layout cannot read, and every instance registry.Build
// refuses, is left out and returned as Invalid, naming its path. A selected
// service that has no usable instance at all (an empty directory, as after
// a mass expiry of ephemeral znodes, or only invalid znodes) still yields
// its upstream, with no servers, so that the engine keeps its last servers
// instead of deleting it. A service whose valid instances all lack the
// required tags yields nothing, as in every source.
func (l Layout) Snapshot(root string, tree map[string][]Znode, r registry.Rules) (engine.Snapshot, []Invalid) {
	var invalid []Invalid
	services := map[string][]registry.Instance{}
	paths := map[string]string{} // service + "\x00" + instance label → znode path
	tagged := map[string]bool{}  // services with an instance carrying every required tag
	for _, svc := range slices.Sorted(maps.Keys(tree)) {
		if !r.WantService(svc) {
			continue
		}
		list := make([]registry.Instance, 0, len(tree[svc]))
		for _, z := range tree[svc] {
			path := Join(root, svc, z.Name)
			if z.Err != nil {
				invalid = append(invalid, Invalid{path, "unreadable: " + z.Err.Error()})
				continue
			}
			in, err := l.Instance(svc, z.Name, z.Data)
			if err != nil {
				invalid = append(invalid, Invalid{path, err.Error()})
				continue
			}
			if hasAll(in.Tags, r.RequireTags) {
				tagged[svc] = true
			}
			paths[svc+"\x00"+in.Label()] = path
			list = append(list, in)
		}
		services[svc] = list
	}

	st, dropped := registry.Build(services, r)
	for _, d := range dropped {
		path, ok := paths[d.Service+"\x00"+d.Instance]
		if !ok {
			path = Join(root, d.Service, d.Instance)
		}
		invalid = append(invalid, Invalid{path, d.Reason})
	}

	built := map[string]bool{}
	for _, u := range st {
		built[u.Service] = true
	}
	for svc, list := range services {
		withoutTags := len(list) > 0 && !tagged[svc]
		if built[svc] || withoutTags || upstream.ValidName(svc) != nil {
			continue
		}
		u := upstream.Upstream{Name: svc, Service: svc, Keepalive: r.Keepalive}
		if k, ok := r.KeepaliveFor[svc]; ok {
			u.Keepalive = k
		}
		st[svc] = u
	}
	return engine.Snapshot{Upstreams: st, Services: len(services)}, invalid
}

// Instance converts one instance znode, <root>/<service>/<node> holding
// data, to a registry instance, or says why the layout cannot read it.
// What it returns is still untrusted: registry.Build validates the address,
// the port and every parameter.
func (l Layout) Instance(service, node string, data []byte) (registry.Instance, error) {
	switch l {
	case Curator:
		return curatorInstance(service, node, data)
	case Plain:
		return plainInstance(service, node, data)
	}
	return registry.Instance{}, fmt.Errorf("unknown layout %q", string(l))
}

// curatorInstance reads Curator's ServiceInstance JSON:
//
//	{"name":"web","id":"…","address":"10.0.0.1","port":8080,"sslPort":null,
//	 "payload":{"@class":"…ZookeeperInstance","id":"…","name":"web",
//	            "metadata":{"instance_status":"UP"}},
//	 "registrationTimeUTC":1658569595889,"serviceType":"DYNAMIC","uriSpec":{…}}
//
// The service is the directory and the instance id the znode's name (as in
// Curator, which finds instances by path, not by the JSON's name and id).
// The upstream gets address:port. An instance with only an sslPort is
// dropped: an nginx upstream here carries plain ports, and sending plain
// traffic to a TLS port would fail every request. The string values of
// payload.metadata (Spring Cloud Zookeeper's metadata map) become Meta, and
// tags "key=value" so that RequireTags and the canary rule (metadata
// gray=canary) work; other values are ignored. The instance is unhealthy
// when metadata.instance_status is set and is not "UP" (Spring Cloud's
// OUT_OF_SERVICE) or when Curator's "enabled" is false.
func curatorInstance(service, node string, data []byte) (registry.Instance, error) {
	in := registry.Instance{Service: service, ID: node, Healthy: true}
	f, err := jsonobj.Object(data)
	if err != nil {
		return in, err
	}
	addr, err := stringField(f, "address")
	if err != nil {
		return in, err
	}
	if addr == "" {
		return in, errors.New("no address")
	}
	in.Address = addr
	port, hasPort, err := jsonobj.Int(f, "port")
	if err != nil {
		return in, err
	}
	ssl, hasSSL, err := jsonobj.Int(f, "sslPort")
	if err != nil {
		return in, err
	}
	switch {
	case hasPort:
		in.Port = port
	case hasSSL:
		return in, fmt.Errorf("only an sslPort (%d) and no port: TLS-only instances are not supported", ssl)
	default:
		return in, errors.New("no port")
	}
	if enabled, ok, err := jsonobj.Bool(f, "enabled"); err != nil {
		return in, err
	} else if ok && !enabled {
		in.Healthy = false
	}

	meta, err := metadata(f["payload"])
	if err != nil {
		return in, err
	}
	if len(meta) > 0 {
		in.Meta = meta
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			in.Tags = append(in.Tags, k+"="+meta[k])
		}
		if st, ok := meta["instance_status"]; ok && st != "UP" {
			in.Healthy = false
		}
	}
	return in, nil
}

// metadata reads payload.metadata when the payload is an object (Spring
// Cloud's ZookeeperInstance). A payload of another type is some other
// application's own Curator payload and is ignored; a metadata that is not
// an object is malformed.
func metadata(payload json.RawMessage) (map[string]string, error) {
	if jsonobj.Kind(payload) != "object" {
		return nil, nil
	}
	p, err := jsonobj.Object(payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	raw, ok := p["metadata"]
	if !ok || jsonobj.Kind(raw) == "null" {
		return nil, nil
	}
	if k := jsonobj.Kind(raw); k != "object" {
		return nil, fmt.Errorf("payload.metadata is %s, want an object", jsonobj.Article(k))
	}
	m, err := jsonobj.Object(raw)
	if err != nil {
		return nil, fmt.Errorf("payload.metadata: %w", err)
	}
	meta := map[string]string{}
	for k, v := range m {
		if jsonobj.Kind(v) != "string" {
			continue // numbers, lists, objects: not ours to interpret
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("payload.metadata.%s: %w", jsonobj.Clip(k), err)
		}
		meta[k] = s
	}
	return meta, nil
}

// plainInstance reads a "<ip>:<port>" znode name and its optional JSON
// parameters.
func plainInstance(service, node string, data []byte) (registry.Instance, error) {
	in := registry.Instance{Service: service, ID: node, Healthy: true}
	host, port, err := splitHostPort(node)
	if err != nil {
		return in, err
	}
	in.Address, in.Port = host, port
	if len(bytes.TrimSpace(data)) == 0 {
		return in, nil
	}
	f, err := jsonobj.Object(data)
	if err != nil {
		return in, err
	}
	p := &in.Params
	for _, c := range []struct {
		key    string
		lo, hi int
		dst    **int
	}{
		{"weight", 1, upstream.MaxWeight, &p.Weight},
		{"max_fails", 0, upstream.MaxMaxFails, &p.MaxFails},
		{"max_conns", 0, upstream.MaxMaxConns, &p.MaxConns},
	} {
		v, ok, err := jsonobj.Int(f, c.key)
		if err != nil {
			return in, err
		}
		if ok {
			if v < c.lo || v > c.hi {
				return in, fmt.Errorf("%s %d out of range %d-%d", c.key, v, c.lo, c.hi)
			}
			*c.dst = &v
		}
	}
	if v, ok, err := jsonobj.Int(f, "fail_timeout"); err != nil {
		return in, err
	} else if ok {
		// Bound before multiplying: a huge count of seconds must not wrap
		// around into a plausible duration.
		if v < 0 || time.Duration(v) > upstream.MaxFailTimeout/time.Second {
			return in, fmt.Errorf("fail_timeout %d out of range 0-%d seconds", v, int(upstream.MaxFailTimeout/time.Second))
		}
		d := time.Duration(v) * time.Second
		p.FailTimeout = &d
	}
	for _, c := range []struct {
		key string
		dst **bool
	}{{"backup", &p.Backup}, {"down", &p.Down}} {
		v, ok, err := flagField(f, c.key)
		if err != nil {
			return in, err
		}
		if ok {
			*c.dst = &v
		}
	}
	return in, nil
}

// splitHostPort splits "<ip>:<port>" or "[<ipv6>]:<port>". The host is
// validated later, by registry.Build; here only the shape and the port's
// digits are checked.
func splitHostPort(node string) (string, int, error) {
	i := strings.LastIndexByte(node, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("znode name %s is not <ip>:<port>", jsonobj.Clip(node))
	}
	host, digits := node[:i], node[i+1:]
	if len(digits) == 0 || len(digits) > 5 || strings.Trim(digits, "0123456789") != "" {
		return "", 0, fmt.Errorf("znode name %s: port %s is not 1 to 5 ASCII digits", jsonobj.Clip(node), jsonobj.Clip(digits))
	}
	port, _ := strconv.Atoi(digits)
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		if !ok || !strings.Contains(inner, ":") {
			return "", 0, fmt.Errorf("znode name %s: brackets hold only an IPv6 address", jsonobj.Clip(node))
		}
		return inner, port, nil
	}
	if strings.Contains(host, ":") {
		return "", 0, fmt.Errorf("znode name %s: an IPv6 address needs brackets, [addr]:port", jsonobj.Clip(node))
	}
	return host, port, nil
}

// stringField returns a string member; absent and null give "".
func stringField(f map[string]json.RawMessage, key string) (string, error) {
	s, _, err := jsonobj.String(f, key)
	return s, err
}

// flagField accepts nginx-upsync's 0 and 1 as well as JSON booleans.
func flagField(f map[string]json.RawMessage, key string) (bool, bool, error) {
	if jsonobj.Kind(f[key]) == "number" {
		n, _, err := jsonobj.Int(f, key)
		if err != nil || n < 0 || n > 1 {
			return false, false, fmt.Errorf("%s %s: want 0, 1, true or false", key, jsonobj.Clip(string(f[key])))
		}
		return n == 1, true, nil
	}
	return jsonobj.Bool(f, key)
}

func hasAll(tags, want []string) bool {
	for _, w := range want {
		if !slices.Contains(tags, w) {
			return false
		}
	}
	return true
}

// Join builds a znode path under root ("/" or "/a/b", no trailing slash).
func Join(root string, names ...string) string {
	if root == "/" {
		root = ""
	}
	return root + "/" + strings.Join(names, "/")
}
