package wrapper

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

func TestEtcdEntryLayouts(t *testing.T) {
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080, Tags: []string{"gray=b"}, Meta: map[string]string{"weight": "3"}, Upstream: "web_b"}
	cases := []struct {
		name     string
		e        *Etcd
		key, val string
		err      string
	}{
		{name: "the service layout keys the instance by service and id",
			e: &Etcd{}, key: "/services/web/web-1", val: `{"address":"10.0.0.1","port":8080,"tags":["gray=b"],"meta":{"weight":"3"}}`},
		{name: "a prefix replaces /services, a trailing slash is dropped",
			e: &Etcd{Prefix: "/sd/"}, key: "/sd/web/web-1", val: `{"address":"10.0.0.1","port":8080,"tags":["gray=b"],"meta":{"weight":"3"}}`},
		{name: "the upsync layout keys the instance by upstream and address",
			e: &Etcd{Layout: "upsync"}, key: "/upstreams/web_b/10.0.0.1:8080", val: `{"weight":3,"down":0}`},
		{name: "an unknown layout is refused",
			e: &Etcd{Layout: "flat"}, err: `unknown layout "flat"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, val, err := c.e.Entry(o)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || key != c.key || val != c.val {
				t.Fatalf("Entry = %q, %q, %v; want %q, %q", key, val, err, c.key, c.val)
			}
		})
	}
	bad := o
	bad.Meta = map[string]string{"weight": "heavy"}
	if _, _, err := (&Etcd{Layout: "upsync"}).Entry(bad); err == nil {
		t.Error("upsync accepted weight=heavy")
	}
	noAddr := o
	noAddr.Address = ""
	if _, _, err := (&Etcd{}).Entry(noAddr); err == nil {
		t.Error("an entry without an address was accepted: etcd has no agent to fill it in")
	}
}

// leaseOf reads the key; it returns its lease, or 0 when the key is absent.
func leaseOf(t *testing.T, cli *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(r.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(r.Kvs[0].Lease)
}

// TestEtcdRegistersAgainAfterAnOutageLongerThanTheTTL: etcd hangs
// (SIGSTOP) for longer than the lease's TTL plus a failed attempt to
// register again (the outage that used to end the retry loop for good);
// as soon as it answers again the instance is back, under a new lease
// that is kept alive.
func TestEtcdRegistersAgainAfterAnOutageLongerThanTheTTL(t *testing.T) {
	e := testenv.StartEtcd(t)
	check := e.Client(t)
	logs := newLogRecorder()
	ttl := 2 * time.Second
	reg := &Etcd{Client: e.Client(t), TTL: ttl, Log: logs.logger()}
	o := Options{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 8080}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	key := "/services/web/web-1"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reg.Register(ctx, o); err != nil {
		t.Fatal(err)
	}
	first := leaseOf(t, check, key)
	if first == 0 {
		t.Fatalf("%s not registered", key)
	}

	e.Pause(t)
	paused := time.Now()
	logs.wait(t, "etcd: the lease was lost", 3*ttl)
	// Two attempts that time out while etcd hangs: the first one's
	// failure used to end the loop.
	if !logs.waitN("etcd: register again failed", 2, 30*time.Second) {
		e.Resume(t)
		t.Fatalf("the wrapper stopped trying to register again during the outage; log:\n%s", logs)
	}
	outage := time.Since(paused)
	e.Resume(t)
	resumed := time.Now()

	var lease clientv3.LeaseID
	for {
		if lease = leaseOf(t, check, key); lease != 0 && lease != first {
			break
		}
		if time.Since(resumed) > 15*time.Second {
			t.Fatalf("after an outage of %v (ttl %v) the instance was not registered again within 15s (key lease %x, first %x); log:\n%s",
				outage.Round(time.Millisecond), ttl, lease, first, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	back := time.Since(resumed)
	t.Logf("outage of %v (ttl %v): registered again %v after etcd answered", outage.Round(time.Millisecond), ttl, back.Round(time.Millisecond))
	if back > 3*time.Second {
		t.Errorf("registered again only %v after etcd answered; want within 3s", back)
	}

	// The new lease is kept alive: the key outlives three TTLs.
	reads, start := 0, time.Now()
	for time.Since(start) < 3*ttl {
		if got := leaseOf(t, check, key); got != lease {
			t.Fatalf("after %v the key's lease is %x, want %x (kept alive); log:\n%s", time.Since(start).Round(time.Millisecond), got, lease, logs)
		}
		reads++
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("key present under lease %x in all %d reads over %v", lease, reads, 3*ttl)

	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	if err := reg.Deregister(dctx, o.ID); err != nil {
		t.Fatal(err)
	}
	if got := leaseOf(t, check, key); got != 0 {
		t.Errorf("key still there after Deregister (lease %x)", got)
	}
}
