package zookeeper

import (
	"fmt"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/registry"
)

// Layout is how services and their instances are stored under the root:
// always <root>/<service>/<instance>, one znode per instance; the layout
// says what the instance znode's name and data mean (package layout reads
// and writes them).
type Layout string

const (
	// Curator is Apache Curator service discovery, which Spring Cloud
	// Zookeeper uses: the znode is named by the instance id and holds
	// Curator's ServiceInstance JSON.
	Curator = Layout(layout.Curator)
	// Plain names the znode "<ip>:<port>" ("[<ipv6>]:<port>"); its data is
	// empty or a JSON object of server parameters in nginx-upsync-module's
	// format: weight, max_fails, fail_timeout (seconds), max_conns, backup,
	// down.
	Plain = Layout(layout.Plain)
)

// ParseLayout checks a layout name from the configuration.
func ParseLayout(s string) (Layout, error) {
	l, err := layout.Parse(s, layout.Curator, layout.Plain)
	if err != nil {
		return "", fmt.Errorf("zookeeper: %w", err)
	}
	return Layout(l), nil
}

// Znode is one instance znode as read: its name and data, or Err when it
// exists but cannot be read (no read permission).
type Znode = layout.Entry

// Invalid is a znode left out of a snapshot, and why.
type Invalid = layout.Invalid

// Snapshot converts one complete read of the tree into the engine's
// snapshot (see layout.Layout.Snapshot). tree maps every service directory
// under root to its instance znodes.
func (l Layout) Snapshot(root string, tree map[string][]Znode, r registry.Rules) (engine.Snapshot, []Invalid) {
	return layout.Layout(l).Snapshot(layout.Tree{Root: root, Dirs: tree}, r)
}

// Join builds a znode path under root ("/" or "/a/b", no trailing slash).
func Join(root string, names ...string) string { return layout.Join(root, names...) }
