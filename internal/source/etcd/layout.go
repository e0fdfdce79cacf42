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

// KV is one key and its value as read from etcd.
type KV struct {
	Key   string
	Value []byte
}

// Invalid is a key left out of a snapshot, and why.
type Invalid = layout.Invalid

// Snapshot converts one complete read of the prefix, whose keys and values
// are in layout l, into the engine's snapshot (see layout.Layout.Snapshot).
// dir is the prefix with its trailing slash ("/upstreams/"); every key in
// kvs starts with it.
//
// A service is seen when at least one key lies under <dir><service>/; a
// key of another shape is invalid and makes no service.
func Snapshot(l layout.Layout, dir string, kvs []KV, r registry.Rules) (engine.Snapshot, []Invalid) {
	t := layout.Tree{Root: dir, Dirs: map[string][]layout.Entry{}}
	for _, kv := range kvs {
		svc, name, err := splitKey(dir, kv.Key)
		if err != nil {
			t.Invalid = append(t.Invalid, Invalid{Path: kv.Key, Reason: err.Error()})
			continue
		}
		t.Dirs[svc] = append(t.Dirs[svc], layout.Entry{Name: name, Value: kv.Value})
	}
	return l.Snapshot(t, r)
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
