package config

import (
	"fmt"
	"maps"
	"slices"

	"github.com/swallowkeeper/swallowkeeper/internal/split"
)

// SplitNotes says, for `swallowkeeper check`, which traffic splits are
// configured and where they apply: on Lua-module targets only; a real
// dyups target, or reload mode, has no split API.
func (c *Config) SplitNotes() []string {
	u := c.Upstreams
	if len(u.Splits) == 0 && u.SplitsConsulPrefix == "" {
		return nil
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(u.Splits)) {
		out = append(out, fmt.Sprintf("split %s: %s", name, split.Describe(u.Splits[name])))
	}
	if u.SplitsConsulPrefix != "" {
		out = append(out, fmt.Sprintf("split rules are also read from Consul KV %s/<upstream> (they replace a configured rule of the same upstream)", u.SplitsConsulPrefix))
	}
	if len(c.Targets) == 0 {
		return append(out, "splits are NOT applied in reload mode (no dyups API): split with the split_clients recipe of nginx/conf/dyups-split.conf")
	}
	return append(out, "splits are pushed, without reload, to targets running the Lua module with location /split (nginx/conf/lua.conf); "+
		"a real dyups target has no split API: nothing is pushed there (status says so per target); "+
		"split it with the split_clients recipe of nginx/conf/dyups-split.conf, whose shares change only by editing it and reloading nginx")
}
