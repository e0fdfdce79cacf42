package etcd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/jsonobj"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// Layout is how services and their instances are stored under the prefix:
// always one key per instance, <prefix>/<service>/<name>; the layout says
// what the name and the value mean (package layout reads and writes them).
type Layout string

const (
	// Upsync is nginx-upsync-module's layout: the key is
	// <prefix>/<upstream>/<ip>:<port> ("[<ipv6>]:<port>") and the value is
	// empty or a JSON object of server parameters, read as the module reads
	// it (see layout.Upsync).
	Upsync = Layout(layout.Upsync)
	// Service is a service registry layout: the key is
	// <prefix>/<service>/<instance-id> and the value a JSON object
	// {"address":"10.0.0.1","port":8080,"tags":[…],"meta":{…},"healthy":true}.
	// Instances usually hold a lease, so that a dead one disappears.
	Service = Layout(layout.Service)
)

// ParseLayout checks a layout name from the configuration.
func ParseLayout(s string) (Layout, error) {
	l, err := layout.Parse(s, layout.Upsync, layout.Service)
	if err != nil {
		return "", fmt.Errorf("etcd: %w", err)
	}
	return Layout(l), nil
}

// DefaultPrefix is where the layout's registrations live by default:
// /upstreams for Upsync, /services for Service.
func (l Layout) DefaultPrefix() string { return layout.Layout(l).DefaultRoot() }

// KV is one key and its value as read from etcd.
type KV struct {
	Key   string
	Value []byte
}

// Invalid is a key left out of a snapshot, and why.
type Invalid = layout.Invalid

// Snapshot converts one complete read of the prefix into the engine's
// snapshot (see layout.Layout.Snapshot). dir is the prefix with its
// trailing slash ("/upstreams/"); every key in kvs starts with it.
//
// A service is seen when at least one key lies under <dir><service>/; a
// key of another shape is invalid and makes no service.
func (l Layout) Snapshot(dir string, kvs []KV, r registry.Rules) (engine.Snapshot, []Invalid) {
	t := layout.Tree{Root: dir, Dirs: map[string][]layout.Entry{}}
	for _, kv := range kvs {
		svc, name, err := splitKey(dir, kv.Key)
		if err != nil {
			t.Invalid = append(t.Invalid, Invalid{Path: kv.Key, Reason: err.Error()})
			continue
		}
		t.Dirs[svc] = append(t.Dirs[svc], layout.Entry{Name: name, Value: kv.Value})
	}
	return layout.Layout(l).Snapshot(t, r)
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
