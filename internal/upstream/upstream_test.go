package upstream

import (
	"flag"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func srv(addr string, weight int) Server {
	return Server{Addr: netip.MustParseAddrPort(addr), Weight: weight, MaxFails: 3, FailTimeout: 10 * time.Second}
}

func ups(name string, keepalive int, servers ...Server) Upstream {
	u := Upstream{Name: name, Keepalive: keepalive, Servers: servers}
	u.Sort()
	return u
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"Web-1.prod_v2", true},
		{"9lives", true},
		{"a", true},
		{"", false},
		{"-web", false},
		{"_web", false},
		{".web", false},
		{"web;", false},
		{"web{", false},
		{"web}", false},
		{"web#x", false},
		{"web x", false},
		{"web\nserver", false},
		{"web/../list", false},
		{"wéb", false},
		{"web\"", false},
		{"web'", false},
		{"web%2f", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseIP(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error
	}{
		{"10.0.0.1", "10.0.0.1"},
		{"::1", "::1"},
		{"::ffff:10.0.0.1", "10.0.0.1"}, // v4-mapped renders as plain v4
		{"2001:db8::1", "2001:db8::1"},
		{"", ""},
		{"localhost", ""},
		{"web.service.consul", ""},
		{"10.0.0.1:8080", ""},
		{"[::1]", ""},
		{"fe80::1%eth0", ""},
		{"0.0.0.0", ""},
		{"::", ""},
		{"10.0.0.1;", ""},
		{"10.0.0.1 backup", ""},
		{"256.0.0.1", ""},
		{"１０.0.0.1", ""},
	}
	for _, tt := range tests {
		got, err := ParseIP(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ParseIP(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseIP(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestServerValidate(t *testing.T) {
	base := srv("10.0.0.1:80", 1)
	tests := []struct {
		name   string
		mutate func(*Server)
		errHas string // "" = valid
	}{
		{"defaults are valid", func(*Server) {}, ""},
		{"port zero is refused", func(s *Server) { s.Addr = netip.MustParseAddrPort("10.0.0.1:0") }, "port 0"},
		{"weight zero is refused as nginx does", func(s *Server) { s.Weight = 0 }, "weight 0"},
		{"weight above nginx's limit is refused", func(s *Server) { s.Weight = MaxWeight + 1 }, "weight"},
		{"negative max_fails is refused", func(s *Server) { s.MaxFails = -1 }, "max_fails"},
		{"max_fails zero disables accounting and is fine", func(s *Server) { s.MaxFails = 0 }, ""},
		{"sub-second fail_timeout cannot be rendered", func(s *Server) { s.FailTimeout = 1500 * time.Millisecond }, "whole seconds"},
		{"negative max_conns is refused", func(s *Server) { s.MaxConns = -5 }, "max_conns"},
		{"zone address is refused", func(s *Server) { s.Addr = netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 80) }, "invalid address"},
		{"missing address is refused", func(s *Server) { s.Addr = netip.AddrPort{} }, "invalid address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			tt.mutate(&s)
			err := s.Validate()
			if tt.errHas == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("error %v, want one containing %q", err, tt.errHas)
			}
		})
	}
}

func TestUpstreamValidateRejectsDuplicatesAndEmpty(t *testing.T) {
	if err := ups("web", 0).Validate(); err == nil || !strings.Contains(err.Error(), "no servers") {
		t.Errorf("empty upstream: %v", err)
	}
	if err := ups("web", 0, srv("10.0.0.1:80", 1), srv("10.0.0.1:80", 2)).Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate server: %v", err)
	}
	if err := ups("web", -1, srv("10.0.0.1:80", 1)).Validate(); err == nil {
		t.Errorf("negative keepalive accepted")
	}
}

func sampleState() State {
	backup := srv("[2001:db8::7]:8443", 5)
	backup.Backup = true
	backup.MaxConns = 100
	down := srv("10.0.0.9:8080", 1)
	down.Down = true
	return State{
		"web":        ups("web", 16, srv("10.0.0.2:8080", 1), srv("10.0.0.1:8080", 2), backup),
		"api_canary": ups("api_canary", 0, srv("192.168.1.5:9000", 1), down),
	}
}

func TestRenderFileGolden(t *testing.T) {
	got := RenderFile(sampleState())
	golden := filepath.Join("testdata", "render.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if string(got) != string(want) {
		t.Errorf("rendered file differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}

func TestBodyIsTheInsideOfTheFileBlock(t *testing.T) {
	st := sampleState()
	file := string(RenderFile(st))
	for _, name := range st.Names() {
		body := st[name].Body()
		indented := "    " + strings.ReplaceAll(strings.TrimSuffix(body, "\n"), "\n", "\n    ") + "\n"
		if !strings.Contains(file, "upstream "+name+" {\n"+indented+"}\n") {
			t.Errorf("body of %s is not the block in the file:\n%s\nfile:\n%s", name, body, file)
		}
	}
	if got, want := st["web"].Body(), "server 10.0.0.1:8080 weight=2 max_fails=3 fail_timeout=10s;\nserver 10.0.0.2:8080 weight=1 max_fails=3 fail_timeout=10s;\nserver [2001:db8::7]:8443 weight=5 max_fails=3 fail_timeout=10s max_conns=100 backup;\nkeepalive 16;\n"; got != want {
		t.Errorf("web body:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseFileRoundTrip(t *testing.T) {
	st := sampleState()
	back, err := ParseFile(RenderFile(st))
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(st) {
		t.Errorf("round trip changed the state:\n%s\nvs\n%s", RenderFile(back), RenderFile(st))
	}
	empty, err := ParseFile(RenderFile(State{}))
	if err != nil || len(empty) != 0 {
		t.Errorf("empty state round trip: %v, %v", empty, err)
	}
}

func TestParseFileAcceptsNginxDialect(t *testing.T) {
	in := `# hand written
upstream  web{server 10.0.0.1:80;   # default params
  server [::1]:81 weight=3 fail_timeout=2m max_fails=0 down
  ;keepalive 4;}
`
	st, err := ParseFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Upstream{Name: "web", Keepalive: 4, Servers: []Server{
		{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second},
		{Addr: netip.MustParseAddrPort("[::1]:81"), Weight: 3, MaxFails: 0, FailTimeout: 2 * time.Minute, Down: true},
	}}
	want.Sort()
	if !st["web"].Equal(want) {
		t.Errorf("got %+v, want %+v", st["web"], want)
	}
}

func TestParseFileErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, in, errHas string
	}{
		{"garbage", "hello", `line 1: want "upstream"`},
		{"missing brace", "upstream web\nserver 10.0.0.1:80;", `line 2: want "{"`},
		{"unterminated block", "upstream web {\nserver 10.0.0.1:80;\n", `missing "}"`},
		{"missing semicolon", "upstream web {\n server 10.0.0.1:80\n}", `line 2: upstream web: server statement not terminated`},
		{"hostname", "upstream web {\n\n server example.com:80;\n}", `line 3: upstream web: server address "example.com:80"`},
		{"unknown directive", "upstream web {\n random;\n server 10.0.0.1:80;}", `line 2: upstream web: unknown directive "random"`},
		{"unknown parameter", "upstream web { server 10.0.0.1:80 slow_start=3s; }", `unknown parameter "slow_start=3s"`},
		{"weight zero", "upstream web { server 10.0.0.1:80 weight=0; }", "weight 0 out of range"},
		{"port zero", "upstream web { server 10.0.0.1:0; }", "port 0 out of range"},
		{"empty upstream", "upstream web { }", "no servers"},
		{"bad name", "upstream -web { server 10.0.0.1:80; }", `line 1: bad upstream name "-web"`},
		{"duplicate names differ only in case", "upstream web { server 10.0.0.1:80; }\nupstream WEB { server 10.0.0.1:80; }", "line 2: upstream WEB defined twice"},
		{"truncated file", "upstream web { server 10.0.0.1:80; }\nupstream api { server 10.0", "line 2: upstream api: server statement not terminated"},
		{"stray brace", "upstream web { server 10.0.0.1:80; } }", `line 1: want "upstream", got "}"`},
		{"brace inside a statement", "upstream web { server 10.0.0.1:80 { }", `server statement not terminated`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseFile([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("ParseFile = %v, %v; want error containing %q", st, err, tt.errHas)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	a := ups("a", 0, srv("10.0.0.1:80", 1))
	b := ups("b", 0, srv("10.0.0.2:80", 1))
	b2 := ups("b", 0, srv("10.0.0.2:80", 2))
	bKeep := ups("b", 8, srv("10.0.0.2:80", 1))
	c := ups("c", 0, srv("10.0.0.3:80", 1))
	tests := []struct {
		name         string
		old, next    State
		set, removed []string
	}{
		{"nothing to nothing", State{}, State{}, nil, nil},
		{"same state is no change", State{"a": a, "b": b}, State{"a": a, "b": b}, nil, nil},
		{"new upstream is set", State{"a": a}, State{"a": a, "b": b}, []string{"b"}, nil},
		{"weight change is set", State{"a": a, "b": b}, State{"a": a, "b": b2}, []string{"b"}, nil},
		{"keepalive change is set", State{"b": b}, State{"b": bKeep}, []string{"b"}, nil},
		{"gone upstream is removed", State{"a": a, "b": b}, State{"a": a}, nil, []string{"b"}},
		{"mixed", State{"a": a, "b": b}, State{"b": b2, "c": c}, []string{"b", "c"}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.old, tt.next)
			if !slices.Equal(got.Set, tt.set) || !slices.Equal(got.Removed, tt.removed) {
				t.Errorf("Diff = %+v, want set %v removed %v", got, tt.set, tt.removed)
			}
			if got.Empty() != (len(tt.set)+len(tt.removed) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

func TestEqualIgnoresProvenanceAndOrder(t *testing.T) {
	x := srv("10.0.0.1:80", 1)
	x.Instance = "web-1"
	u1 := Upstream{Name: "web", Servers: []Server{srv("10.0.0.2:80", 1), x}, Service: "web"}
	u2 := Upstream{Name: "web", Servers: []Server{srv("10.0.0.1:80", 1), srv("10.0.0.2:80", 1)}}
	u1.Sort()
	u2.Sort()
	if !u1.Equal(u2) {
		t.Errorf("equal upstreams compare unequal")
	}
}

func TestServerDelta(t *testing.T) {
	old := ups("web", 0, srv("10.0.0.1:80", 1), srv("10.0.0.2:80", 1))
	next := ups("web", 0, srv("10.0.0.2:80", 3), srv("10.0.0.3:80", 1))
	added, removed := ServerDelta(old, next)
	addrs := func(ss []Server) (out []string) {
		for _, s := range ss {
			out = append(out, s.Addr.String())
		}
		slices.Sort(out)
		return out
	}
	if got := addrs(added); !slices.Equal(got, []string{"10.0.0.2:80", "10.0.0.3:80"}) {
		t.Errorf("added %v", got)
	}
	if got := addrs(removed); !slices.Equal(got, []string{"10.0.0.1:80", "10.0.0.2:80"}) {
		t.Errorf("removed %v", got)
	}
}

// FileRenderer must give RenderFile's bytes whatever changed since its
// last call: servers added, removed or re-weighted, keepalive, upstreams
// appearing and leaving, provenance-only changes, an empty state.
func TestFileRendererMatchesRenderFile(t *testing.T) {
	steps := []State{
		sampleState(),
		{},
		sampleState(),
	}
	st := sampleState()
	st["api"] = ups("api", 0, srv("10.0.1.1:80", 1))
	steps = append(steps, st)
	st = maps.Clone(st)
	st["api"] = ups("api", 0, srv("10.0.1.1:80", 2)) // weight only
	steps = append(steps, st)
	st = maps.Clone(st)
	st["api"] = ups("api", 8, srv("10.0.1.1:80", 2)) // keepalive only
	steps = append(steps, st)
	st = maps.Clone(st)
	u := st["api"]
	u.Service, u.Servers = "other", []Server{srv("10.0.1.1:80", 2)}
	u.Servers[0].Instance, u.Servers[0].Tags = "i@n", []string{"t"} // provenance only: same bytes
	st["api"] = u
	steps = append(steps, st)
	st = maps.Clone(st)
	st["api"] = ups("api", 8, srv("10.0.1.1:80", 2), srv("10.0.1.2:80", 1))
	delete(st, "web")
	steps = append(steps, st)
	st = maps.Clone(st)
	st["api"] = ups("api", 8)
	steps = append(steps, st)
	// As many upstreams, one of them another: the names kept in file
	// order must not be reused.
	st = maps.Clone(st)
	delete(st, "api")
	st["zapi"] = ups("zapi", 0, srv("10.0.1.3:80", 1))
	steps = append(steps, st, State{"zz": ups("zz", 0, srv("[::1]:1", 1))})

	var r FileRenderer
	for i, s := range steps {
		if got, want := string(r.Render(s)), string(RenderFile(s)); got != want {
			t.Fatalf("step %d: FileRenderer gave\n%s\nRenderFile gives\n%s", i, got, want)
		}
	}
}

// When most upstreams leave, the renderer keeps only the blocks still
// wanted, in a map of their size, and still renders what RenderFile does.
func TestFileRendererDropsTheBlocksOfUpstreamsThatLeft(t *testing.T) {
	big := State{}
	for i := range 200 {
		name := "svc-" + strconv.Itoa(i)
		big[name] = ups(name, 0, srv(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 80).String(), 1))
	}
	small := State{"svc-7": big["svc-7"], "svc-9": big["svc-9"]}
	var r FileRenderer
	for i, s := range []State{big, small, big} {
		if got, want := string(r.Render(s)), string(RenderFile(s)); got != want {
			t.Fatalf("step %d: FileRenderer gave\n%s\nRenderFile gives\n%s", i, got, want)
		}
		if len(r.blocks) != len(s) {
			t.Fatalf("step %d: %d blocks kept for %d upstreams", i, len(r.blocks), len(s))
		}
	}
}

// BenchmarkRenderFile: 1,000 upstreams of 10 servers, one server changed.
func BenchmarkRenderFile(b *testing.B) {
	st := State{}
	for i := range 1000 {
		name := "svc-" + strconv.Itoa(i)
		var ss []Server
		for j := range 10 {
			ss = append(ss, srv(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j)}), 80).String(), 1))
		}
		st[name] = ups(name, 0, ss...)
	}
	other := maps.Clone(st)
	other["svc-500"] = ups("svc-500", 0, srv("10.9.9.9:80", 1))
	states := []State{st, other}
	b.Run("whole", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			RenderFile(states[i%2])
		}
	})
	b.Run("renderer", func(b *testing.B) {
		var r FileRenderer
		for i := 0; b.Loop(); i++ {
			r.Render(states[i%2])
		}
	})
}
