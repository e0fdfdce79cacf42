package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// catalogWriter registers and deregisters instances of "web" on one
// external node straight in the catalog, through one Consul server: each
// write is a raft commit, acknowledged or not, with no agent anti-entropy
// in between. A failed write is retried until Consul acknowledges it, as a
// registrator would; register and deregister are idempotent, so the set
// Consul holds in the end is exactly the set the writer meant.
type catalogWriter struct {
	client  *api.Client
	retries atomic.Int64 // failed write attempts
}

const appsNode = "apps"

func (w *catalogWriter) set(ctx context.Context, b *backend, present bool) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		o := (&api.WriteOptions{}).WithContext(wctx)
		var err error
		if present {
			_, err = w.client.Catalog().Register(&api.CatalogRegistration{
				Node: appsNode, Address: "127.0.0.1", SkipNodeUpdate: true,
				Service: &api.AgentService{ID: b.ID, Service: "web", Address: "127.0.0.1", Port: b.Port},
			}, o)
		} else {
			_, err = w.client.Catalog().Deregister(&api.CatalogDeregistration{Node: appsNode, ServiceID: b.ID}, o)
		}
		cancel()
		if err == nil {
			return nil
		}
		w.retries.Add(1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s present=%v: %w (last error: %v)", b.ID, present, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestLeaderKillLosesNoChange: a stream of registrations and
// deregistrations flows through a three-server Consul cluster; the leader
// is killed in the middle of it. After the re-election, nginx routes to
// exactly the set Consul acknowledged last: no change is lost.
func TestLeaderKillLosesNoChange(t *testing.T) {
	cl := testenv.StartConsulCluster(t, 3)
	leader := cl.WaitLeader(t, 30*time.Second)
	// The daemon follows one follower and the writer writes through the
	// other: neither is killed, and every change crosses the cluster.
	follow, via := (leader+1)%3, (leader+2)%3
	w := &catalogWriter{client: cl.Client(via)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var bs []*backend
	for i := range 6 {
		bs = append(bs, startBackend(t, fmt.Sprintf("web-%d", i+1)))
	}
	registered := map[string]bool{}
	for _, b := range bs[:4] {
		if err := w.set(ctx, b, true); err != nil {
			t.Fatal(err)
		}
		registered[b.ID] = true
	}
	file := filepath.Join(t.TempDir(), "upstreams.conf")
	ng := testenv.StartNginx(t, testenv.NginxOptions{PersistedFile: file})
	metrics := testenv.Addr(testenv.FreePort(t))
	cfg := writeConfig(t, daemonConfig{Consul: cl.HTTPAddr(follow), File: file, Target: ng.APIURL(), Metrics: metrics})
	d := startDaemon(t, cfg, metrics)
	want := func() []string {
		var ids []string
		for id, ok := range registered {
			if ok {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	wantAddrs := func() []string {
		var out []string
		for _, b := range bs {
			if registered[b.ID] {
				out = append(out, b.Addr())
			}
		}
		slices.Sort(out)
		return out
	}
	waitRoutes(t, ng, d, "web", 20*time.Second, want()...)

	// The stream: every ~200ms one instance joins or leaves, keeping 3 to
	// 6 registered (so no step is a drop the guards would hold).
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	step := func() {
		t.Helper()
		b := bs[rng.IntN(len(bs))]
		present := !registered[b.ID]
		if !present && len(want()) <= 3 {
			for _, o := range bs {
				if !registered[o.ID] {
					b, present = o, true
					break
				}
			}
		}
		if err := w.set(ctx, b, present); err != nil {
			t.Fatalf("write to Consul: %v", err)
		}
		registered[b.ID] = present
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	ops := 0
	for range 15 {
		<-tick.C
		step()
		ops++
	}

	before := d.scrape(t)
	killed := time.Now()
	cl.Kill(leader)
	reelected := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			if l := cl.Leader(); l >= 0 {
				reelected <- time.Since(killed)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var election time.Duration
	opsDuring, retriesBefore := 0, w.retries.Load()
	for election == 0 || time.Since(killed) < election+3*time.Second {
		select {
		case election = <-reelected:
		default:
		}
		if time.Since(killed) > 45*time.Second {
			t.Fatalf("no new leader 45s after the leader was killed; log of server %d:\n%s", follow, cl.LogTail(follow))
		}
		<-tick.C
		step()
		ops++
		if election == 0 {
			opsDuring++
		}
	}
	lastAck := time.Now()
	newLeader := cl.Leader()

	// Converged: nginx's memory and its traffic hold exactly the final
	// set, and so does Consul.
	_, ok := waitFor(ctx, 20*time.Second, func() bool {
		addrs, _, err := detailAddrs(ng, "web")
		return err == nil && slices.Equal(addrs, wantAddrs())
	})
	converge := time.Since(lastAck)
	if !ok {
		addrs, _, err := detailAddrs(ng, "web")
		t.Fatalf("nginx holds %v (%v), Consul acknowledged %v; daemon log:\n%s", addrs, err, wantAddrs(), d.log.String())
	}
	waitRoutes(t, ng, d, "web", 5*time.Second, want()...)
	entries, _, err := cl.Client(follow).Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var inConsul []string
	for _, e := range entries {
		inConsul = append(inConsul, e.Service.ID)
	}
	slices.Sort(inConsul)
	if !slices.Equal(inConsul, want()) {
		t.Errorf("Consul holds %v, the writer meant %v", inConsul, want())
	}
	figure(t, "leader %s killed mid-stream; new leader %s elected %v later; %d writes acknowledged (%d issued while there was no leader), %d write attempts failed and were retried",
		cl.Name(leader), cl.Name(newLeader), election.Round(time.Millisecond), ops, opsDuring, w.retries.Load()-retriesBefore)
	after := d.scrape(t)
	figure(t, "daemon during the election: %v Consul errors, %v answers doubted, %v source_doubt holds",
		after.sum("swallowkeeper_consul_errors_total")-before.sum("swallowkeeper_consul_errors_total"),
		after.sum("swallowkeeper_consul_doubted_answers_total")-before.sum("swallowkeeper_consul_doubted_answers_total"),
		after.sum("swallowkeeper_guard_holds_total", `guard="source_doubt"`)-before.sum("swallowkeeper_guard_holds_total", `guard="source_doubt"`))
	figure(t, "nginx held the final set %v %v after the last acknowledged write", want(), converge.Round(time.Millisecond))

	// The old leader comes back as a follower; the next change still
	// arrives.
	cl.Start(t, leader)
	var add *backend
	for _, b := range bs {
		if !registered[b.ID] {
			add = b
			break
		}
	}
	if add == nil {
		add = bs[0]
		if err := w.set(ctx, add, false); err != nil {
			t.Fatal(err)
		}
		registered[add.ID] = false
	} else {
		if err := w.set(ctx, add, true); err != nil {
			t.Fatal(err)
		}
		registered[add.ID] = true
	}
	took := waitRoutes(t, ng, d, "web", 15*time.Second, want()...)
	figure(t, "after %s rejoined, a change reached nginx traffic in %v", cl.Name(leader), took.Round(time.Millisecond))
	if !d.running() {
		t.Fatalf("daemon exited; log:\n%s", d.log.String())
	}
}
