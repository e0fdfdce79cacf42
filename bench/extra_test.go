package bench

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFanoutPhaseSummarizeTakesTheLastTargetAndLeavesTimeoutsOut(t *testing.T) {
	p := FanoutPhase{Samples: []FanoutSample{
		{PerTargetMs: []float64{5, 12, 7}, AppliedMs: []float64{3, 8, -1}},
		{PerTargetMs: []float64{4, 30, 40}}, // target 2 is the last here
		{PerTargetMs: []float64{3, -1, 9}},  // target 1 not probed
		{PerTargetMs: []float64{2, -1, 8}, TimedOut: true},
	}}
	p.Summarize(2)
	if p.Timeouts != 1 {
		t.Errorf("timeouts = %d, want 1", p.Timeouts)
	}
	if p.Last.N != 3 || p.Last.Max != 40 || p.Last.Min != 9 || p.Last.P50 != 12 {
		t.Errorf("last = %+v, want 3 changes: 12, 40, 9", p.Last)
	}
	// Without target 2: 12, 30, 3.
	if p.LastOthers.Max != 30 || p.LastOthers.Min != 3 {
		t.Errorf("last without target 2 = %+v, want 3 … 30", p.LastOthers)
	}
	// last − first: 7, 36, 6.
	if p.Spread.Max != 36 || p.Spread.Min != 6 {
		t.Errorf("spread = %+v, want 6 … 36", p.Spread)
	}
	// Only the first change has applied times: 3 and 8 (target 2 not logged).
	if p.Applied.N != 1 || p.Applied.Max != 8 || p.AppliedSpread.Max != 5 {
		t.Errorf("applied = %+v, spread %+v; want one change: 8, spread 5", p.Applied, p.AppliedSpread)
	}
}

func TestFirstPostOfTheAPIAccessLog(t *testing.T) {
	log := []byte("1765090000.100 GET /detail 200\n" +
		"1765090000.200 POST /upstream/web 200\n" + // before the write
		"1765090000.310 POST /upstream/other 200\n" +
		"1765090000.320 POST /upstream/web 500\n" + // refused: not applied
		"1765090000.345 POST /upstream/web 200\n" +
		"1765090000.400 POST /upstream/web 200\n")
	from := time.UnixMilli(1765090000300).Add(400 * time.Microsecond)
	at, ok := FirstPost(log, "/upstream/web", from)
	if !ok || !at.Equal(time.UnixMilli(1765090000345)) {
		t.Errorf("FirstPost = %v, %v; want the POST that ended at .345", at, ok)
	}
	if _, ok := FirstPost(log, "/upstream/web", time.UnixMilli(1765090000401)); ok {
		t.Error("a POST found after the last one")
	}
	// The POST in the write's own millisecond counts ($msec drops the rest).
	if at, ok := FirstPost(log, "/upstream/web", time.UnixMilli(1765090000400).Add(900*time.Microsecond)); !ok || !at.Equal(time.UnixMilli(1765090000400)) {
		t.Errorf("FirstPost in the same millisecond = %v, %v", at, ok)
	}
}

func TestFanoutConfTextLogsTheAPIWithOneWorker(t *testing.T) {
	text := fanoutConfText()
	for _, want := range []string{"worker_processes 1;", "log_format sk_api '$msec $request_method $request_uri $status';\n    upstream swallowkeeper_backend {",
		"listen 127.0.0.1:{{api}} reuseport;\n        access_log {{dir}}/api-access.log sk_api;\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("fan-out nginx.conf lacks %q", want)
		}
	}
	if strings.Count(text, "access_log {{dir}}") != 1 {
		t.Error("the proxy's requests are logged too")
	}
}

func TestSlowestChangesSayWhen(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)
	p := FanoutPhase{Samples: []FanoutSample{
		{PerTargetMs: []float64{5, 9}, At: t0.Add(time.Second)},
		{PerTargetMs: []float64{80, -1}, At: t0.Add(5200 * time.Millisecond)},
		{PerTargetMs: []float64{3, 30}, At: t0.Add(7 * time.Second)},
		{PerTargetMs: []float64{999, 999}, At: t0.Add(8 * time.Second), TimedOut: true},
	}}
	got := p.Slowest(2, t0)
	if want := []string{"+5.2 s: 80.0 ms", "+7.0 s: 30.0 ms"}; !slices.Equal(got, want) {
		t.Errorf("Slowest = %q, want %q", got, want)
	}
}

func TestHungDelaysNone(t *testing.T) {
	f := FanoutResult{Normal: FanoutPhase{LastOthers: Summary{N: 10, P99: 20}}}
	if f.HungDelaysNone() {
		t.Error("met without a hung phase")
	}
	f.Hung = &FanoutPhase{Last: Summary{N: 10, P99: 45}}
	if !f.HungDelaysNone() {
		t.Error("45 ms is within the 50 ms target")
	}
	f.Hung.Last.P99 = 5000 // a push waiting for the hung target's timeout
	if f.HungDelaysNone() {
		t.Error("5 s with a hung target met")
	}
	// Already slower without it: within 1.2× of that.
	f.Normal.LastOthers.P99, f.Hung.Last.P99 = 100, 115
	if !f.HungDelaysNone() {
		t.Error("115 ms against 100 ms without the hung target")
	}
	f.Hung.Last.P99, f.Hung.Timeouts = 40, 1
	if f.HungDelaysNone() {
		t.Error("met with a timed-out change")
	}
}

func TestPerChangeAndBytesRatio(t *testing.T) {
	if got := PerChange(1000, 10, 20, 4); got != 200 {
		t.Errorf("PerChange = %v, want (1000 − 10×20)/4 = 200", got)
	}
	if got := PerChange(100, 10, 20, 4); got != 0 {
		t.Errorf("PerChange below the idle rate = %v, want 0", got)
	}
	if got := PerChange(100, 0, 0, 0); got != 0 {
		t.Errorf("PerChange of no change = %v, want 0", got)
	}
	f := FleetResult{ChecksAnswerBytes: 1000}
	if got := f.BytesRatio(FleetRun{Daemons: 10, BytesPerChange: 500}); got != 0.05 {
		t.Errorf("ratio = %v, want 500/10/1000 = 0.05", got)
	}
	if got := (&FleetResult{}).BytesRatio(FleetRun{Daemons: 1, BytesPerChange: 5}); got != 0 {
		t.Errorf("ratio without an answer size = %v, want 0", got)
	}
}

func TestSoakCountsEveryPhaseAndGivesTargets(t *testing.T) {
	s := &SoakResult{Run: LoadRun{Warmup: LoadStats{Requests: 100, Failed: 1}, Baseline: LoadStats{Requests: 200},
		During: LoadStats{Requests: 600000, Failed: 2}}}
	if f, n := s.Failed(); f != 3 || n != 600300 {
		t.Errorf("Failed = %d of %d, want 3 of 600300", f, n)
	}
	r := &Results{DurationS: 3600, Params: Params{Scenarios: []string{ScenarioSoak}}, Soak: s, Fanout: &FanoutResult{Targets: 20, Normal: FanoutPhase{Last: Summary{N: 5, P50: 10, P99: 30}, LastOthers: Summary{N: 5, P99: 30}},
		Hung: &FanoutPhase{Last: Summary{N: 5, P99: 900}}}}
	got := map[string]bool{}
	for _, tg := range EvaluateTargets(r) {
		got[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"soak: failed requests":                            false,
		"soak: requests during restarts":                   true,
		"fan-out p99, write → last of 20 targets":          true,
		"fan-out: a hung target delays none of the others": false,
	}
	if _, ok := got["bench run time"]; ok {
		t.Error("the default set's run-time budget judged a run of opt-in scenarios")
	}
	for name, met := range want {
		if m, ok := got[name]; !ok || m != met {
			t.Errorf("target %q: present %v, met %v; want met %v (all: %v)", name, ok, m, met, got)
		}
	}
}

func TestParseInts(t *testing.T) {
	got, err := ParseInts("1, 10,50")
	if err != nil || !slices.Equal(got, []int{1, 10, 50}) {
		t.Errorf("ParseInts = %v, %v", got, err)
	}
	for _, bad := range []string{"1,x", "0", "-3"} {
		if _, err := ParseInts(bad); err == nil {
			t.Errorf("ParseInts(%q) accepted", bad)
		}
	}
}

func TestParseFlagsKeepsTheOptInScenariosOutOfTheDefaults(t *testing.T) {
	for _, args := range [][]string{{}, {"-quick", "-shared"}} {
		o, ok := parseFlags(args, io.Discard)
		if !ok {
			t.Fatalf("%v refused", args)
		}
		if !slices.Equal(o.p.Scenarios, AllScenarios) {
			t.Errorf("%v runs %v, want the default %v", args, o.p.Scenarios, AllScenarios)
		}
	}
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"-soak"}, []string{ScenarioSoak}},
		{[]string{"-scenarios", "fanout", "-soak"}, []string{ScenarioFanout, ScenarioSoak}},
		{[]string{"-scenarios", "soak,fleet", "-soak"}, []string{ScenarioSoak, ScenarioFleet}},
		{[]string{"-scenarios", "fleet", "-fleet-daemons", "1,5"}, []string{ScenarioFleet}},
	}
	for _, c := range cases {
		o, ok := parseFlags(c.args, io.Discard)
		if !ok || !slices.Equal(o.p.Scenarios, c.want) {
			t.Errorf("%v: ok %v, scenarios %v, want %v", c.args, ok, o.p.Scenarios, c.want)
		}
	}
	o, _ := parseFlags([]string{"-scenarios", "fleet", "-fleet-daemons", "1,5", "-soak-duration", "60s", "-soak-rate", "500", "-fleet-baseline", "/tmp/old"}, io.Discard)
	if !slices.Equal(o.p.FleetDaemons, []int{1, 5}) || o.p.SoakSeconds != 60 || o.p.SoakRate != 500 || o.fleetBaseline != "/tmp/old" {
		t.Errorf("params = %+v, fleet baseline %q", o.p, o.fleetBaseline)
	}
	for _, bad := range [][]string{{"-fleet-daemons", "1,x"}, {"-fanout-targets", "0"}, {"-scenarios", "fanout,nope"}} {
		var errs strings.Builder
		if _, ok := parseFlags(bad, &errs); ok {
			t.Errorf("%v accepted", bad)
		} else if errs.Len() == 0 {
			t.Errorf("%v refused without saying why", bad)
		}
	}
}

func TestRequestLine(t *testing.T) {
	for _, c := range []struct {
		line, method, path string
		ok                 bool
	}{
		{"GET /v1/health/state/any?index=42&wait=300000ms&stale= HTTP/1.1\r\n", "GET", "/v1/health/state/any?index&stale&wait", true},
		{"GET /v1/catalog/services HTTP/1.1\r\n", "GET", "/v1/catalog/services", true},
		{"GET /v1/health/service/svc-0042?stale HTTP/1.1\r\n", "GET", "/v1/health/service/{name}?stale", true},
		{"Host: 127.0.0.1:8500\r\n", "", "", false},
		{"User-Agent: Go-http-client/1.1\r\n", "", "", false},
		{"\r\n", "", "", false},
	} {
		m, p, ok := requestLine([]byte(c.line))
		if m != c.method || p != c.path || ok != c.ok {
			t.Errorf("requestLine(%q) = %q %q %v, want %q %q %v", c.line, m, p, ok, c.method, c.path, c.ok)
		}
	}
}

func TestCountingProxyCountsBytesAndRequests(t *testing.T) {
	body := strings.Repeat("x", 100000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	p, err := newCountingProxy(strings.TrimPrefix(srv.URL, "http://"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	before := p.snapshot()
	client := &http.Client{Transport: &http.Transport{}}
	for i := range 3 {
		resp, err := client.Get(fmt.Sprintf("http://%s/v1/health/service/web?index=%d", p.Addr(), i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(b) != len(body) {
			t.Fatalf("got %d bytes through the proxy, want %d", len(b), len(body))
		}
	}
	d := p.snapshot().since(before)
	// The bodies plus three sets of headers, each well under 1 KB.
	if d.served < 3*int64(len(body)) || d.served > 3*int64(len(body))+3000 {
		t.Errorf("served %d bytes, want 3 × %d plus headers", d.served, len(body))
	}
	if d.requested == 0 || d.requested > 3000 {
		t.Errorf("requested %d bytes, want three small GETs", d.requested)
	}
	if d.requests() != 3 || d.paths["GET /v1/health/service/{name}?index"] != 3 {
		t.Errorf("requests by path = %v, want 3 of GET /v1/health/service/{name}?index", d.paths)
	}
	if most := p.most.Load(); most != 1 {
		t.Errorf("at most %d connections open, want 1 (keep-alive)", most)
	}
}

// The daemon's own loader is not linked here (it would bring every registry
// client into the bench module); the small runs start the daemon with
// these configurations, and this checks what the scenarios rely on.
func TestDaemonConfigsOfTheScenarios(t *testing.T) {
	dir := t.TempDir()
	fleet := fleetDaemonConfig("consul:\n  address: 127.0.0.1:8500\n", dir+"/upstreams.conf", dir+"/reloads")
	for _, want := range []string{
		"  address: 127.0.0.1:8500\n", "file: " + dir + "/upstreams.conf\n",
		"metrics:\n  listen: \"\"\n", "targets: []\n", "reload:\n  enabled: true\n  test: []\n",
		`  command: ["/bin/sh", "-c", "echo >> ` + dir + `/reloads"]` + "\n", "  min_wait: 0s\n",
	} {
		if !strings.Contains(fleet, want) {
			t.Errorf("fleet config lacks %q:\n%s", want, fleet)
		}
	}
	tls := &Stack{Dir: dir, ConsulPort: 8500, ports: map[string]int{"https": 8501}, opt: StackOptions{ConsulWatch: "per_service"}}
	if got, want := tls.consulConfig(fmt.Sprintf("127.0.0.1:%d", tls.DaemonConsulPort())),
		"consul:\n  address: https://127.0.0.1:8501\n  watch: per_service\n  tls:\n    ca_file: "+dir+"/tls/consul-agent-ca.pem\n"; got != want {
		t.Errorf("per_service consul block:\n%s\nwant:\n%s", got, want)
	}
	st := &Stack{Dir: dir, File: dir + "/upstreams.conf", ConsulPort: 8500, ports: map[string]int{"metrics": 9999}}
	st.bin.Daemon = "/bin/true" // exits at once: the file it was given is what is checked
	if err := st.startFanoutDaemon([]string{"http://127.0.0.1:1001", "http://127.0.0.1:1002"}); err != nil {
		t.Fatal(err)
	}
	st.controller.stop()
	b, err := os.ReadFile(dir + "/swallowkeeper.yml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "targets:\n  - url: http://127.0.0.1:1001\n  - url: http://127.0.0.1:1002\n"; !strings.HasSuffix(string(b), want) {
		t.Errorf("fanout config does not end with both targets:\n%s", b)
	}
}

func TestRenderMarkdownOptInSections(t *testing.T) {
	r := sampleResults()
	r.Params.FleetChanges = 20
	r.Fanout = &FanoutResult{Targets: 20, Changes: 2, HungIndex: 10,
		Normal: FanoutPhase{Samples: make([]FanoutSample, 2), Last: Summary{N: 2, P50: 11, P90: 20, P99: 21, Max: 21},
			LastOthers: Summary{N: 2, P99: 19}, Spread: Summary{P50: 4, P99: 6},
			Applied: Summary{N: 2, P50: 7, P99: 9, Max: 9}, AppliedSpread: Summary{P50: 1, P99: 2}},
		Hung: &FanoutPhase{Samples: make([]FanoutSample, 2), Last: Summary{N: 2, P50: 12, P99: 22, Max: 22}}}
	r.Fleet = &FleetResult{Services: 1000, Instances: 10, ChecksAnswerBytes: 3 << 20, Runs: []FleetRun{
		{Daemons: 10, ColdSyncMs: 2500, MaxConns: 40, Changes: 20, ChangeLatency: Summary{P50: 30, P99: 80},
			BytesPerChange: 3 << 20, CPUPerChangeMs: 12.5, CPURawPerChange: 13, IdleBytesPerS: 10, IdleCPUMsPerS: 1.5,
			ConsulRequests: 60, RequestsByPath: []string{"GET /v1/health/service/svc-0001?index (×40)"}}},
		Baseline: &FleetBaseline{Daemon: "swallowkeeper 1.0", Runs: []FleetRun{{Daemons: 10, BytesPerChange: 30 << 20, CPUPerChangeMs: 50,
			ChangeLatency: Summary{P50: 300, P99: 900}}}}}
	r.Soak = &SoakResult{Rate: 1000, Seconds: 510, Restarts: 300, Run: LoadRun{During: LoadStats{Requests: 510000, Latency: Summary{P50: 1, P99: 4, Max: 30}}}}
	r.Targets = EvaluateTargets(r)
	md := RenderMarkdown(r, "bench")
	for _, want := range []string{
		"## 6. Fan-out to many nginx (ours-lua)",
		"| all 20 targets | 2 | 11.0 / 20.0 / 21.0 / 21.0 ms | 4.0 / 6.0 ms | 7.0 / 9.0 / 9.0 ms | 1.0 / 2.0 ms | 0 | 0.0 s |",
		"| the same changes, target 10 left out | 2 | 0.0 / 0.0 / 19.0 / 0.0 ms | — | — | — | 0 |",
		"| target 10 hung, the other 19 | 2 | 12.0 / ",
		"fan-out: a hung target delays none of the others: 22.0 ms with, 19.0 ms without (0 timeouts)",
		"## 7. Fleet: what a change costs Consul",
		// 3 MB per change over 10 daemons: a tenth of a checks answer each.
		"| 10 | 2.5 s | 40 | 30.0 / 80.0 ms | 3.00 MB | 0.1000× | 12.50 ms (13.00) | 10 B/s, 1.5 ms/s | 3.0 |",
		"| 10 | GET /v1/health/service/svc-0001?index (×40) |",
		"baseline daemon (swallowkeeper 1.0)",
		"| 10 | 30.00 MB | 50.00 ms | 0.10× | 0.25× | 300.0 / 900.0 ms |",
		"## 8. Rolling-restart soak (ours-lua)",
		"| 300 | 510000 (≥ 500000: ✅ met) | 0 of 510000 (0 / 0) (target 0: ✅ met) | 1.0 / 4.0 / 30.0 ms |",
		"| soak | soak: failed requests | 0 | 0 of 510000 | ✅ met |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if math.IsNaN(r.Fleet.BytesRatio(r.Fleet.Runs[0])) {
		t.Error("ratio is NaN")
	}
	if strings.Contains(RenderMarkdown(sampleResults(), "bench"), "## 6.") {
		t.Error("opt-in sections rendered without their results")
	}
}

// Over TLS there are no request lines to read: the proxy copies the
// stream as it comes (a line-by-line copy held the handshake until the
// client gave up) and counts its bytes.
func TestCountingProxyCarriesTLS(t *testing.T) {
	body := strings.Repeat("y", 50000)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) }))
	defer srv.Close()
	p, err := newCountingProxy(strings.TrimPrefix(srv.URL, "https://"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := srv.Client()
	client.Timeout = 10 * time.Second
	resp, err := client.Get("https://" + p.Addr() + "/v1/health/service/web")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(got) != body {
		t.Fatalf("read %d bytes (%v), want the %d-byte body", len(got), err, len(body))
	}
	d := p.snapshot()
	if d.served < int64(len(body)) || d.requested == 0 || d.requests() != 0 {
		t.Fatalf("served %d requested %d requests %d, want ≥ %d served, some requested, no requests by path", d.served, d.requested, d.requests(), len(body))
	}
}
