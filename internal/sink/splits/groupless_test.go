package splits

import (
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/split"
)

// TestGrouplessLayoutsKnowGroupsByName: where the registry has services
// (Consul services, the etcd service and Curator layouts), a group must be
// built from the split upstream's own service; in layouts made of
// upstreams alone (Consul KV, upsync, plain) every upstream is built from
// itself, so web_green is web's group by its name, and a name that is not
// web_<group> or is reserved stays refused.
func TestGrouplessLayoutsKnowGroupsByName(t *testing.T) {
	state := stateOf("web", "web", "web_green", "web_green", "admin", "admin", "swallowkeeper_backend", "swallowkeeper_backend")
	cases := []struct {
		groupless bool
		to        string
		refused   string // "" when pushable
	}{
		{false, "web_green", `built from service "web_green", not web's service "web"`},
		{true, "web_green", ""},
		{true, "admin", "not a group of web"},
		{true, "web_blue", "no upstream web_blue"},
		{true, "swallowkeeper_backend", "reserved"},
	}
	for _, c := range cases {
		s := New(nil, nil, Options{Groupless: c.groupless, Reserved: []string{"swallowkeeper_backend"}}, quiet())
		s.learn(state, nil)
		s.mu.Lock()
		got := s.refusal("web", split.Rule{To: c.to, Percent: 10})
		s.mu.Unlock()
		switch {
		case c.refused == "" && got != pushable:
			t.Errorf("groupless=%v web → %s refused: %q, want pushable", c.groupless, c.to, got)
		case c.refused != "" && !strings.Contains(got, c.refused):
			t.Errorf("groupless=%v web → %s: %q, want a refusal saying %q", c.groupless, c.to, got, c.refused)
		}
	}
}
