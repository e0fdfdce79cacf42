package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/loopback"
)

// splitPrefix is the Consul KV prefix the split demo's daemon watches.
const splitPrefix = "swallowkeeper/splits"

// runSplit is the -split story: web-1 serves web, web-3 is registered
// with tag gray=canary (upstream web_canary), and a deploy tool moves the
// share 10% → 50% → 100% by writing Consul KV, under steady traffic and
// without touching nginx.
func (d *demo) runSplit(ctx context.Context) error {
	d.say("Registering web-1 (upstream web) and web-3 tagged gray=canary (upstream web_canary)")
	d.register(d.backends[0])
	if err := d.registerCanary(d.backends[2]); err != nil {
		return err
	}
	if err := d.waitRouting(ctx, "web-1"); err != nil {
		return err
	}
	d.load = startLoad(ctx, fmt.Sprintf("http://127.0.0.1:%d/", d.ports["nginx_proxy"]), "web", d.opt.Rate)
	d.watch(ctx, 2*time.Second, "no split rule yet: everything to web, per backend")

	for _, p := range []string{"10", "50", "100"} {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rule := `{"to":"web_canary","percent":` + p + `}`
		d.say("Deploy tool: consul kv put %s/web '%s'", splitPrefix, rule)
		start := time.Now()
		if _, err := d.consul.KV().Put(&api.KVPair{Key: splitPrefix + "/web", Value: []byte(rule)}, nil); err != nil {
			return err
		}
		if err := poll(ctx, 30*time.Second, "nginx holding the "+p+"% split", func() bool {
			return strings.Contains(d.nginxSplit("web"), "percent "+p+"\n")
		}); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "    nginx splits %s%% to web_canary %v after the KV write (no reload; every worker on its next request)\n",
			p, time.Since(start).Round(time.Millisecond))
		d.watch(ctx, 3*time.Second, "traffic through nginx, per backend (web-1: web, web-3: web_canary)")
	}
	fmt.Fprintf(d.out, "    %s status -addr 127.0.0.1:%d lists the splits and where they are pushed\n", d.opt.Daemon, d.ports["metrics"])
	return d.finish(ctx)
}

// registerCanary registers b in service web with tag gray=canary.
func (d *demo) registerCanary(b *loopback.Backend) error {
	return d.consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: b.ID, Name: "web", Address: loopback.Host, Port: b.Port, Tags: []string{"gray=canary"},
		Check: &api.AgentServiceCheck{HTTP: "http://" + b.Addr() + "/health", Interval: "1s", Timeout: "500ms"},
	})
}

// nginxSplit is nginx's split rule of upstream name, "" when none.
func (d *demo) nginxSplit(name string) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/split/%s", d.ports["nginx_api"], name))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// splitSection is the daemon's upstreams.splits_consul_prefix line in the
// split story.
func (d *demo) splitSection() string {
	if !d.opt.Split {
		return ""
	}
	return "  splits_consul_prefix: " + splitPrefix + "\n"
}
