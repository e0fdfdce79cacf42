package consul

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

func lite(c *api.HealthCheck) checkLite {
	return checkLite{Node: c.Node, CheckID: c.CheckID, Status: c.Status, ServiceID: c.ServiceID, ServiceName: c.ServiceName, ModifyIndex: c.ModifyIndex}
}

// encode renders checks as Consul does: compact, or indented as an agent
// in dev mode answers.
func encode(t testing.TB, checks []*api.HealthCheck, pretty bool) []byte {
	t.Helper()
	if checks == nil {
		checks = []*api.HealthCheck{}
	}
	var b []byte
	var err error
	if pretty {
		b, err = json.MarshalIndent(checks, "", "    ")
	} else {
		b, err = json.Marshal(checks)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keyed(cs []checkLite) map[string]checkLite {
	m := map[string]checkLite{}
	for _, c := range cs {
		m[c.Node+"/"+c.CheckID] = c
	}
	return m
}

// diff is what apply must report, worked out from whole lists: the checks
// that left or changed, and the checks that came or changed.
func diff(before, after []checkLite) (gone, came map[string]checkLite) {
	b, a := keyed(before), keyed(after)
	gone, came = map[string]checkLite{}, map[string]checkLite{}
	for k, c := range b {
		if n, ok := a[k]; !ok || n != c {
			gone[k] = c
		}
	}
	for k, c := range a {
		if o, ok := b[k]; !ok || o != c {
			came[k] = c
		}
	}
	return gone, came
}

func newCheck(i int, r *rand.Rand) *api.HealthCheck {
	svc := fmt.Sprintf("svc-%03d", i%37)
	id := fmt.Sprintf("%s-%d", svc, i)
	c := &api.HealthCheck{Node: fmt.Sprintf("node-%d", i%3), CheckID: "service:" + id, Name: "check", Status: api.HealthPassing,
		ServiceID: id, ServiceName: svc, ServiceTags: []string{"t"}, Output: "HTTP GET http://x/health: 200 OK Output: {\"ok\":true}",
		CreateIndex: uint64(10 + i), ModifyIndex: uint64(10 + i)}
	if r.IntN(10) == 0 {
		c.Status = api.HealthCritical
	}
	return c
}

// mutate applies one random change of the kinds Consul answers with: a
// status flip, new output, a new check anywhere, a removed check.
func mutate(list []*api.HealthCheck, r *rand.Rand, next *int, index *uint64) []*api.HealthCheck {
	*index++
	switch k := r.IntN(5); {
	case k == 0 || len(list) == 0:
		c := newCheck(*next, r)
		*next++
		c.ModifyIndex = *index
		at := r.IntN(len(list) + 1)
		return slices.Insert(list, at, c)
	case k == 1: // only the output: the bytes change, the checkLite does not
		at := r.IntN(len(list))
		c := *list[at]
		c.Output = strings.Repeat("y", r.IntN(40))
		list[at] = &c
		return list
	case k == 2:
		at := r.IntN(len(list))
		return slices.Delete(list, at, at+1)
	default:
		at := r.IntN(len(list))
		c := *list[at]
		c.Status = []string{api.HealthPassing, api.HealthWarning, api.HealthCritical}[r.IntN(3)]
		c.Output = strings.Repeat("x", r.IntN(40))
		c.ModifyIndex = *index
		list[at] = &c
		return list
	}
}

func TestCheckListMatchesWholeDecode(t *testing.T) {
	for _, pretty := range []bool{false, true} {
		for seed := range uint64(40) {
			r := rand.New(rand.NewPCG(seed, 7))
			var list []*api.HealthCheck
			next := 0
			for range r.IntN(30) {
				list = append(list, newCheck(next, r))
				next++
			}
			index := uint64(1000)
			var l checkList
			var before []checkLite
			windowed := 0
			for step := range 60 {
				if step > 0 {
					n := 1 + r.IntN(3) // one to three changes per answer
					for range n {
						if len(list) == 1 && r.IntN(4) != 0 {
							list = append(list, newCheck(next, r)) // keep most lists non-empty
							next++
						}
						list = mutate(slices.Clone(list), r, &next, &index)
					}
				}
				body := encode(t, list, pretty)
				gone, came, full, err := l.apply(body)
				if err != nil {
					t.Fatalf("pretty=%v seed %d step %d: %v", pretty, seed, step, err)
				}
				if !full {
					windowed++
				}
				var want []checkLite
				for _, c := range list {
					want = append(want, lite(c))
				}
				if !slices.Equal(l.checks, want) {
					t.Fatalf("pretty=%v seed %d step %d (full=%v): list\n%v\nwant\n%v", pretty, seed, step, full, l.checks, want)
				}
				// Every span must hold its check, at the right bytes.
				for k, sp := range l.spans {
					var c checkLite
					if err := json.Unmarshal(body[sp.from:sp.to], &c); err != nil || c != l.checks[k] {
						t.Fatalf("pretty=%v seed %d step %d: span %d %v holds %q", pretty, seed, step, k, sp, body[sp.from:sp.to])
					}
				}
				// The next answer is read into this buffer: the list must
				// not keep a reference to it.
				for i := range body {
					body[i] = '#'
				}
				// gone/came may hold unchanged checks (a re-encoded neighbour),
				// but must hold every real change, with the right values.
				wg, wc := diff(before, want)
				g, c := keyed(gone), keyed(came)
				for k, v := range wg {
					if g[k] != v {
						t.Fatalf("pretty=%v seed %d step %d: change of %s not reported as gone (gone %v)", pretty, seed, step, k, gone)
					}
				}
				for k, v := range wc {
					if c[k] != v {
						t.Fatalf("pretty=%v seed %d step %d: change of %s not reported as came (came %v)", pretty, seed, step, k, came)
					}
				}
				for k, v := range c {
					if keyed(want)[k] != v {
						t.Fatalf("pretty=%v seed %d step %d: came %s = %v is not in the answer", pretty, seed, step, k, v)
					}
				}
				before = want
			}
			if windowed < 30 {
				t.Errorf("pretty=%v seed %d: only %d of 59 answers were read through the window", pretty, seed, windowed)
			}
		}
	}
}

func TestCheckListSingleChangeDecodesOneCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var list []*api.HealthCheck
	for i := range 1000 {
		list = append(list, newCheck(i, r))
	}
	var l checkList
	if _, came, full, err := l.apply(encode(t, list, true)); err != nil || !full || len(came) != 1000 {
		t.Fatalf("first answer: full=%v came=%d err=%v", full, len(came), err)
	}
	changed := *list[500]
	changed.Status, changed.ModifyIndex = api.HealthCritical, 5000
	list[500] = &changed
	gone, came, full, err := l.apply(encode(t, list, true))
	if err != nil || full {
		t.Fatalf("full=%v err=%v", full, err)
	}
	if len(gone) != 1 || len(came) != 1 || came[0] != lite(&changed) || gone[0].Status != api.HealthPassing {
		t.Fatalf("a status change decoded gone=%v came=%v", gone, came)
	}
	// A removal and an insertion. A neighbour whose bytes look alike can
	// fall in the window too (decoded, equal, no change): at most one.
	removed := lite(list[10])
	list = slices.Delete(list, 10, 11)
	gone, came, full, err = l.apply(encode(t, list, true))
	g, c := netChanges(gone, came)
	if err != nil || full || len(gone) > 2 || len(g) != 1 || g[0] != removed || len(c) != 0 {
		t.Fatalf("removal: full=%v gone=%v came=%v err=%v", full, gone, came, err)
	}
	n := newCheck(5000, r)
	list = slices.Insert(list, 900, n)
	gone, came, full, err = l.apply(encode(t, list, true))
	g, c = netChanges(gone, came)
	if err != nil || full || len(came) > 2 || len(g) != 0 || len(c) != 1 || c[0] != lite(n) {
		t.Fatalf("insertion: full=%v gone=%v came=%v err=%v", full, gone, came, err)
	}
	// Changes in the first and the last block, where no common prefix or
	// suffix of whole blocks is left, still go through the window.
	for _, at := range []int{0, len(list) - 1} {
		changed := *list[at]
		changed.Status, changed.ModifyIndex = api.HealthWarning, uint64(6000+at)
		was := lite(list[at])
		list[at] = &changed
		gone, came, full, err = l.apply(encode(t, list, true))
		if err != nil || full || len(gone) != 1 || len(came) != 1 || gone[0] != was || came[0] != lite(&changed) {
			t.Fatalf("change of check %d: full=%v, %d gone, %d came (want 1 and 1: %v → %v), err=%v", at, full, len(gone), len(came), was, lite(&changed), err)
		}
	}
	// The same answer again changes nothing.
	gone, came, full, err = l.apply(encode(t, list, true))
	if err != nil || full || len(gone)+len(came) != 0 {
		t.Fatalf("same answer: full=%v gone=%v came=%v err=%v", full, gone, came, err)
	}
}

func TestCheckListRejectsMalformedAnswers(t *testing.T) {
	small := []byte(`[{"Node":"n","CheckID":"a","Status":"passing","ModifyIndex":1},{"Node":"n","CheckID":"b","Status":"passing","ModifyIndex":2}]`)
	// An answer of several blocks, so that a bad answer that disturbed the
	// list's block hashes would show in the next compare.
	var checks []string
	for i := range 40 {
		checks = append(checks, fmt.Sprintf(`{"Node":"n","CheckID":"c%02d","Status":"passing","Output":"%s","ModifyIndex":%d}`, i, strings.Repeat("o", 60), i+1))
	}
	good := []byte("[" + strings.Join(checks, ",") + "]")
	if len(good) < 3*blockSize {
		t.Fatalf("the good answer is %d bytes, want several blocks", len(good))
	}
	for _, tc := range []struct{ name, body, want string }{
		{"empty", ``, "not a JSON array"},
		{"null", `null`, "not a JSON array"},
		{"object", `{"Node":"n"}`, "not a JSON array"},
		{"truncated", `[{"Node":"n","CheckID":"a"`, "unterminated JSON array"},
		{"truncated object", `[{"Node":"n","CheckID":"a"]`, "unterminated"},
		{"unterminated string", `[{"Node":"n]`, "unterminated"},
		{"scalar element", `[1,2]`, "not a JSON object"},
		{"missing comma", `[{"Node":"n"} {"Node":"m"}]`, "missing comma"},
		{"trailing comma", `[{"Node":"n"},]`, "trailing comma"},
		{"leading comma", `[,{"Node":"n"}]`, "unexpected comma"},
		{"bad field type", `[{"Node":"n","ModifyIndex":"x"}]`, "check 0"},
		{"bad inner JSON", `[{"Node":"n","X":[}]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l checkList
			if _, _, _, err := l.apply(good); err != nil {
				t.Fatal(err)
			}
			before := slices.Clone(l.checks)
			_, _, _, err := l.apply([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply(%q) = %v, want an error containing %q", tc.body, err, tc.want)
			}
			if !slices.Equal(l.checks, before) || l.blocks.size != len(good) {
				t.Fatalf("a malformed answer changed the list: %v", l.checks)
			}
			// The same good answer again is known as such: what the list
			// compares with was not disturbed.
			if gone, came, full, err := l.apply(good); err != nil || full || len(gone)+len(came) != 0 || len(l.checks) != 40 {
				t.Fatalf("after the bad answer: full=%v, %d gone, %d came, %d checks, err=%v", full, len(gone), len(came), len(l.checks), err)
			}
		})
	}
	var l checkList
	if _, came, _, err := l.apply([]byte("[]")); err != nil || len(came) != 0 {
		t.Fatalf("empty array: %v %v", came, err)
	}
	if _, came, full, err := l.apply(small); err != nil || len(came) != 2 || full {
		t.Fatalf("from empty to two checks: came=%v full=%v err=%v", came, full, err)
	}
	if gone, came, _, err := l.apply([]byte("[]")); err != nil || len(gone) != 2 || len(came) != 0 {
		t.Fatalf("back to empty: gone=%v came=%v err=%v", gone, came, err)
	}
}

// TestBlockDiffMatchesByteCompare: over random answers and edits, the
// range blockDiff returns is the one comparing the bytes gives, in whole
// blocks: the longest common prefix and suffix, each rounded down to a
// multiple of blockSize, the suffix cut so as not to overlap the prefix.
// It compares with the answer last kept, whatever diff saw since.
func TestBlockDiffMatchesByteCompare(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	randomBytes := func(n int) []byte {
		alphabet := "ab"[:1+r.IntN(2)] // few letters: matches run on past an edit
		if r.IntN(2) == 0 {
			alphabet = "abcdefghijklmnopqrstuvwxyz{}[],\"\n "
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return b
	}
	// size is an answer length, often near a multiple of blockSize.
	size := func() int {
		if r.IntN(2) == 0 {
			return max(0, (r.IntN(6))*blockSize+r.IntN(5)-2)
		}
		return r.IntN(6 * blockSize)
	}
	edit := func(prev []byte) []byte {
		b := slices.Clone(prev)
		switch r.IntN(7) {
		case 0: // the same answer
		case 1: // a new answer
			b = randomBytes(size())
		default: // one to three edits: a replaced, inserted or removed stretch
			for range 1 + r.IntN(3) {
				at := r.IntN(len(b) + 1)
				if r.IntN(3) == 0 { // near an end
					at = []int{0, len(b)}[r.IntN(2)]
				}
				cut := min(len(b)-at, r.IntN(3)*r.IntN(300))
				b = slices.Replace(b, at, at+cut, randomBytes(r.IntN(3)*r.IntN(300))...)
			}
		}
		return b
	}
	for seed := range 300 {
		var d blockDiff
		first := randomBytes(size())
		if _, ok := d.diff(first); ok {
			t.Fatalf("seed %d: a blockDiff that keeps nothing returned a range", seed)
		}
		d.keep()
		kept := first // what a byte compare would keep
		for step := range 40 {
			body := edit(kept)
			if r.IntN(4) == 0 {
				body = edit(body)
			}
			got, ok := d.diff(body)
			if !ok {
				t.Fatalf("seed %d step %d: no range", seed, step)
			}
			n := min(len(kept), len(body))
			pre, suf := 0, 0
			for pre < n && kept[pre] == body[pre] {
				pre++
			}
			for suf < n && kept[len(kept)-1-suf] == body[len(body)-1-suf] {
				suf++
			}
			from := pre / blockSize * blockSize
			s := min(suf/blockSize*blockSize, n-from)
			want := changedRange{from: from, oldTo: len(kept) - s, newTo: len(body) - s}
			if got != want {
				t.Fatalf("seed %d step %d: %d bytes then %d (common prefix %d, suffix %d): range %+v, want %+v",
					seed, step, len(kept), len(body), pre, suf, got, want)
			}
			same := slices.Equal(kept, body)
			if got.equal() && !same || same && len(body) >= blockSize && !got.equal() {
				t.Fatalf("seed %d step %d: %d bytes then %d, same %v: range %+v, equal() %v", seed, step, len(kept), len(body), same, got, got.equal())
			}
			refused := r.IntN(3) == 0 // an answer the list could not read: not kept
			next := slices.Clone(body)
			for i := range body { // the buffer is read into again
				body[i] = '#'
			}
			if !refused {
				d.keep()
				kept = next
			}
		}
	}
}

// netChanges drops the checks that are in both gone and came unchanged.
func netChanges(gone, came []checkLite) (g, c []checkLite) {
	for _, x := range gone {
		if !slices.Contains(came, x) {
			g = append(g, x)
		}
	}
	for _, x := range came {
		if !slices.Contains(gone, x) {
			c = append(c, x)
		}
	}
	return g, c
}

// BenchmarkCheckList: one status change in 10,000 checks, read whole and
// through the window.
func BenchmarkCheckList(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	var list []*api.HealthCheck
	for i := range 10000 {
		list = append(list, newCheck(i, r))
	}
	bodies := [2][]byte{encode(b, list, false)}
	c := *list[5000]
	c.Status = api.HealthCritical
	list[5000] = &c
	bodies[1] = encode(b, list, false)
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(bodies[0])))
		for i := 0; b.Loop(); i++ {
			var l checkList
			if _, _, _, err := l.apply(bodies[i%2]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("window", func(b *testing.B) {
		var l checkList
		if _, _, _, err := l.apply(bodies[0]); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(bodies[0])))
		for i := 0; b.Loop(); i++ {
			if _, _, full, err := l.apply(bodies[(i+1)%2]); err != nil || full {
				b.Fatal(full, err)
			}
		}
	})
}
