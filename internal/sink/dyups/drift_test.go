package dyups

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swallowkeeper/swallowkeeper/internal/upstream"
)

// detailText is /detail as dyups writes it for the upstreams of s, in
// the given order.
func detailText(s upstream.State, order []string) string {
	var b strings.Builder
	for _, name := range order {
		u := s[name]
		b.WriteString(u.Name + "\n")
		for _, srv := range u.Servers {
			d := detailOf(srv)
			fmt.Fprintf(&b, "server %s weight=%d max_conns=%d max_fails=%d fail_timeout=%d backup=%d down=%d\n",
				d.Addr, d.Weight, d.MaxConns, d.MaxFails, d.FailTimeout, boolInt(d.Backup), boolInt(d.Down))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// wholeDrift is the drift check without memory: parse the whole answer,
// match every desired upstream and look up every owned one.
func wholeDrift(body string, desired upstream.State, owned map[string]bool) ([]string, error) {
	d, err := ParseDetail(body)
	if err != nil {
		return nil, err
	}
	var drift []string
	for name, u := range desired {
		if !d.Matches(u) {
			drift = append(drift, name)
		}
	}
	for name := range owned {
		if _, wanted := desired[name]; !wanted && !foldsToDesired(desired, name) {
			if _, present := d.Lookup(name); present {
				drift = append(drift, name)
			}
		}
	}
	slices.Sort(drift)
	return drift, nil
}

// foldsToDesired reports whether a desired name differs from name only in
// case (then nginx's upstream of that name is the desired one's).
func foldsToDesired(desired upstream.State, name string) bool {
	for n := range desired {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

func randomState(r *rand.Rand, n int) upstream.State {
	s := upstream.State{}
	for i := range n {
		u := upstream.Upstream{Name: fmt.Sprintf("svc-%d", i), Keepalive: 8}
		for k := range 1 + r.IntN(4) {
			u.Servers = append(u.Servers, upstream.Server{
				Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), byte(k + 1)}), uint16(8000+r.IntN(3))),
				Weight: 1 + r.IntN(3), MaxFails: 1, FailTimeout: 10 * time.Second,
			})
		}
		s[u.Name] = u
	}
	return s
}

func sortedNames(s upstream.State) []string {
	var names []string
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// detailMutations are the ways an answer of /detail differs from what was
// desired, applied to detailText(s, order).
var detailMutations = []struct {
	name string
	do   func(body string, s upstream.State, order []string) string
}{
	{"nothing changed", func(b string, _ upstream.State, _ []string) string { return b }},
	{"a weight changed in nginx", func(b string, _ upstream.State, _ []string) string {
		return strings.Replace(b, "weight=1 ", "weight=7 ", 1)
	}},
	{"a server lost", func(b string, _ upstream.State, _ []string) string {
		i := strings.Index(b, "\nserver ")
		j := strings.Index(b[i+1:], "\n")
		return b[:i] + b[i+1+j:]
	}},
	{"an upstream lost", func(b string, s upstream.State, order []string) string {
		sec := detailText(s, order[:1])
		return strings.Replace(b, sec, "", 1)
	}},
	{"another upstream added", func(b string, _ upstream.State, _ []string) string {
		return b + "stranger\nserver 10.9.9.9:80 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n\n"
	}},
	{"an owned upstream no longer wanted is still there, in another case", func(b string, _ upstream.State, _ []string) string {
		return b + "OLD\n\n"
	}},
	{"servers in another order", func(b string, s upstream.State, order []string) string {
		u := s[order[0]]
		rev := u
		rev.Servers = slices.Clone(u.Servers)
		slices.Reverse(rev.Servers)
		return strings.Replace(b, detailText(s, order[:1]), detailText(upstream.State{u.Name: rev}, order[:1]), 1)
	}},
	{"a worker with nothing", func(string, upstream.State, []string) string { return "" }},
	{"an upstream shown in another case (the case of a POST before a rename)", func(b string, _ upstream.State, order []string) string {
		return strings.Replace(b, order[0]+"\n", strings.ToUpper(order[0])+"\n", 1)
	}},
}

// TestDriftMemoryAgreesWithWholeParse: over random states, answers and
// changes, a drift check that remembers matched sections finds exactly
// what parsing the whole answer finds, on the first check and on every
// later one, whatever the memory holds.
func TestDriftMemoryAgreesWithWholeParse(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	mutations := detailMutations
	for round := range 200 {
		state := randomState(r, 1+r.IntN(12))
		order := sortedNames(state)
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		// "old" is no longer wanted; the upper-case name was renamed to
		// its lower-case desired one.
		owned := map[string]bool{"old": true, strings.ToUpper(order[0]): true}
		for n := range state {
			owned[n] = true
		}
		m := &detailMemory{}
		// A few checks in a row: the memory of one serves the next, and
		// the desired state moves in between.
		for check := range 4 {
			if check == 2 {
				name := order[r.IntN(len(order))]
				u := state[name]
				u.Servers = slices.Clone(u.Servers)
				u.Servers[0].Weight++
				state = state.Clone()
				state[name] = u
			}
			m.begin()
			for read := range 3 {
				mut := mutations[(round+check+read)%len(mutations)]
				body := mut.do(detailText(state, order), state, order)
				want, werr := wholeDrift(body, state, owned)
				drift := map[string]bool{}
				gerr := m.compare([]byte(body), state, owned, drift)
				var got []string
				for n := range drift {
					got = append(got, n)
				}
				slices.Sort(got)
				if (werr != nil) != (gerr != nil) || !slices.Equal(got, want) {
					t.Fatalf("round %d check %d read %d (%s): drift %v (err %v), whole parse finds %v (err %v)\nbody:\n%s",
						round, check, read, mut.name, got, gerr, want, werr, body)
				}
			}
			m.end()
		}
	}
}

// TestDetailMemoryReadsLikeParseDetail: over random states, answers and
// changes, what the memory reads of an answer is what ParseDetail of the
// whole answer returns (the same error, or the same names), except that an
// upstream confirmed from memory is only named, and then shows exactly its
// desired servers; whatever the memory holds from the checks before.
func TestDetailMemoryReadsLikeParseDetail(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	mutations := append(slices.Clone(detailMutations), []struct {
		name string
		do   func(body string, s upstream.State, order []string) string
	}{
		{"an upstream listed twice", func(b string, s upstream.State, order []string) string {
			return b + detailText(s, order[:1])
		}},
		{"a bad server line", func(b string, _ upstream.State, _ []string) string {
			return b + "bad\nserver 10.0.0.1:80 weight=x\n\n"
		}},
		{"no blank line at the end", func(b string, _ upstream.State, _ []string) string {
			return strings.TrimSuffix(b, "\n")
		}},
	}...)
	confirmed := 0
	for round := range 200 {
		state := randomState(r, 1+r.IntN(12))
		order := sortedNames(state)
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		m := &detailMemory{}
		shows := state // what nginx holds: the desired state, or one before it
		for check := range 4 {
			if check == 2 { // the desired state moves: what the memory holds is stale
				name := order[r.IntN(len(order))]
				u := state[name]
				u.Servers = slices.Clone(u.Servers)
				u.Servers[0].Weight++
				state = state.Clone()
				state[name] = u
			}
			m.begin()
			for read := range 3 {
				if r.IntN(3) == 0 { // a worker that has not taken the last change
					shows = state
				}
				mut := mutations[r.IntN(len(mutations))]
				body := mut.do(detailText(shows, order), shows, order)
				whole, werr := ParseDetail(body)
				a, err := m.read([]byte(body), state)
				where := fmt.Sprintf("round %d check %d read %d (%s)", round, check, read, mut.name)
				if werr != nil || err != nil {
					if werr == nil || err == nil || err.Error() != werr.Error() {
						t.Fatalf("%s: read: %v, ParseDetail: %v\nbody:\n%s", where, err, werr, body)
					}
					continue
				}
				if len(a.shown) != len(whole) {
					t.Fatalf("%s: read shows %v, ParseDetail %v", where, a.shown, whole)
				}
				for name, servers := range whole {
					isConfirmed, shown := a.shown[name]
					switch {
					case !shown:
						t.Fatalf("%s: read lacks %s", where, name)
					case isConfirmed:
						confirmed++
						if u, ok := state[name]; !ok || !serversMatch(servers, u) {
							t.Fatalf("%s: read confirms %s from memory, but the answer shows %v", where, name, servers)
						}
						if _, parsed := a.parsed[name]; parsed {
							t.Fatalf("%s: %s both confirmed and parsed", where, name)
						}
					case !slices.Equal(a.parsed[name], servers):
						t.Fatalf("%s: read parses %s as %v, ParseDetail as %v", where, name, a.parsed[name], servers)
					}
				}
				// The drift check remembers what matched, for the next reads.
				if err := m.compare([]byte(body), state, nil, map[string]bool{}); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			m.end()
		}
	}
	if confirmed < 1000 {
		t.Errorf("only %d upstreams confirmed from memory: the memory was hardly tested", confirmed)
	}
}

func TestDriftMemoryErrorsNameTheLine(t *testing.T) {
	state := upstream.State{"a": named("a", "10.0.0.1:80")}
	m := &detailMemory{}
	for _, tt := range []struct{ body, errHas string }{
		{"a\nserver 10.0.0.1:80 weight=2 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n\nb\nserver x\n\n", "detail line 5: server line \"server x\": want 8 fields, got 2"},
		{"a\n\na\n\n", "detail line 3: upstream a listed twice"},
	} {
		err := m.compare([]byte(tt.body), state, nil, map[string]bool{})
		if err == nil || err.Error() != tt.errHas {
			t.Errorf("body %q: err %v, want %q", tt.body, err, tt.errHas)
		}
	}
	// Listed twice, both times a section the memory knows.
	body := detailText(state, []string{"a"})
	m.begin()
	if err := m.compare([]byte(body), state, nil, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	m.end()
	m.begin()
	if err := m.compare([]byte(body+body), state, nil, map[string]bool{}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("a known section listed twice: err %v", err)
	}
}

// BenchmarkDriftCheck: one /detail answer of 1,000 upstreams × 10 servers
// compared with the desired state, parsed whole (cold) and against the
// memory of the last check (warm: nothing changed; one changed: one
// upstream differs from the memory).
func BenchmarkDriftCheck(b *testing.B) {
	state := upstream.State{}
	for i := range 1000 {
		u := upstream.Upstream{Name: fmt.Sprintf("svc-%04d", i)}
		for k := range 10 {
			u.Servers = append(u.Servers, upstream.Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, byte(1 + i/250), byte(1 + i%250)}), uint16(10000+k)),
				Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second})
		}
		state[u.Name] = u
	}
	body := detailText(state, sortedNames(state))
	warm := func() *detailMemory {
		m := &detailMemory{}
		m.begin()
		if err := m.compare([]byte(body), state, nil, map[string]bool{}); err != nil {
			b.Fatal(err)
		}
		m.end()
		return m
	}
	// run compares body with desired b.N times; forget, if set, is a
	// section taken out of the memory before each compare, so that every
	// one parses it; a nil m is a new, empty memory every time.
	run := func(b *testing.B, mem *detailMemory, desired upstream.State, body, forget string) {
		b.SetBytes(int64(len(body)))
		raw := []byte(body)
		for b.Loop() {
			m := mem
			if m == nil {
				m = &detailMemory{}
			}
			if forget != "" {
				delete(m.sections, m.digest([]byte(forget)))
			}
			drift := map[string]bool{}
			if err := m.compare(raw, desired, nil, drift); err != nil || len(drift) != 0 {
				b.Fatalf("drift %v, err %v", drift, err)
			}
		}
	}
	b.Run("cold", func(b *testing.B) { run(b, nil, state, body, "") })
	b.Run("warm", func(b *testing.B) { run(b, warm(), state, body, "") })
	b.Run("one-changed", func(b *testing.B) {
		m := warm()
		next := state.Clone()
		u := next["svc-0500"]
		u.Servers = append(slices.Clone(u.Servers), upstream.Server{Addr: netip.MustParseAddrPort("127.0.9.9:10000"), Weight: 1, MaxFails: 1, FailTimeout: 10 * time.Second})
		next[u.Name] = u
		run(b, m, next, detailText(next, sortedNames(next)), detailText(next, []string{u.Name})[:len(detailText(next, []string{u.Name}))-1])
	})
}

// TestDriftMatchesNamesCaseInsensitively: nginx shows the case of the last
// POST (or of the file after a restart), so a desired upstream shown in
// another case is held, and an owned name that folds to a desired one is
// that upstream, not a leftover to delete: after a case-only rename the
// drift check neither repairs nor deletes anything.
func TestDriftMatchesNamesCaseInsensitively(t *testing.T) {
	const A, B = "10.0.0.1:80", "10.0.0.2:80"
	show := func(name, addr string) string {
		return detailText(upstream.State{name: named(name, addr)}, []string{name})
	}
	tests := []struct {
		name    string
		desired upstream.State
		owned   []string
		body    string
		want    string
	}{
		{"desired Rn shown as rn", upstream.State{"Rn": named("Rn", A)}, []string{"rn", "Rn"}, show("rn", A), ""},
		{"desired Rn shown as Rn, rn still owned", upstream.State{"Rn": named("Rn", A)}, []string{"rn", "Rn"}, show("Rn", A), ""},
		{"desired Rn shown as RN with other servers", upstream.State{"Rn": named("Rn", A)}, []string{"rn"}, show("RN", B), "Rn"},
		{"desired Rn missing", upstream.State{"Rn": named("Rn", A)}, []string{"rn", "Rn"}, show("other", A), "Rn"},
		{"a leftover shown in another case", upstream.State{"Rn": named("Rn", A)}, []string{"Rn", "old"}, show("Rn", A) + show("OLD", B), "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owned := map[string]bool{}
			for _, n := range tt.owned {
				owned[n] = true
			}
			m := &detailMemory{}
			for check := range 2 { // cold, then with the memory of the first
				m.begin()
				drift := map[string]bool{}
				if err := m.compare([]byte(tt.body), tt.desired, owned, drift); err != nil {
					t.Fatal(err)
				}
				m.end()
				if got := strings.Join(sortedKeys(drift), ","); got != tt.want {
					t.Errorf("check %d: drift %q, want %q", check, got, tt.want)
				}
			}
			whole, err := wholeDrift(tt.body, tt.desired, owned)
			if err != nil || strings.Join(whole, ",") != tt.want {
				t.Errorf("whole parse: drift %v (%v), want %q", whole, err, tt.want)
			}
		})
	}
}

// TestReconcileAfterCaseRenameRepairsNothing: after rn → Rn the drift
// check finds nginx in step, whether it shows Rn or (a worker that has not
// seen the POST's case) rn: no repair, no DELETE, no flip-flop.
func TestReconcileAfterCaseRenameRepairsNothing(t *testing.T) {
	for _, shown := range []string{"Rn", "rn"} {
		t.Run("nginx shows "+shown, func(t *testing.T) {
			f := &fakeDyups{ups: map[string]string{"rn": named("rn", "10.0.0.1:80").Body()}}
			tg := newTarget(t, f)
			tg.Own(upstream.State{"rn": named("rn", "10.0.0.1:80")})
			desired := upstream.State{"Rn": named("Rn", "10.0.0.2:80")}
			if err := tg.Sync(context.Background(), desired); err != nil {
				t.Fatal(err)
			}
			f.detail = func(_ int, now string) string {
				return strings.Replace(now, "Rn\n", shown+"\n", 1)
			}
			f.calls = nil
			for range 3 {
				if err := tg.Reconcile(context.Background(), desired); err != nil {
					t.Fatal(err)
				}
			}
			if st := tg.Status(); len(f.calls) != 0 || st.DriftRepairs != 0 || len(st.Drift) != 0 {
				t.Errorf("after 3 drift checks: calls %v, repairs %d, drift %v; want none", f.calls, st.DriftRepairs, st.Drift)
			}
			if _, ok := f.ups["Rn"]; !ok || len(f.ups) != 1 {
				t.Errorf("nginx holds %v, want Rn", f.ups)
			}
		})
	}
}

// A drift check reports what it repairs to the engine's change history,
// and reports nothing when all is well.
func TestReconcileReportsRepairsToTheHistory(t *testing.T) {
	f := &fakeDyups{ups: map[string]string{}}
	tg := newTarget(t, f)
	var got [][]string
	tg.ReportDriftTo(func(target string, ups []string) {
		if target != tg.URL() {
			t.Errorf("reported for %q, want %q", target, tg.URL())
		}
		got = append(got, ups)
	})
	desired := upstream.State{"api": named("api", "10.0.0.1:80"), "web": named("web", "10.0.0.2:80")}
	if err := tg.Sync(context.Background(), desired); err != nil {
		t.Fatal(err)
	}
	if err := tg.Reconcile(context.Background(), desired); err != nil || len(got) != 0 {
		t.Fatalf("a check with nothing wrong reported %v (%v)", got, err)
	}
	delete(f.ups, "web") // nginx lost it
	if err := tg.Reconcile(context.Background(), desired); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || strings.Join(got[0], ",") != "web" {
		t.Fatalf("reports %v, want one of [web]", got)
	}
}
