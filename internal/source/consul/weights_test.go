package consul

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// register registers an instance with a TTL check that starts passing.
func register(t *testing.T, c *testenv.Consul, reg *api.AgentServiceRegistration) {
	t.Helper()
	reg.Check = &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}
	if err := c.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register %s: %v", reg.ID, err)
	}
}

func runWith(t *testing.T, c *testenv.Consul, opt Options) <-chan engine.Snapshot {
	t.Helper()
	opt.WaitTime, opt.RetryBase, opt.RetryCap = 30*time.Second, 50*time.Millisecond, 500*time.Millisecond
	return testenv.RunSource(t, New(testClient(t, c), rules, opt, testenv.Logger(), nil))
}

// weights returns the weights of upstream name's servers, by address.
func weights(s engine.Snapshot, name string) map[string]int {
	out := map[string]int{}
	for _, srv := range s.Upstreams[name].Servers {
		out[srv.Addr.String()] = srv.Weight
	}
	return out
}

// consul.weights native through a real Consul: Weights.Passing while
// passing, Weights.Warning while in warning, out while in warning with a
// warning weight of 0.
func TestSourceTakesNativeWeights(t *testing.T) {
	c := testenv.StartConsul(t)
	snaps := runWith(t, c, Options{NativeWeights: true})
	register(t, c, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001,
		Meta: map[string]string{"weight": "3"}, Weights: &api.AgentWeights{Passing: 5, Warning: 2}})
	register(t, c, &api.AgentServiceRegistration{ID: "web-2", Name: "web", Address: "127.0.0.1", Port: 9002,
		Weights: &api.AgentWeights{Passing: 4, Warning: 0}})
	register(t, c, &api.AgentServiceRegistration{ID: "web-3", Name: "web", Address: "127.0.0.1", Port: 9003}) // Consul's default weights, 1 and 1
	same := func(want map[string]int) func(engine.Snapshot) bool {
		return func(s engine.Snapshot) bool {
			got := weights(s, "web")
			if len(got) != len(want) {
				return false
			}
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}
	}
	testenv.WaitSnapshot(t, snaps, "passing weights, over the weight meta", same(map[string]int{"127.0.0.1:9001": 5, "127.0.0.1:9002": 4, "127.0.0.1:9003": 1}))
	c.SetHealth(t, "web-1", api.HealthWarning)
	c.SetHealth(t, "web-2", api.HealthWarning)
	testenv.WaitSnapshot(t, snaps, "web-1 serves at its warning weight, web-2 (warning weight 0) is out",
		same(map[string]int{"127.0.0.1:9001": 2, "127.0.0.1:9003": 1}))
	c.SetHealth(t, "web-2", api.HealthPassing)
	testenv.WaitSnapshot(t, snaps, "web-2 back at its passing weight", same(map[string]int{"127.0.0.1:9001": 2, "127.0.0.1:9002": 4, "127.0.0.1:9003": 1}))
}

// consul.address_from through a real Consul: the service's tagged address
// with its port; the node's (the agent tags its own address lan and wan)
// when the service has none; dropped with the reason when neither has it.
func TestSourceTakesTaggedAddresses(t *testing.T) {
	c := testenv.StartConsul(t)
	snaps := runWith(t, c, Options{AddressFrom: "wan"})
	register(t, c, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "10.1.0.1", Port: 80,
		TaggedAddresses: map[string]api.ServiceAddress{"wan": {Address: "127.0.0.7", Port: 8443}}})
	register(t, c, &api.AgentServiceRegistration{ID: "web-2", Name: "web", Address: "10.1.0.2", Port: 9002})
	testenv.WaitSnapshot(t, snaps, "web-1 at its wan address and port, web-2 at its node's wan address",
		testenv.HasServers("web", "127.0.0.1:9002", "127.0.0.7:8443"))

	v6 := runWith(t, c, Options{AddressFrom: "wan_ipv6"})
	s := testenv.WaitSnapshot(t, v6, "no instance has a wan_ipv6 address", func(s engine.Snapshot) bool {
		u, ok := s.Upstreams["web"]
		return ok && len(u.Servers) == 0 && len(s.Dropped) == 2
	})
	for _, d := range s.Dropped {
		if d.Reason != `no tagged address "wan_ipv6" on the service or its node (consul.address_from)` {
			t.Errorf("drop reason: %v", d)
		}
	}
}
