package bench

import (
	"testing"
	"time"
)

func TestConvergence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int, backend string) Probe {
		return Probe{Start: t0.Add(time.Duration(ms) * time.Millisecond), Backend: backend}
	}
	failed := func(ms int) Probe { return Probe{Start: t0.Add(time.Duration(ms) * time.Millisecond), Err: true} }
	quiet := 100 * time.Millisecond
	cases := []struct {
		name   string
		probes []Probe
		join   bool
		want   time.Duration
		wantOK bool
	}{
		{"a join counts at the first answer from the new instance",
			[]Probe{at(1, "a"), at(2, "b"), at(7, "c"), at(9, "a")}, true, 7 * time.Millisecond, true},
		{"a join is not done before the new instance answers",
			[]Probe{at(1, "a"), at(2, "b")}, true, 0, false},
		{"an answer from the new instance sent before the write does not count",
			[]Probe{at(-5, "c"), at(3, "a")}, true, 0, false},
		{"a failed probe is no answer from the new instance",
			[]Probe{failed(2), at(4, "c")}, true, 4 * time.Millisecond, true},
		{"a leave counts at the first probe after the last answer from the leaving instance",
			[]Probe{at(1, "c"), at(2, "a"), at(5, "c"), at(8, "b"), at(50, "a"), at(200, "b")}, false, 8 * time.Millisecond, true},
		{"a leave is not done until probes went on quietly for the quiet time",
			[]Probe{at(1, "c"), at(8, "b"), at(50, "a")}, false, 0, false},
		{"a leave with no stale answer after the write counts at the first probe",
			[]Probe{at(-3, "c"), at(1, "a"), at(150, "b")}, false, time.Millisecond, true},
		{"a leave is not done while the leaving instance answers last",
			[]Probe{at(1, "a"), at(300, "c")}, false, 0, false},
		{"probes out of order are sorted by start",
			[]Probe{at(200, "b"), at(8, "a"), at(5, "c"), at(1, "b")}, false, 8 * time.Millisecond, true},
		{"no probes, no convergence", nil, false, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := Convergence(c.probes, t0, "c", c.join, quiet)
			if got != c.want || ok != c.wantOK {
				t.Errorf("Convergence = %v, %v; want %v, %v", got, ok, c.want, c.wantOK)
			}
		})
	}
}
