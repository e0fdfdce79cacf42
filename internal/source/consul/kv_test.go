package consul

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swallowkeeper/swallowkeeper/internal/engine"
	"github.com/swallowkeeper/swallowkeeper/internal/layout"
	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// newKVSource is a KV source on c under "upstreams", logging to logs
// (nil: nowhere unless -v).
func newKVSource(t *testing.T, c *testenv.Consul, reg prometheus.Registerer, logs *testenv.LogBuffer) *KVSource {
	t.Helper()
	log := testenv.Logger()
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	r := rules
	r.Reserved = []string{"swallowkeeper_backend"}
	return NewKV(testClient(t, c), r, KVOptions{Prefix: "/upstreams/", WaitTime: 30 * time.Second,
		RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond}, log, reg)
}

func kvPut(t *testing.T, c *testenv.Consul, key, value string) {
	t.Helper()
	if _, err := c.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func kvDelete(t *testing.T, c *testenv.Consul, key string) {
	t.Helper()
	if _, err := c.Client.KV().Delete(key, nil); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// upsync's own layout in Consul KV: keys put and deleted show in the
// snapshots with the parameters of their JSON, read as the module reads
// them (keys in any case, numbers as strings, fail_timeout with a unit).
func TestKVSourceFollowsUpsyncKeys(t *testing.T) {
	c := testenv.StartConsul(t)
	kvPut(t, c, "upstreams/web/127.0.0.1:9001", `{"weight":2,"max_fails":5,"fail_timeout":30,"down":0}`)
	kvPut(t, c, "upstreams/web/127.0.0.1:9002", "")
	kvPut(t, c, "upstreams/api/", "")                // a folder made in the UI: known, no servers yet
	kvPut(t, c, "upstreams2/web/127.0.0.1:9999", "") // beside the prefix: not ours
	kvPut(t, c, "other/web/127.0.0.1:9998", "")
	snaps := testenv.RunSource(t, newKVSource(t, c, nil, nil))

	s := testenv.WaitSnapshot(t, snaps, "web has both servers", testenv.HasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	testenv.CheckUpstreams(t, s, map[string][]string{"web": {"127.0.0.1:9001", "127.0.0.1:9002"}, "api": nil}, 2)
	got := s.Upstreams["web"].Servers[0]
	if got.Weight != 2 || got.MaxFails != 5 || got.FailTimeout != 30*time.Second || got.Down {
		t.Errorf("9001 parameters: %+v, want weight 2, max_fails 5, fail_timeout 30s, up", got)
	}
	if def := s.Upstreams["web"].Servers[1]; def.Weight != 1 || def.MaxFails != 3 || def.FailTimeout != 10*time.Second {
		t.Errorf("9002 (empty value) parameters: %+v, want the rules' defaults", def)
	}

	kvPut(t, c, "upstreams/api/127.0.0.1:9003", `{"WEIGHT":"4","Fail_Timeout":"2m","backup":1}`)
	kvPut(t, c, "upstreams/api/127.0.0.1:9004", `{"down":1}`)
	s = testenv.WaitSnapshot(t, snaps, "api gets its servers", testenv.HasServers("api", "127.0.0.1:9003", "127.0.0.1:9004"))
	if a := s.Upstreams["api"].Servers; a[0].Weight != 4 || a[0].FailTimeout != 2*time.Minute || !a[0].Backup || !a[1].Down {
		t.Errorf("api parameters: %+v, want weight 4, fail_timeout 2m, backup; then down", a)
	}

	kvDelete(t, c, "upstreams/web/127.0.0.1:9001")
	testenv.WaitSnapshot(t, snaps, "deleting a key removes its server", testenv.HasServers("web", "127.0.0.1:9002"))
	kvPut(t, c, "upstreams/web/127.0.0.1:9002", `{"weight":7}`)
	testenv.WaitSnapshot(t, snaps, "a changed value changes the server", func(s engine.Snapshot) bool {
		srv := s.Upstreams["web"].Servers
		return len(srv) == 1 && srv[0].Weight == 7
	})
}

// Bad JSON, bad values, bad addresses, bad names and reserved names are
// dropped, each logged once and counted, while the good keys flow; none
// reaches the snapshot's upstreams.
func TestKVSourceDropsBadKeys(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	var logs testenv.LogBuffer
	bad := map[string]string{
		"upstreams/web/127.0.0.1:9002":                   `{"weight":`,
		"upstreams/web/127.0.0.1:9003":                   `{"weight":0}`,
		"upstreams/web/127.0.0.1:9004":                   `{"weight":"1 backup"}`,
		"upstreams/web/127.0.0.1:9005":                   `{"down":2}`,
		"upstreams/web/127.0.0.1:9006":                   `{"fail_timeout":"10d"}`,
		"upstreams/web/127.0.0.1;server 6.6.6.6:80":      "",
		"upstreams/web/evil.example.com:80":              "",
		"upstreams/web/127.0.0.1:99999":                  "",
		"upstreams/web/10.0.0.1":                         "",
		"upstreams/web/sub/127.0.0.1:9007":               "",
		"upstreams/we;b/127.0.0.1:9008":                  "",
		"upstreams/swallowkeeper_backend/127.0.0.1:9009": "",
		"upstreams/stray":                                "",
	}
	for k, v := range bad {
		kvPut(t, c, k, v)
	}
	kvPut(t, c, "upstreams/web/127.0.0.1:9001", `{"weight":3}`)
	snaps := testenv.RunSource(t, newKVSource(t, c, reg, &logs))
	s := testenv.WaitSnapshot(t, snaps, "every bad key is dropped, the good one kept", func(s engine.Snapshot) bool {
		return len(s.Dropped) == len(bad) && testenv.HasServers("web", "127.0.0.1:9001")(s)
	})
	if len(s.Upstreams) != 1 {
		t.Errorf("upstreams %v, want web alone", s.Upstreams.Names())
	}
	for _, d := range s.Dropped {
		if _, ok := bad[d.Instance]; !ok {
			t.Errorf("dropped %v: not one of the bad keys", d)
		}
	}
	if got := testenv.Metric(t, reg, "swallowkeeper_invalid_instances_dropped_total"); got != float64(len(bad)) {
		t.Errorf("dropped counter = %v, want %d", got, len(bad))
	}
	if n := strings.Count(logs.String(), `msg="invalid key dropped"`); n != len(bad) {
		t.Errorf("%d log lines for dropped keys, want %d:\n%s", n, len(bad), logs.String())
	}
	// A change elsewhere logs and counts the still-bad keys no more.
	kvPut(t, c, "upstreams/web/127.0.0.1:9010", "")
	testenv.WaitSnapshot(t, snaps, "the new server arrives", testenv.HasServers("web", "127.0.0.1:9001", "127.0.0.1:9010"))
	if got := testenv.Metric(t, reg, "swallowkeeper_invalid_instances_dropped_total"); got != float64(len(bad)) {
		t.Errorf("dropped counter = %v after an unrelated change, want still %d", got, len(bad))
	}
}

// The default address policy applies to KV keys as to every source.
func TestKVSourceRefusesHostAddressesByDefault(t *testing.T) {
	c := testenv.StartConsul(t)
	for _, k := range testenv.RefusedAddresses {
		kvPut(t, c, "upstreams/web/"+k, "")
	}
	kvPut(t, c, "upstreams/web/10.1.2.3:8080", "")
	src := newKVSource(t, c, nil, nil)
	src.rules.Addresses = upstream.AddressPolicy{}
	s := testenv.WaitSnapshot(t, testenv.RunSource(t, src), "only the good server is in web", testenv.HasServers("web", "10.1.2.3:8080"))
	testenv.CheckRefusedByDefault(t, s)
}

// A Consul outage sends nothing (the engine keeps the last state), logs
// and sets registry_up{source="consul"} to 0; the return logs and sets it
// to 1, and changes flow again.
func TestKVSourceOutageKeepsTheLastState(t *testing.T) {
	c := testenv.StartConsul(t)
	reg := prometheus.NewRegistry()
	var logs testenv.LogBuffer
	src := newKVSource(t, c, reg, &logs)
	kvPut(t, c, "upstreams/web/127.0.0.1:9001", "")
	var snaps <-chan engine.Snapshot
	testenv.CheckOutageReported(t, reg, testenv.Outage{Source: "consul", Logs: &logs,
		Stop: func(tb testing.TB) {
			c.Stop(tb)
			// While Consul is down the source sends nothing: no empty
			// state, no partial one.
			testenv.NoSnapshot(t, snaps, 2*time.Second, "Consul is down")
		},
		Start: c.Start,
		Lost:  `level=WARN msg="watch failed`, Back: `level=INFO msg="watch recovered`}, func() {
		snaps = testenv.RunSource(t, src)
		testenv.WaitSnapshot(t, snaps, "web is found", testenv.HasServers("web", "127.0.0.1:9001"))
	})
	kvPut(t, c, "upstreams/web/127.0.0.1:9002", "")
	testenv.WaitSnapshot(t, snaps, "changes flow after the outage", testenv.HasServers("web", "127.0.0.1:9001", "127.0.0.1:9002"))
	if h := src.Health(); !h.Up {
		t.Errorf("health after recovery: %+v", h)
	}
}

// Emptying the prefix after it held upstreams sends a snapshot of no
// services, which the engine's guard holds as for every source: nginx
// keeps the last state.
func TestKVSourceEmptiedPrefixIsHeld(t *testing.T) {
	c := testenv.StartConsul(t)
	kvPut(t, c, "upstreams/web/127.0.0.1:9001", "")
	kvPut(t, c, "upstreams/api/127.0.0.1:9002", "")
	snaps := testenv.RunSource(t, newKVSource(t, c, nil, nil))
	first := testenv.WaitSnapshot(t, snaps, "both upstreams", func(s engine.Snapshot) bool { return len(s.Upstreams) == 2 })
	if _, err := c.Client.KV().DeleteTree("upstreams/", nil); err != nil {
		t.Fatal(err)
	}
	empty := testenv.WaitSnapshot(t, snaps, "the prefix is empty", func(s engine.Snapshot) bool { return s.Services == 0 })
	if len(empty.Upstreams) != 0 {
		t.Fatalf("empty prefix gave upstreams %v", empty.Upstreams.Names())
	}
	next, holds, _ := engine.Plan(first.Upstreams, []engine.Snapshot{empty}, engine.Guards{MaxDrop: 0.5, MaxTotalDrop: 0.5, ConfirmAfter: time.Minute}, engine.Drops{}, time.Now())
	if !next.Equal(first.Upstreams) || len(holds) != 1 || holds[0].Guard != engine.GuardNoServices {
		t.Fatalf("plan of the emptied prefix: %v, holds %v; want the last state kept by the %s guard", next.Names(), holds, engine.GuardNoServices)
	}
}

// The shape of keys under the prefix, before the layout reads names and
// values.
func TestKVTree(t *testing.T) {
	pairs := api.KVPairs{
		{Key: "upstreams/"},
		{Key: "upstreams/web/"},
		{Key: "upstreams/web/10.0.0.1:80", Value: []byte(`{"weight":2}`)},
		{Key: "upstreams/api/"},
		{Key: "upstreams/cache/[2001:db8::1]:80"},
		{Key: "upstreams/stray"},
		{Key: "upstreams//10.0.0.1:80"},
		{Key: "upstreams/web/a/10.0.0.2:80"},
		{Key: "elsewhere/web/10.0.0.3:80"},
		nil,
	}
	got := KVTree("upstreams", pairs)
	want := layout.Tree{
		Root: "upstreams",
		Dirs: map[string][]layout.Entry{
			"web":   {{Name: "10.0.0.1:80", Value: []byte(`{"weight":2}`)}},
			"api":   nil,
			"cache": {{Name: "[2001:db8::1]:80"}},
		},
		Invalid: []layout.Invalid{
			{Path: "upstreams/stray", Reason: "key is not <prefix>/<upstream>/<ip>:<port>"},
			{Path: "upstreams//10.0.0.1:80", Reason: "empty upstream name in key"},
			{Path: "upstreams/web/a/10.0.0.2:80", Reason: "key nests deeper than <prefix>/<upstream>/<ip>:<port>"},
			{Path: "elsewhere/web/10.0.0.3:80", Reason: "key outside the prefix upstreams/"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tree:\n%+v\nwant:\n%+v", got, want)
	}
}

func TestCheckKVPrefix(t *testing.T) {
	for _, p := range []string{"upstreams", "/upstreams/", "a/b", "nginx/upstreams"} {
		if err := CheckKVPrefix(p); err != nil {
			t.Errorf("%q refused: %v", p, err)
		}
	}
	for p, want := range map[string]string{
		"":      "empty",
		"/":     "empty",
		"a//b":  `empty, "." or ".."`,
		"a/../": `empty, "." or ".."`,
		"a\nb":  "control",
		"\xff":  "UTF-8",
	} {
		if err := CheckKVPrefix(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error holding %q", p, err, want)
		}
	}
}

func TestKVSourceMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewKV(nil, rules, KVOptions{Prefix: "upstreams"}, testenv.Logger(), reg)
	testenv.CheckMetricNames(t, reg, "swallowkeeper_", 4) // doubted answers has no series before the first
	if v := testenv.Metric(t, reg, "swallowkeeper_registry_up", "source", "consul"); v != 0 {
		t.Errorf("registry_up = %v before Run, want 0", v)
	}
}

// A SIGHUP switching consul.mode replaces the source's collectors in one
// registry (each new one in place of the one of the same name): the
// families both modes export must agree in help and labels, or the
// switch fails.
func TestKVMetricsCanReplaceTheServicesModeOnes(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(nil, rules, Options{}, testenv.Logger(), reg)
	NewKV(nil, rules, KVOptions{Prefix: "upstreams"}, testenv.Logger(), replacing{t, reg})
}

// replacing registers each collector in reg in place of one that
// describes the same metric.
type replacing struct {
	t   *testing.T
	reg *prometheus.Registry
}

func (r replacing) Register(c prometheus.Collector) error {
	err := r.reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		r.reg.Unregister(are.ExistingCollector)
		err = r.reg.Register(c)
	}
	if err != nil {
		r.t.Errorf("register: %v", err)
	}
	return err
}

func (r replacing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}

func (r replacing) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// A token that cannot read every key under the prefix gets an answer
// filtered by ACLs, in which the other upstreams would seem gone: it is
// sent with its Doubt (the engine changes nothing), unless
// allow_acl_filtered says the scope is on purpose.
func TestKVSourceDoubtsAnswersFilteredByACLs(t *testing.T) {
	const root = "f0e1d2c3-0000-4000-8000-00000000beef"
	c := testenv.StartConsulACL(t, root)
	kvPut(t, c, "upstreams/web/127.0.0.1:9001", "")
	kvPut(t, c, "upstreams/api/127.0.0.1:9002", "")
	pol, _, err := c.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-keys", Rules: `key_prefix "upstreams/web/" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Client.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := func(token string, allow bool) <-chan engine.Snapshot {
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Token = c.HTTPAddr(), token
		client, err := NewClient(cfg, WatchCatalog)
		if err != nil {
			t.Fatal(err)
		}
		return testenv.RunSource(t, NewKV(client, rules, KVOptions{Prefix: "upstreams", WaitTime: 30 * time.Second, AllowACLFiltered: allow,
			RetryBase: 50 * time.Millisecond, RetryCap: 500 * time.Millisecond}, testenv.Logger(), nil))
	}
	s := testenv.NextSnapshot(t, run(tok.SecretID, false), "the scoped token's answer")
	if _, sawAPI := s.Upstreams["api"]; !strings.Contains(s.Doubt, "filtered by ACLs") || sawAPI {
		t.Fatalf("scoped token: doubt %q, upstreams %v; want the answer doubted, without api", s.Doubt, s.Upstreams.Names())
	}
	s = testenv.WaitSnapshot(t, run(tok.SecretID, true), "web arrives", testenv.HasServers("web", "127.0.0.1:9001"))
	if s.Doubt != "" {
		t.Fatalf("allow_acl_filtered: doubt %q", s.Doubt)
	}
	s = testenv.WaitSnapshot(t, run(root, false), "both arrive", func(s engine.Snapshot) bool { return len(s.Upstreams) == 2 })
	if s.Doubt != "" {
		t.Fatalf("management token: doubt %q", s.Doubt)
	}
}
