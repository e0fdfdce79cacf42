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
		{"small weights are nginx's own", consistent, []int{1, 2, 97}, []int{1, 2, 97}},
		{"divided by their common divisor", consistent, []int{10000, 5000}, []int{2, 1}},
		{"equal huge weights become 1 each", consistent, []int{10000, 10000, 10000}, []int{1, 1, 1}},
		{"scaled, proportions kept", consistent, []int{10000, 9999}, []int{50, 49}},
		{"scaled, never below 1, the sum kept", consistent, []int{10000, 1, 3}, []int{98, 1, 1}},
		{"more servers than units keep 1 each", consistent, slices.Repeat([]int{10000}, 150), slices.Repeat([]int{1}, 150)},
		{"plain hash keeps its weights", Balance{Method: Hash, Key: "$uri"}, []int{10000, 9999}, []int{10000, 9999}},
		{"round robin keeps its weights", Balance{}, []int{10000, 9999}, []int{10000, 9999}},
	}
	for _, c := range cases {
		u := Upstream{Name: "web", Balance: c.balance}
		for i, w := range c.weights {
			u.Servers = append(u.Servers, Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80), Weight: w})
		}
		changed := u.BoundRingWeights()
		var got []int
		sum := 0
		for _, s := range u.Servers {
			got = append(got, s.Weight)
			sum += s.Weight
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: weights %v → %v, want %v", c.name, c.weights, got, c.want)
		}
		if changed != !slices.Equal(c.weights, c.want) {
			t.Errorf("%s: reported changed=%v", c.name, changed)
		}
		if c.balance.Consistent && sum > max(RingUnits, len(c.weights)) {
			t.Errorf("%s: weights sum to %d, above RingUnits %d", c.name, sum, RingUnits)
		}
	}
}
