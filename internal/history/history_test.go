package history

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestRingKeepsTheLastN(t *testing.T) {
	tests := []struct {
		size, add int
		want      []string // details, oldest first
	}{
		{size: 0, add: 3, want: nil},
		{size: 3, add: 0, want: nil},
		{size: 3, add: 2, want: []string{"0", "1"}},
		{size: 3, add: 3, want: []string{"0", "1", "2"}},
		{size: 3, add: 4, want: []string{"1", "2", "3"}},
		{size: 3, add: 7, want: []string{"4", "5", "6"}},
		{size: 1, add: 5, want: []string{"4"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("size %d add %d", tt.size, tt.add), func(t *testing.T) {
			r := NewRing(tt.size)
			for i := range tt.add {
				r.Add(Event{Detail: fmt.Sprint(i)})
			}
			var got []string
			for _, e := range r.Events() {
				got = append(got, e.Detail)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("events %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRingEventsIsACopy(t *testing.T) {
	r := NewRing(2)
	r.Add(Event{Detail: "a"})
	ev := r.Events()
	ev[0].Detail = "changed"
	if got := r.Events()[0].Detail; got != "a" {
		t.Errorf("the ring holds %q after its copy was changed, want a", got)
	}
}

func TestTimeline(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	type rec struct {
		min, n int
	}
	tests := []struct {
		name   string
		max    int
		recs   []rec
		now    int // minutes
		want   []rec
		expire bool // Expire(now) before reading
	}{
		{"one point", 0, []rec{{0, 3}}, 10, []rec{{0, 3}}, false},
		{"same count twice is one point", 0, []rec{{0, 3}, {5, 3}}, 10, []rec{{0, 3}}, false},
		{"changes in the window", 0, []rec{{0, 3}, {5, 2}, {9, 4}}, 10, []rec{{0, 3}, {5, 2}, {9, 4}}, false},
		{"the last point before the window stays", 0, []rec{{0, 3}, {10, 2}, {40, 4}, {80, 5}}, 90, []rec{{10, 2}, {40, 4}, {80, 5}}, false},
		{"read later: old points go", 0, []rec{{0, 3}, {10, 2}}, 200, []rec{{10, 2}}, false},
		{"at most MaxPoints", 2, []rec{{0, 1}, {1, 2}, {2, 3}, {3, 4}}, 5, []rec{{2, 3}, {3, 4}}, false},
		{"removed long ago: expired", 0, []rec{{0, 3}, {1, 0}}, 200, nil, true},
		{"removed lately: kept", 0, []rec{{0, 3}, {50, 0}}, 60, []rec{{0, 3}, {50, 0}}, true},
		{"still there long after: kept", 0, []rec{{0, 3}}, 200, []rec{{0, 3}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := Timeline{Window: time.Hour, MaxPoints: tt.max}
			for _, r := range tt.recs {
				tl.Record("web", at(r.min), r.n)
			}
			if tt.expire {
				tl.Expire(at(tt.now))
			}
			var got []rec
			for _, p := range tl.Series("web", at(tt.now)) {
				got = append(got, rec{int(p.At.Sub(t0) / time.Minute), p.Servers})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("series %v, want %v", got, tt.want)
			}
			if all, _ := tl.All(at(tt.now)).Get("web"); len(all) != len(tt.want) {
				t.Errorf("All has %d points for web, want %d", len(all), len(tt.want))
			}
		})
	}
}

// Update gives what All gives for the upstreams recorded since the last
// answer, keeps the others' series from that answer as they were, and
// never changes the answer it starts from.
func TestTimelineUpdateCopiesOnlyWhatChanged(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	tl := &Timeline{Window: time.Hour, MaxPoints: 10}
	tl.Record("web", t0, 2)
	tl.Record("api", t0, 3)
	first := tl.Update(Published{}, t0) // none yet: every series
	if f := first.all(); len(f) != 2 || f["web"][0].Servers != 2 || f["api"][0].Servers != 3 {
		t.Fatalf("first answer: %v", f)
	}
	tl.Record("web", t0.Add(time.Minute), 4)
	tl.Record("new", t0.Add(time.Minute), 1)
	second := tl.Update(first, t0.Add(time.Minute))
	if want := tl.All(t0.Add(time.Minute)); !reflect.DeepEqual(second.all(), want.all()) || !slices.Equal(second.Names(), []string{"api", "new", "web"}) {
		t.Fatalf("Update %v, All %v", second.all(), want.all())
	}
	if f := first.all(); len(f) != 2 || len(f["web"]) != 1 {
		t.Fatalf("Update changed the answer it started from: %v", f)
	}
	a1, _ := first.Get("api")
	a2, _ := second.Get("api")
	if &a2[0] != &a1[0] {
		t.Error("an untouched series was copied again")
	}
	// Nothing recorded since All: Update gives the same series.
	third := tl.Update(second, t0.Add(2*time.Minute))
	if !reflect.DeepEqual(third.all(), second.all()) {
		t.Fatalf("nothing recorded: %v, want %v", third.all(), second.all())
	}
}

// all is every series of p by name, a copy, for comparing answers.
func (p Published) all() map[string][]Point {
	out := map[string][]Point{}
	for _, name := range p.Names() {
		out[name], _ = p.Get(name)
	}
	return out
}
