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

// learn skips a state with the names and services it took last, and
// only that: the same names with a group now built from another service
// change the verdict.
func TestLearnSkipsOnlyTheSameState(t *testing.T) {
	s := New(nil, nil, Options{}, quiet())
	verdict := func() string {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.refusal("web", split.Rule{To: "web_green", Percent: 10})
	}
	s.learn(stateOf("web", "web", "web_green", "web"), nil)
	if v := verdict(); v != pushable {
		t.Fatalf("web_green built from web: %q, want pushable", v)
	}
	calls := 0
	same := stateOf("web", "web", "web_green", "web")
	s.learn(same, func() { calls++ })
	if v := verdict(); v != pushable || calls != 1 {
		t.Fatalf("the same state again: %q, also ran %d times, want pushable and 1", v, calls)
	}
	// Skipped, not redone: the maps learn builds are not built again.
	if n := testing.AllocsPerRun(20, func() { s.learn(same, nil) }); n != 0 {
		t.Fatalf("learning the same state again allocated %v times, want 0", n)
	}
	s.learn(stateOf("web", "web", "web_green", "web_green"), nil)
	if v := verdict(); !strings.Contains(v, `built from service "web_green"`) {
		t.Fatalf("web_green now built from its own service: %q, want refused", v)
	}
	s.learn(stateOf("web", "web"), nil)
	if v := verdict(); !strings.Contains(v, "no upstream web_green") {
		t.Fatalf("web_green gone: %q, want refused", v)
	}
}
