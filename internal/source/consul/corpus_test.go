package consul

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// hostileFragments are what an attacker (or a broken registration script)
// puts into registry fields to break out of an nginx directive or a dyups
// body: statement and block delimiters, comments, quotes, line breaks,
// variables, escapes, look-alike digits.
var hostileFragments = []string{
	";", "{", "}", "#", `"`, "'", "\n", "\r\n", "$host", `\`, " ", "\t",
	";server 6.6.6.6:80", "}\nupstream evil {", "１", "\u202e", "%0a", "?", "/",
}

// TestSourceDropsAGeneratedHostileCorpus registers, through a real Consul,
// one instance per hostile fragment in each field that reaches nginx (the
// address, the service name, the canary tag that names an upstream, the
// weight meta), and checks that none of them is passed on: the snapshot
// holds exactly the one good server, each hostile instance is counted as
// dropped, and the rendered file and dyups bodies hold nothing of them.
func TestSourceDropsAGeneratedHostileCorpus(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	snaps := startSource(t, c, reg)
	c.Register(t, "web", "good", "127.0.0.1", 9001, nil, nil)

	type entry struct {
		service, addr string
		tags          []string
		meta          map[string]string
	}
	var corpus []entry
	for _, f := range hostileFragments {
		corpus = append(corpus,
			entry{"web", "127.0.0.1" + f, nil, nil},
			entry{"web", f + "127.0.0.1", nil, nil},
			entry{"we" + f + "b", "127.0.0.1", nil, nil},
			entry{"web", "127.0.0.1", []string{"gray=x" + f}, nil},
			entry{"web", "127.0.0.1", nil, map[string]string{"weight": "1" + f}},
		)
	}
	registered := 0
	for i, e := range corpus {
		id := fmt.Sprintf("hostile-%03d", i)
		// The agent refuses a few of these itself; what it accepts must be
		// dropped by us.
		err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: e.service, Address: e.addr, Port: 9100 + i, Tags: e.tags, Meta: e.meta})
		if err == nil {
			registered++
		}
	}
	if registered < len(corpus)/2 {
		t.Fatalf("Consul accepted only %d of %d hostile registrations; the corpus tests little", registered, len(corpus))
	}
	t.Logf("generated corpus: %d hostile registrations, %d accepted by Consul", len(corpus), registered)

	// The counter moves when a service is read, before the snapshot that
	// holds the read is sent: wait for the snapshot that lists every drop.
	s := waitFor(t, snaps, "every accepted hostile instance is dropped", func(s engine.Snapshot) bool {
		return len(s.Dropped) >= registered && hasServers("web", "127.0.0.1:9001")(s)
	})
	if n := metricValue(t, reg, "swallowkeeper_invalid_instances_dropped_total"); n < float64(registered) {
		t.Errorf("swallowkeeper_invalid_instances_dropped_total is %v, want at least %d", n, registered)
	}
	if len(s.Upstreams) != 1 {
		t.Fatalf("upstreams %v, want only web", s.Upstreams.Names())
	}
	file := string(upstream.RenderFile(s.Upstreams))
	body := s.Upstreams["web"].Body()
	for _, text := range []string{file, body} {
		for _, bad := range []string{"6.6.6.6", "evil", "$host", "\\", "'", `"`, "\r", "１", "\u202e", "%0a", "gray", "x;"} {
			if strings.Contains(text, bad) {
				t.Errorf("%q reached the rendered output:\n%s", bad, text)
			}
		}
	}
}
