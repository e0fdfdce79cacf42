package registry

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

func TestBuildRefusesAddressesThatAimAtTheHost(t *testing.T) {
	// The attack of issue 14: an instance registered on loopback (the
	// upstream API of nginx itself, a Consul agent), on cloud metadata or
	// on a non-host address must never reach a rendered upstream.
	hostile := []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", "224.0.0.1", "ff02::1", "255.255.255.255", "0.0.0.0", "::"}
	var in []Instance
	for i, a := range hostile {
		in = append(in, Instance{ID: "evil-" + strings.Repeat("x", i+1), Address: a, Port: 8081, Healthy: true})
	}
	in = append(in, Instance{ID: "good", Address: "10.0.0.1", Port: 80, Healthy: true})
	st, dropped := Build(map[string][]Instance{"web": in}, rules)
	if got := render(st); got != "upstream web {\n    server 10.0.0.1:80 weight=1 max_fails=3 fail_timeout=10s;\n}\n" {
		t.Fatalf("rendered:\n%s", got)
	}
	if len(dropped) != len(hostile) {
		t.Fatalf("%d dropped, want %d: %v", len(dropped), len(hostile), dropped)
	}
	for _, d := range dropped {
		if !strings.Contains(d.Reason, "refused by default; upstreams.allow_addresses can allow it") && !strings.Contains(d.Reason, "unspecified") {
			t.Errorf("reason does not say how to allow it: %v", d)
		}
	}
}

func TestBuildAllowsLoopbackWhenTheOperatorOptsIn(t *testing.T) {
	r := rules
	r.Addresses = upstream.AddressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	st, dropped := Build(map[string][]Instance{"web": {
		{ID: "a", Address: "127.0.0.1", Port: 8080, Healthy: true},
		{ID: "b", Address: "::1", Port: 8080, Healthy: true},
	}}, r)
	if got := render(st); got != "upstream web {\n    server 127.0.0.1:8080 weight=1 max_fails=3 fail_timeout=10s;\n}\n" {
		t.Fatalf("rendered:\n%s", got)
	}
	if len(dropped) != 1 || !strings.Contains(dropped[0].Reason, "address ::1 is loopback") {
		t.Fatalf("dropped: %v", dropped)
	}
}

func TestBuildNeverCreatesReservedNames(t *testing.T) {
	r := rules
	r.Reserved = []string{"swallowkeeper_backend", "Static"}
	st, dropped := Build(map[string][]Instance{
		"static":                {{ID: "s1", Address: "10.0.0.1", Port: 80, Healthy: true}},
		"web":                   {{ID: "w1", Address: "10.0.0.2", Port: 80, Healthy: true, Tags: []string{"gray=x"}}},
		"swallowkeeper_backend": {{ID: "b1", Address: "10.0.0.3", Port: 80, Healthy: true}},
	}, r)
	if len(st) != 1 || len(st["web_x"].Servers) != 1 {
		t.Fatalf("state: %v", st.Names())
	}
	if len(dropped) != 2 {
		t.Fatalf("dropped: %v", dropped)
	}
	for _, d := range dropped {
		if !strings.Contains(d.Reason, "is reserved (upstreams.reserved") {
			t.Errorf("reason: %v", d)
		}
	}
}

func TestBuildKeepsAServiceKnownWhenAllItsInstancesAreInvalid(t *testing.T) {
	// Agents switching to hostnames, or a weight meta of 0: the upstream
	// must stay known (with no servers), so that the engine keeps its
	// last servers under the empty guard instead of removing it.
	st, dropped := Build(map[string][]Instance{"web": {
		{ID: "a", Address: "web-1.example.com", Port: 80, Healthy: true},
		{ID: "b", Address: "10.0.0.2", Port: 80, Healthy: true, Meta: map[string]string{"weight": "0"}},
	}}, rules)
	u, ok := st["web"]
	if !ok || len(u.Servers) != 0 || u.Service != "web" {
		t.Fatalf("web = %+v (known %v), want known with no servers", u, ok)
	}
	if len(dropped) != 2 {
		t.Fatalf("dropped: %v", dropped)
	}
	// A name that is itself invalid makes no upstream at all.
	st, _ = Build(map[string][]Instance{"web": {{ID: "a", Address: "10.0.0.1", Port: 80, Healthy: true, Tags: []string{"gray=a b"}}}}, rules)
	if len(st) != 0 {
		t.Fatalf("state with an invalid canary name: %v", st.Names())
	}
}
