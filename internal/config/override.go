package config

import (
	"slices"
	"strings"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/registry"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// applyTo puts the override's balancing method and server defaults into
// the rules for upstream name. Validate has checked them.
func (o Override) applyTo(r *registry.Rules, name string) {
	if b, err := upstream.ParseBalance(o.Balance); err == nil && b != (upstream.Balance{}) {
		if r.BalanceFor == nil {
			r.BalanceFor = map[string]upstream.Balance{}
		}
		r.BalanceFor[name] = b
	}
	if o.Weight == nil && o.MaxFails == nil && o.FailTimeout == nil && o.MaxConns == nil {
		return
	}
	d := registry.Params{Weight: o.Weight, MaxFails: o.MaxFails, MaxConns: o.MaxConns}
	if o.FailTimeout != nil {
		ft := time.Duration(*o.FailTimeout)
		d.FailTimeout = &ft
	}
	if r.DefaultsFor == nil {
		r.DefaultsFor = map[string]registry.Params{}
	}
	r.DefaultsFor[name] = d
}

// validate checks the override's method and server defaults against the
// limits the upstream model enforces.
func (o Override) validate(field string, bad badFunc, checkRange func(string, int, int, int)) {
	if _, err := upstream.ParseBalance(o.Balance); err != nil {
		bad(field+".balance", "%v", err)
	}
	if o.Weight != nil {
		checkRange(field+".weight", *o.Weight, 1, upstream.MaxWeight)
	}
	if o.MaxFails != nil {
		checkRange(field+".max_fails", *o.MaxFails, 0, upstream.MaxMaxFails)
	}
	if o.MaxConns != nil {
		checkRange(field+".max_conns", *o.MaxConns, 0, upstream.MaxMaxConns)
	}
	if o.FailTimeout != nil {
		if ft := time.Duration(*o.FailTimeout); ft < 0 || ft > upstream.MaxFailTimeout || ft%time.Second != 0 {
			bad(field+".fail_timeout", "%v: want whole seconds from 0s to 24h", ft)
		}
	}
}

// LuaPlaneNotes lists what this configuration asks of nginx that the Lua
// module (nginx/lua) stores and shows in /detail but does not enforce, so
// that check says so instead of accepting it silently. Real dyups applies
// all of it. Empty when the Lua module enforces everything configured.
func (c *Config) LuaPlaneNotes() []string {
	var notes []string
	u := c.Upstreams
	if u.MaxConns > 0 {
		notes = append(notes, "upstreams.max_conns: not enforced by the Lua module (stored and shown in /detail only); real dyups enforces it per worker")
	}
	leastConn := false
	for _, name := range sortedKeys(u.Overrides) {
		o := u.Overrides[name]
		field := "upstreams.overrides." + name
		if o.MaxConns != nil && *o.MaxConns > 0 {
			notes = append(notes, field+".max_conns: not enforced by the Lua module (stored and shown in /detail only); real dyups enforces it per worker")
		}
		if o.Keepalive != nil && *o.Keepalive > 0 {
			notes = append(notes, field+".keepalive: not applied per upstream by the Lua module (the placeholder upstream's keepalive pools every connection)")
		}
		if b, err := upstream.ParseBalance(o.Balance); err == nil && b.Method == upstream.LeastConn {
			leastConn = true
		}
	}
	if leastConn {
		notes = append(notes, "least_conn: the Lua module counts a request's connection until its log phase: wire log_by_lua_block { require(\"swallowkeeper.dyups\").log() } where it proxies, or least_conn degrades to round robin")
	}
	return notes
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, strings.Compare)
	return keys
}
