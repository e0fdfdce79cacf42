package upstream

import (
	"net/netip"
	"slices"
	"testing"
)

func TestBoundRingWeights(t *testing.T) {
	consistent := Balance{Method: Hash, Key: "$remote_addr", Consistent: true}
	cases := []struct {
		name    string
		balance Balance
		weights []int
		want    []int
	}{
		{"weights up to the bound are nginx's own", consistent, []int{1, 2, 10}, []int{1, 2, 10}},
		{"each weight above the bound counts as the bound", consistent, []int{10000, 5000, 3}, []int{10, 10, 3}},
		{"plain hash keeps its weights", Balance{Method: Hash, Key: "$uri"}, []int{10000, 9999}, []int{10000, 9999}},
		{"round robin keeps its weights", Balance{}, []int{10000, 9999}, []int{10000, 9999}},
	}
	for _, c := range cases {
		u := upstreamOfWeights(c.balance, c.weights...)
		changed := u.BoundRingWeights()
		if got := weightsOf(u); !slices.Equal(got, c.want) {
			t.Errorf("%s: weights %v → %v, want %v", c.name, c.weights, got, c.want)
		}
		if changed != !slices.Equal(c.weights, c.want) {
			t.Errorf("%s: reported changed=%v", c.name, changed)
		}
	}
}

// TestBoundRingWeightsKeepEachServersOwn: a server joining or leaving
// changes no other server's bounded weight, so no other server's ring
// points (and keys) move. Scaling the whole set into a budget did: three
// servers of weight 50 became 1,1,1 and, with a fourth of weight 40, 5,5,5,4.
func TestBoundRingWeightsKeepEachServersOwn(t *testing.T) {
	consistent := Balance{Method: Hash, Key: "$remote_addr", Consistent: true}
	for _, c := range []struct{ before, after []int }{
		{[]int{50, 50, 50}, []int{50, 50, 50, 40}},
		{[]int{10000, 5000, 3}, []int{10000, 5000, 3, 7}},
		{[]int{2, 3, 4}, []int{2, 3, 4, 10000}},
	} {
		b, a := upstreamOfWeights(consistent, c.before...), upstreamOfWeights(consistent, c.after...)
		b.BoundRingWeights()
		a.BoundRingWeights()
		if got, want := weightsOf(a)[:len(c.before)], weightsOf(b); !slices.Equal(got, want) {
			t.Errorf("weights %v then %v: the staying servers' bounded weights %v → %v", c.before, c.after, want, got)
		}
	}
}

func upstreamOfWeights(b Balance, weights ...int) Upstream {
	u := Upstream{Name: "web", Balance: b}
	for i, w := range weights {
		u.Servers = append(u.Servers, Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80), Weight: w})
	}
	return u
}

func weightsOf(u Upstream) []int {
	var out []int
	for _, s := range u.Servers {
		out = append(out, s.Weight)
	}
	return out
}
