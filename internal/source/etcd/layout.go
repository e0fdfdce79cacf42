package etcd

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

// Layout is how services and their instances are stored under the prefix:
// always one key per instance, <prefix>/<service>/<name>; the layout says
// what the name and the value mean.
type Layout string

const (
	// Upsync is nginx-upsync-module's layout: the key is
	// <prefix>/<upstream>/<ip>:<port> ("[<ipv6>]:<port>") and the value is
	// empty or a JSON object of server parameters, read as the module reads
	// it: weight, max_fails, fail_timeout (seconds), down, backup, as numbers
	// or decimal strings, keys in any case; max_conns as well.
	Upsync Layout = "upsync"
	// Service is a service registry layout: the key is
	// <prefix>/<service>/<instance-id> and the value a JSON object
	// {"address":"10.0.0.1","port":8080,"tags":[…],"meta":{…},"healthy":true}.
	// Instances usually hold a lease, so that a dead one disappears.
	Service Layout = "service"
)

// Default prefixes, by layout.
const (
	DefaultUpsyncPrefix  = "/upstreams"
	DefaultServicePrefix = "/services"
)

// ParseLayout checks a layout name from the configuration.
func ParseLayout(s string) (Layout, error) {
	switch l := Layout(s); l {
	case Upsync, Service:
		return l, nil
	}
	return "", fmt.Errorf("etcd: unknown layout %q (want %q or %q)", s, Upsync, Service)
}

// DefaultPrefix is where the layout's registrations live by default.
func (l Layout) DefaultPrefix() string {
	if l == Service {
		return DefaultServicePrefix
	}
	return DefaultUpsyncPrefix
}

// KV is one key and its value as read from etcd.
type KV struct {
	Key   string
	Value []byte
}

// Invalid is a key left out of a snapshot, and why.
type Invalid struct {
	Key    string
	Reason string
}

// Snapshot converts one complete read of the prefix into the engine's
// snapshot. dir is the prefix with its trailing slash ("/upstreams/"); every
// key in kvs starts with it.
//
// A service is seen when at least one key lies under <dir><service>/;
// Services counts the seen services the rules select. Every key the layout
// cannot read, and every instance registry.Build refuses, is left out and
// returned as Invalid, naming its key. A selected service whose keys are
// all invalid still yields its upstream, with no servers, so that the
// engine keeps its last servers instead of deleting it: a bad write must
// not empty nginx. A service whose readable instances all lack the
// required tags yields nothing, as in every source.
func (l Layout) Snapshot(dir string, kvs []KV, r registry.Rules) (engine.Snapshot, []Invalid) {
	var invalid []Invalid
	services := map[string][]registry.Instance{}
	keys := map[string]string{} // service + "\x00" + instance label → key
	tagged := map[string]bool{} // services with an instance carrying every required tag
	for _, kv := range kvs {
		svc, name, err := splitKey(dir, kv.Key)
		if err != nil {
			invalid = append(invalid, Invalid{kv.Key, err.Error()})
			continue
		}
		if !r.WantService(svc) {
			continue
		}
		if _, ok := services[svc]; !ok {
			services[svc] = nil // seen, even if no instance is readable
		}
		in, err := l.Instance(svc, name, kv.Value)
		if err != nil {
			invalid = append(invalid, Invalid{kv.Key, err.Error()})
			continue
		}
		if hasAll(in.Tags, r.RequireTags) {
			tagged[svc] = true
		}
		keys[svc+"\x00"+in.Label()] = kv.Key
		services[svc] = append(services[svc], in)
	}

	st, dropped := registry.Build(services, r)
	for _, d := range dropped {
		key, ok := keys[d.Service+"\x00"+d.Instance]
		if !ok {
			key = dir + d.Service + "/" + d.Instance
		}
		invalid = append(invalid, Invalid{key, d.Reason})
	}

	built := map[string]bool{}
	for _, u := range st {
		built[u.Service] = true
	}
	for _, svc := range slices.Sorted(maps.Keys(services)) {
		list := services[svc]
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
	slices.SortFunc(invalid, func(a, b Invalid) int { return strings.Compare(a.Key, b.Key) })
	return engine.Snapshot{Upstreams: st, Services: len(services)}, invalid
}

// splitKey cuts <dir><service>/<name> into its two names; both must be
// non-empty and the name may not hold another slash.
func splitKey(dir, key string) (service, name string, err error) {
	rest, ok := strings.CutPrefix(key, dir)
	if !ok {
		return "", "", fmt.Errorf("key outside the prefix %s", jsonobj.Clip(dir))
	}
	service, name, ok = strings.Cut(rest, "/")
	switch {
	case !ok:
		return "", "", errors.New("key is not <prefix>/<service>/<instance>")
	case service == "":
		return "", "", errors.New("empty service name in key")
	case name == "":
		return "", "", errors.New("empty instance name in key")
	case strings.Contains(name, "/"):
		return "", "", errors.New("key nests deeper than <prefix>/<service>/<instance>")
	}
	return service, name, nil
}

// Instance converts the key <prefix>/<service>/<name> holding value into a
// registry instance, or says why the layout cannot read it. What it
// returns is still untrusted: registry.Build validates the address, the
// port, the names and every parameter.
func (l Layout) Instance(service, name string, value []byte) (registry.Instance, error) {
	switch l {
	case Upsync:
		return upsyncInstance(service, name, value)
	case Service:
		return serviceInstance(service, name, value)
	}
	return registry.Instance{}, fmt.Errorf("unknown layout %q", string(l))
}

// upsyncInstance reads "<ip>:<port>" and nginx-upsync-module's parameters.
// The module (cJSON) matches keys case-insensitively and takes a number
// or a string of decimal digits for each parameter; so does this, so that
// its users switch without touching their keys. Where the module silently
// falls back to a default for a bad value, the instance is dropped here
// instead: a value that cannot be mapped exactly is never guessed at.
// Unknown keys are ignored, as the module does. Unset parameters take the
// Rules' values (note: the module's own defaults are max_fails=2,
// fail_timeout=10).
func upsyncInstance(service, name string, value []byte) (registry.Instance, error) {
	in := registry.Instance{Service: service, ID: name, Healthy: true}
	host, port, err := splitHostPort(name)
	if err != nil {
		return in, err
	}
	in.Address, in.Port = host, port
	if len(bytes.TrimSpace(value)) == 0 {
		return in, nil // nginx-upsync: an empty value is all defaults
	}
	f, err := jsonobj.Object(value)
	if err != nil {
		return in, err
	}
	get := func(key string) (json.RawMessage, error) { return jsonobj.FoldField(f, key) }
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
		v, err := get(c.key)
		if err != nil {
			return in, err
		}
		n, ok, err := upsyncInt(c.key, v)
		if err != nil {
			return in, err
		}
		if !ok {
			continue
		}
		if n < c.lo || n > c.hi {
			return in, fmt.Errorf("%s %d out of range %d-%d", c.key, n, c.lo, c.hi)
		}
		*c.dst = &n
	}
	v, err := get("fail_timeout")
	if err != nil {
		return in, err
	}
	if d, ok, err := failTimeout(v); err != nil {
		return in, err
	} else if ok {
		p.FailTimeout = &d
	}
	for _, c := range []struct {
		key string
		dst **bool
	}{{"backup", &p.Backup}, {"down", &p.Down}} {
		v, err := get(c.key)
		if err != nil {
			return in, err
		}
		b, ok, err := upsyncFlag(c.key, v)
		if err != nil {
			return in, err
		}
		if ok {
			*c.dst = &b
		}
	}
	return in, nil
}

// serviceInstance reads the service layout's JSON. Keys are matched
// exactly; unknown keys are ignored (an application may store more), but
// every known key must have its documented type.
func serviceInstance(service, id string, value []byte) (registry.Instance, error) {
	in := registry.Instance{Service: service, ID: id, Healthy: true}
	f, err := jsonobj.Object(value)
	if err != nil {
		return in, err
	}
	addr, ok, err := jsonobj.String(f, "address")
	if err != nil {
		return in, err
	}
	if !ok || addr == "" {
		return in, errors.New("no address")
	}
	in.Address = addr
	port, ok, err := jsonobj.Int(f, "port")
	if err != nil {
		return in, err
	}
	if !ok {
		return in, errors.New("no port")
	}
	in.Port = port
	if in.Tags, err = jsonobj.StringList(f, "tags"); err != nil {
		return in, err
	}
	if in.Meta, err = jsonobj.StringMap(f, "meta"); err != nil {
		return in, err
	}
	if healthy, ok, err := jsonobj.Bool(f, "healthy"); err != nil {
		return in, err
	} else if ok {
		in.Healthy = healthy
	}
	return in, nil
}

// splitHostPort splits "<ip>:<port>" or "[<ipv6>]:<port>". Only the shape
// and the port's digits are checked here; registry.Build validates the
// address and the port's range.
func splitHostPort(name string) (string, int, error) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("instance name %s is not <ip>:<port>", jsonobj.Clip(name))
	}
	host, digits := name[:i], name[i+1:]
	if !asciiDigits(digits, 5) {
		return "", 0, fmt.Errorf("instance name %s: port %s is not 1 to 5 ASCII digits", jsonobj.Clip(name), jsonobj.Clip(digits))
	}
	port, _ := strconv.Atoi(digits)
	if inner, ok := strings.CutPrefix(host, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		if !ok || !strings.Contains(inner, ":") {
			return "", 0, fmt.Errorf("instance name %s: brackets hold only an IPv6 address", jsonobj.Clip(name))
		}
		return inner, port, nil
	}
	if strings.ContainsAny(host, ":[]") {
		return "", 0, fmt.Errorf("instance name %s: an IPv6 address needs brackets, [addr]:port", jsonobj.Clip(name))
	}
	return host, port, nil
}

// asciiDigits reports whether s is 1 to max ASCII digits (not Unicode
// digits, not a sign, not spaces).
func asciiDigits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// upsyncInt reads a parameter as nginx-upsync does: a JSON number that is
// a whole number, or a string of ASCII decimal digits. null is unset.
func upsyncInt(key string, v json.RawMessage) (int, bool, error) {
	switch k := jsonobj.Kind(v); k {
	case "", "null":
		return 0, false, nil
	case "number":
		n, err := wholeNumber(v)
		if err != nil {
			return 0, false, fmt.Errorf("%s %s: %w", key, jsonobj.Clip(string(v)), err)
		}
		return n, true, nil
	case "string":
		s, err := jsonobj.DecodeString(v)
		if err != nil || !asciiDigits(s, 9) {
			return 0, false, fmt.Errorf("%s %s is not a whole number", key, jsonobj.Clip(string(v)))
		}
		n, _ := strconv.Atoi(s)
		return n, true, nil
	default:
		return 0, false, fmt.Errorf("%s is %s, want a number", key, jsonobj.Article(k))
	}
}

// wholeNumber accepts a JSON number that is exactly an integer in the
// 32-bit range: 3, 3.0 and 3e0 are 3; 2.5, 1e40 and -0.5 are refused.
func wholeNumber(v json.RawMessage) (int, error) {
	if n, err := strconv.ParseInt(string(v), 10, 32); err == nil {
		return int(n), nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f != float64(int32(f)) {
		return 0, errors.New("not a 32-bit whole number")
	}
	return int(f), nil
}

// failTimeout reads fail_timeout: whole seconds as a number or a digit
// string, or a string with one nginx time unit, "30s", "2m", "1h". The
// upper bound is checked before multiplying, so a huge count cannot wrap
// around into a plausible duration.
func failTimeout(v json.RawMessage) (time.Duration, bool, error) {
	const key = "fail_timeout"
	maxSec := int(upstream.MaxFailTimeout / time.Second)
	unit := time.Second
	if jsonobj.Kind(v) == "string" {
		s, err := jsonobj.DecodeString(v)
		if err != nil {
			return 0, false, fmt.Errorf("%s %s: %w", key, jsonobj.Clip(string(v)), err)
		}
		for suffix, u := range map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour} {
			if d, ok := strings.CutSuffix(s, suffix); ok {
				s, unit = d, u
				break
			}
		}
		if !asciiDigits(s, 9) {
			return 0, false, fmt.Errorf("%s %s: want whole seconds, or digits with one unit s, m or h", key, jsonobj.Clip(string(v)))
		}
		n, _ := strconv.Atoi(s)
		if n > maxSec/int(unit/time.Second) {
			return 0, false, fmt.Errorf("%s %s out of range 0-%ds", key, jsonobj.Clip(string(v)), maxSec)
		}
		return time.Duration(n) * unit, true, nil
	}
	n, ok, err := upsyncInt(key, v)
	if err != nil || !ok {
		return 0, ok, err
	}
	if n < 0 || n > maxSec {
		return 0, false, fmt.Errorf("%s %d out of range 0-%d seconds", key, n, maxSec)
	}
	return time.Duration(n) * time.Second, true, nil
}

// upsyncFlag reads down or backup: 0, 1, "0", "1", true or false.
func upsyncFlag(key string, v json.RawMessage) (bool, bool, error) {
	if jsonobj.Kind(v) == "boolean" {
		return string(v) == "true", true, nil
	}
	n, ok, err := upsyncInt(key, v)
	if err != nil && jsonobj.Kind(v) != "number" && jsonobj.Kind(v) != "string" {
		return false, false, fmt.Errorf("%s is %s, want 0, 1, true or false", key, jsonobj.Article(jsonobj.Kind(v)))
	}
	if err != nil || ok && n != 0 && n != 1 {
		return false, false, fmt.Errorf("%s %s: want 0, 1, true or false", key, jsonobj.Clip(string(v)))
	}
	return n == 1, ok, nil
}

func hasAll(tags, want []string) bool {
	for _, w := range want {
		if !slices.Contains(tags, w) {
			return false
		}
	}
	return true
}
