package consul

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/swallowkeeper/swallowkeeper/internal/testenv"
)

// apiDecode is how the api package decodes a /v1/health/service answer.
func apiDecode(body []byte) ([]*api.ServiceEntry, error) {
	var out []*api.ServiceEntry
	err := json.NewDecoder(strings.NewReader(string(body))).Decode(&out)
	return out, err
}

// sameUse fails t unless a and b give the source the same instances under
// every conversion option, the same versions and the same entries of name.
func sameUse(t *testing.T, name string, a, b []*api.ServiceEntry) {
	t.Helper()
	for _, c := range []Convert{{}, {OnlyPassing: true}, {NativeWeights: true}, {AddressFrom: "lan"}, {AddressFrom: "wan_ipv4"}} {
		ia, na := c.Instances(a)
		ib, nb := c.Instances(b)
		if !reflect.DeepEqual(ia, ib) || !reflect.DeepEqual(na, nb) {
			t.Fatalf("%+v: instances differ:\napi:  %+v %v\nlean: %+v %v", c, ia, na, ib, nb)
		}
	}
	if va, vb := versionsOf(a), versionsOf(b); va != vb {
		t.Fatalf("versions differ: api %+v, lean %+v", va, vb)
	}
	if oa, ob := versionsOf(OnlyService(a, name)), versionsOf(OnlyService(b, name)); oa != ob {
		t.Fatalf("OnlyService differs: api %+v, lean %+v", oa, ob)
	}
}

// A full entry as Consul 1.20 writes it, with the fields the source skips
// (check outputs, definitions, proxy and connect blocks) filled in.
const fullEntry = `{"Node":{"ID":"0b6d","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1",
 "TaggedAddresses":{"lan":"10.0.0.1","wan_ipv4":"192.0.2.1"},"Meta":{"rack":"r1"},"CreateIndex":5,"ModifyIndex":7},
 "Service":{"Kind":"","ID":"web-1","Service":"web","Tags":["v1","canary"],"Address":"10.0.1.1",
 "TaggedAddresses":{"lan":{"Address":"10.0.1.2","Port":8081},"wan_ipv4":{"Address":"192.0.2.9","Port":0}},
 "Meta":{"weight":"3"},"Port":8080,"Weights":{"Passing":5,"Warning":1},"EnableTagOverride":false,
 "Proxy":{"Mode":"","MeshGateway":{},"Expose":{}},"Connect":{},"PeerName":"","CreateIndex":9,"ModifyIndex":11},
 "Checks":[{"Node":"n1","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"",
  "Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","Interval":"",
  "Timeout":"","ExposedPort":0,"Definition":{},"CreateIndex":5,"ModifyIndex":5},
  {"Node":"n1","CheckID":"service:web-1","Name":"web","Status":"warning","Output":"slow\n","ServiceID":"web-1",
  "ServiceName":"web","ServiceTags":["v1"],"Type":"ttl","Definition":{"Interval":"0s"},"CreateIndex":12,"ModifyIndex":14}]}`

func TestDecodeServiceEntriesMatchesTheAPI(t *testing.T) {
	cases := []struct {
		name, body string
		// apiFails: the api package refuses the answer over a field the
		// source never uses; the lean decode takes it.
		apiFails bool
		// bothFail: a field the source uses is malformed.
		bothFail bool
	}{
		{name: "full entry", body: "[" + fullEntry + "]"},
		{name: "two entries, one of another service", body: "[" + fullEntry + "," + strings.Replace(fullEntry, `"Service":"web"`, `"Service":"api"`, 1) + "]"},
		{name: "empty", body: "[]"},
		{name: "null", body: "null"},
		{name: "null entry", body: "[null," + fullEntry + "]"},
		{name: "entry without node or service", body: `[{"Checks":[]},{"Node":{"Node":"n"}},{"Service":{"Service":"web","ID":"x"}}]`},
		{name: "null checks", body: `[{"Node":{"Node":"n","Address":"10.0.0.1"},"Service":{"Service":"web","ID":"x","Port":1},"Checks":null}]`},
		{name: "a null check", body: `[{"Node":{"Node":"n","Address":"10.0.0.1"},"Service":{"Service":"web","ID":"x","Port":1},"Checks":[null,{"Status":"passing"}]}]`},
		{name: "lower-case keys", body: `[{"node":{"node":"n","address":"10.0.0.1"},"service":{"service":"web","id":"x","port":1},"checks":[{"status":"critical","modifyindex":3}]}]`},
		{name: "unused field malformed", body: `[{"Node":{"Node":"n","Address":"10.0.0.1","Meta":7},"Service":{"Service":"web","ID":"x","Port":1,"Proxy":"no"},"Checks":[{"Status":"passing","Output":5}]}]`, apiFails: true},
		{name: "port malformed", body: `[{"Node":{"Node":"n"},"Service":{"Service":"web","ID":"x","Port":"80"}}]`, bothFail: true},
		{name: "status malformed", body: `[{"Node":{"Node":"n"},"Service":{"Service":"web","ID":"x","Port":80},"Checks":[{"Status":1}]}]`, bothFail: true},
		{name: "not a list", body: `{"Node":{}}`, bothFail: true},
		{name: "truncated", body: "[" + fullEntry[:200], bothFail: true},
		{name: "something after the list", body: "[" + fullEntry + "] []"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lean, lerr := decodeServiceEntries([]byte(tc.body))
			full, aerr := apiDecode([]byte(tc.body))
			switch {
			case tc.bothFail:
				if lerr == nil || aerr == nil {
					t.Fatalf("want both to fail: lean %v, api %v", lerr, aerr)
				}
				return
			case tc.apiFails:
				if aerr == nil {
					t.Fatal("the api package took it: the case no longer shows what it is for")
				}
				if lerr != nil {
					t.Fatalf("lean decode: %v", lerr)
				}
				// What the source uses must be what it would be with the
				// unused fields left out.
				var raw []map[string]any
				if err := json.Unmarshal([]byte(tc.body), &raw); err != nil {
					t.Fatal(err)
				}
				delete(raw[0]["Node"].(map[string]any), "Meta")
				delete(raw[0]["Service"].(map[string]any), "Proxy")
				delete(raw[0]["Checks"].([]any)[0].(map[string]any), "Output")
				clean, _ := json.Marshal(raw)
				if full, aerr = apiDecode(clean); aerr != nil {
					t.Fatal(aerr)
				}
			default:
				if lerr != nil || aerr != nil {
					t.Fatalf("lean %v, api %v", lerr, aerr)
				}
			}
			if len(lean) != len(full) {
				t.Fatalf("%d entries, the api package %d", len(lean), len(full))
			}
			sameUse(t, "web", full, lean)
		})
	}
}

// TestReadServiceMatchesTheAPIOnRealConsul reads the answers of a real
// Consul both ways, the api package's and readService's, for instances
// that use every field the source reads: the source must see the same.
func TestReadServiceMatchesTheAPIOnRealConsul(t *testing.T) {
	c := testenv.StartConsul(t)
	agent := c.Client.Agent()
	regs := []*api.AgentServiceRegistration{
		{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 8081, Tags: []string{"v1", "canary"}, Meta: map[string]string{"weight": "3"},
			TaggedAddresses: map[string]api.ServiceAddress{"lan": {Address: "127.0.0.2", Port: 9081}, "wan_ipv4": {Address: "192.0.2.1"}},
			Weights:         &api.AgentWeights{Passing: 5, Warning: 2},
			Checks: api.AgentServiceChecks{
				{CheckID: "web-1-a", TTL: "10m", Status: api.HealthPassing, Notes: "a note"},
				{CheckID: "web-1-b", TTL: "10m", Status: api.HealthWarning},
			}},
		{ID: "web-2", Name: "web", Port: 8082, Check: &api.AgentServiceCheck{CheckID: "web-2-a", TTL: "10m", Status: api.HealthCritical}},
		{ID: "web-3", Name: "web", Address: "127.0.0.3", Port: 8083},
		{ID: "api-1", Name: "api", Address: "127.0.0.4", Port: 8084, Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing}},
	}
	for _, r := range regs {
		if err := agent.ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := agent.UpdateTTL("web-1-a", strings.Repeat("output ", 100), api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	client := testClient(t, c)
	ctx := context.Background()
	for _, name := range []string{"web", "api", "absent"} {
		want, wmeta, err := client.Health().Service(name, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, gotVersions, gmeta, err := client.readService(ctx, name, &api.QueryOptions{}, always, inline)
		if err != nil {
			t.Fatal(err)
		}
		if gotVersions != versionsOf(OnlyService(want, name)) {
			t.Fatalf("%s: versions %+v, want those of the api package's entries", name, gotVersions)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, the api package %d", name, len(got), len(want))
		}
		if gmeta.LastIndex != wmeta.LastIndex || gmeta.KnownLeader != wmeta.KnownLeader ||
			gmeta.ResultsFilteredByACLs != wmeta.ResultsFilteredByACLs || gmeta.QueryBackend != wmeta.QueryBackend {
			t.Fatalf("%s: meta %+v, the api package %+v", name, *gmeta, *wmeta)
		}
		sameUse(t, name, want, got)
		if name == "web" { // not two empty answers compared
			healthy := map[string]bool{}
			ins, _ := Convert{}.Instances(got)
			for _, in := range ins {
				healthy[in.ID] = in.Healthy
			}
			if want := map[string]bool{"web-1": true, "web-2": false, "web-3": true}; !reflect.DeepEqual(healthy, want) {
				t.Fatalf("web: healthy by instance %v, want %v", healthy, want)
			}
		}
	}

	// A long poll past an index it has passed answers at once; the meta
	// must name the backend as the api package does, since a streaming
	// answer is only a cue, and decode is not asked for one.
	_, meta, err := client.Health().Service("web", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	q := &api.QueryOptions{WaitIndex: meta.LastIndex - 1}
	_, wmeta, err := client.Health().Service("web", "", false, q)
	if err != nil {
		t.Fatal(err)
	}
	asked := false
	got, _, gmeta, err := client.readService(ctx, "web", q, func(m *api.QueryMeta) bool { asked = true; return m.QueryBackend != api.QueryBackendStreaming }, inline)
	if err != nil {
		t.Fatal(err)
	}
	if !asked || gmeta.QueryBackend != wmeta.QueryBackend || gmeta.QueryBackend == "" {
		t.Fatalf("long poll: backend %q (decode asked: %v), the api package %q", gmeta.QueryBackend, asked, wmeta.QueryBackend)
	}
	if (got == nil) != (gmeta.QueryBackend == api.QueryBackendStreaming) {
		t.Fatalf("long poll answered by %q: decoded %d entries, want none only for a streaming answer", gmeta.QueryBackend, len(got))
	}
	t.Logf("a long poll is answered by the %q backend", gmeta.QueryBackend)
}

// TestVersionsSeeANullCheckComeAndGo: a null in an entry's check list makes
// the instance fail, so its coming or going must be a change the follower
// passes on, not an answer it drops as the same as the last.
func TestVersionsSeeANullCheckComeAndGo(t *testing.T) {
	with, err := decodeServiceEntries([]byte(`[{"Node":{"Node":"n","Address":"10.0.0.1"},"Service":{"Service":"web","ID":"x","Port":1},"Checks":[null,{"Status":"passing","ModifyIndex":5}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	without, err := decodeServiceEntries([]byte(`[{"Node":{"Node":"n","Address":"10.0.0.1"},"Service":{"Service":"web","ID":"x","Port":1},"Checks":[{"Status":"passing","ModifyIndex":5}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Convert{}.Instances(with)
	b, _ := Convert{}.Instances(without)
	if a[0].Healthy || !b[0].Healthy {
		t.Fatalf("healthy with a null check %v, without %v: want false, true", a[0].Healthy, b[0].Healthy)
	}
	if versionsOf(with) == versionsOf(without) {
		t.Fatal("the versions do not tell the two answers apart: the follower would drop the second")
	}
}

// TestVersionsTellEveryChangeApart: the digest must differ whenever any
// field it stands for differs (a node, a modify index, a check's status,
// index or presence, the entries' order), also where fields could run
// into each other, and agree for answers that differ only elsewhere.
func TestVersionsTellEveryChangeApart(t *testing.T) {
	type check struct {
		status string
		index  uint64
		null   bool
	}
	type entry struct {
		node         string
		svcIdx, nIdx uint64
		checks       []check
		output, addr string // not part of the version
	}
	build := func(es ...entry) []*api.ServiceEntry {
		var out []*api.ServiceEntry
		for _, e := range es {
			se := &api.ServiceEntry{Node: &api.Node{Node: e.node, ModifyIndex: e.nIdx, Address: e.addr},
				Service: &api.AgentService{Service: "web", ModifyIndex: e.svcIdx}}
			for _, c := range e.checks {
				if c.null {
					se.Checks = append(se.Checks, nil)
					continue
				}
				se.Checks = append(se.Checks, &api.HealthCheck{Status: c.status, ModifyIndex: c.index, Output: e.output})
			}
			out = append(out, se)
		}
		return out
	}
	pass := check{status: "passing", index: 7}
	base := entry{node: "n1", svcIdx: 10, nIdx: 3, checks: []check{pass}}
	with := func(f func(*entry)) entry {
		e := base
		e.checks = slices.Clone(base.checks)
		f(&e)
		return e
	}
	v := versionsOf(build(base))
	for _, tc := range []struct {
		name    string
		entries []*api.ServiceEntry
		same    bool
	}{
		{"the same answer again", build(base), true},
		{"another check output and node address", build(with(func(e *entry) { e.output, e.addr = "HTTP 200", "10.0.0.9" })), true},
		{"another node", build(with(func(e *entry) { e.node = "n2" })), false},
		{"service modify index", build(with(func(e *entry) { e.svcIdx = 11 })), false},
		{"node modify index", build(with(func(e *entry) { e.nIdx = 4 })), false},
		{"check status", build(with(func(e *entry) { e.checks[0].status = "critical" })), false},
		{"check modify index", build(with(func(e *entry) { e.checks[0].index = 8 })), false},
		{"a check more", build(with(func(e *entry) { e.checks = append(e.checks, pass) })), false},
		{"a null check more", build(with(func(e *entry) { e.checks = append(e.checks, check{null: true}) })), false},
		{"no check", build(with(func(e *entry) { e.checks = nil })), false},
		{"an entry more", build(base, with(func(e *entry) { e.node = "n2" })), false},
		{"no entry", build(), false},
	} {
		if got := versionsOf(tc.entries) == v; got != tc.same {
			t.Errorf("%s: same version %v, want %v", tc.name, got, tc.same)
		}
	}
	// Fields that would run into each other without their lengths: node
	// "n1" with status "passing" against node "n1p" with status "assing".
	a := build(entry{node: "n1", checks: []check{{status: "passing"}}})
	b := build(entry{node: "n1p", checks: []check{{status: "assing"}}})
	if versionsOf(a) == versionsOf(b) {
		t.Error("fields run into each other: two different answers share a version")
	}
	// Order counts: the follower compares the answer as Consul sent it.
	x, y := with(func(e *entry) { e.node = "x" }), with(func(e *entry) { e.node = "y" })
	if versionsOf(build(x, y)) == versionsOf(build(y, x)) {
		t.Error("the entries' order is not part of the version")
	}
	if got := nodesOf(build(y, x, y)); !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("nodesOf: %v, want [x y]", got)
	}
}

// TestGetRawReadsAnAnswerCompressedAnyway: the source asks for identity;
// something between it and the agent (a proxy) may compress anyway, and
// the answer must read, not fail on every poll.
func TestGetRawReadsAnAnswerCompressedAnyway(t *testing.T) {
	const body = `[{"Node":{"Node":"n","Address":"10.0.0.1"},"Service":{"Service":"web","ID":"x","Port":80}}]`
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.Header.Get("Accept-Encoding")
		if r.URL.Path != "/v1/health/service/web" {
			http.Error(w, strings.Repeat("no such path ", 1000), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("X-Consul-Index", "42")
		w.Header().Set("X-Consul-KnownLeader", "true")
		zw := gzip.NewWriter(w)
		zw.Write([]byte(body))
		zw.Close()
	}))
	defer srv.Close()
	cfg := api.DefaultConfig()
	cfg.Address = strings.TrimPrefix(srv.URL, "http://")
	client, err := NewClient(cfg, WatchCatalog)
	if err != nil {
		t.Fatal(err)
	}
	entries, _, meta, err := client.readService(context.Background(), "web", &api.QueryOptions{}, always, inline)
	if err != nil {
		t.Fatal(err)
	}
	if asked != "identity" {
		t.Errorf("Accept-Encoding %q, want identity", asked)
	}
	if meta.LastIndex != 42 || !meta.KnownLeader || len(entries) != 1 || entries[0].Service.Port != 80 {
		t.Fatalf("meta %+v, %d entries: want index 42, a known leader and the one entry", *meta, len(entries))
	}
	if _, _, _, err := client.readService(context.Background(), "absent/x", &api.QueryOptions{}, always, inline); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("a 404 gave %v, want an error naming it", err)
	}
}

func TestDeepPoolRunsOnItsOwnGoroutines(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := newDeepPool(ctx, 2)
	ran := 0
	if !p.run(context.Background(), func() { ran++ }) || ran != 1 {
		t.Fatalf("run: ran %d times, want once", ran)
	}
	// A job runs to its end even when the caller's ctx ends meanwhile.
	callerCtx, callerCancel := context.WithCancel(context.Background())
	if !p.run(callerCtx, func() { callerCancel(); ran++ }) || ran != 2 {
		t.Fatalf("a job that outlived its caller's ctx: ran %d, want 2", ran)
	}
	if p.run(callerCtx, func() { ran++ }) || ran != 2 {
		t.Fatalf("an ended caller ctx: run ran the job (%d)", ran)
	}
	cancel()
	p.stop() // returns: the workers ended with the pool's ctx
	if p.run(context.Background(), func() { ran++ }) || ran != 2 {
		t.Fatalf("a stopped pool ran a job (%d), or run did not say so", ran)
	}
}
