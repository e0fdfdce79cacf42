package engine

import (
	"errors"
	"testing"
)

func TestReachability(t *testing.T) {
	var r Reachability
	if h := r.Health(); h.Up || h.Error != "not connected yet" {
		t.Fatalf("zero value: %+v", h)
	}
	r.Report("catalog", nil)
	r.Report("checks", nil)
	h := r.Health()
	if !h.Up || h.Error != "" || h.Since.IsZero() {
		t.Fatalf("both up: %+v", h)
	}
	r.Report("checks", errors.New("connection refused"))
	if h2 := r.Health(); h2.Up || h2.Error != "connection refused" || h2.Since.Before(h.Since) {
		t.Fatalf("one down: %+v", h2)
	}
	r.Report("catalog", nil) // the other one still fails
	if h3 := r.Health(); h3.Up {
		t.Fatalf("still one down: %+v", h3)
	}
	r.Report("checks", nil)
	if h4 := r.Health(); !h4.Up || h4.Error != "" {
		t.Fatalf("recovered: %+v", h4)
	}
}

// A connection that is gone (a service that left the catalog, with its
// long poll) no longer counts, failed or not.
func TestReachabilityForgetsAConnection(t *testing.T) {
	var r Reachability
	r.Report("catalog", nil)
	r.Report("health/service/web", errors.New("403 (ACL not found)"))
	if h := r.Health(); h.Up {
		t.Fatalf("one down: %+v", h)
	}
	r.Forget("health/service/web")
	if h := r.Health(); !h.Up || h.Error != "" {
		t.Fatalf("after the failing one is forgotten: %+v", h)
	}
	r.Forget("never-reported") // no effect
	r.Report("health/service/api", errors.New("timeout"))
	r.Forget("catalog")
	if h := r.Health(); h.Up || h.Error != "timeout" {
		t.Fatalf("forgetting a good one leaves the failing one: %+v", h)
	}
}

// Health follows the count of failing connections: a connection that fails
// again, or fails with another error, is still one; up comes back when its
// last outcome succeeds, or when it is forgotten.
func TestReachabilityCountsEachConnectionOnce(t *testing.T) {
	type step struct {
		key    string
		err    error
		forget bool
		wantUp bool
	}
	refused, timeout := errors.New("connection refused"), errors.New("timeout")
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"fails twice, recovers once", []step{{"a", nil, false, true}, {"a", refused, false, false}, {"a", refused, false, false}, {"a", nil, false, true}}},
		{"another error, same connection", []step{{"a", refused, false, false}, {"a", timeout, false, false}, {"a", nil, false, true}}},
		{"two failing, one recovers", []step{{"a", refused, false, false}, {"b", timeout, false, false}, {"a", nil, false, false}, {"b", nil, false, true}}},
		{"a failing one forgotten twice", []step{{"a", refused, false, false}, {"b", nil, false, false}, {"a", nil, true, true}, {"a", nil, true, true}, {"b", refused, false, false}}},
		{"forgotten then failing again", []step{{"a", refused, false, false}, {"a", nil, true, true}, {"a", refused, false, false}, {"a", nil, false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Reachability
			for i, s := range tc.steps {
				if s.forget {
					r.Forget(s.key)
				} else {
					r.Report(s.key, s.err)
				}
				h := r.Health()
				if h.Up != s.wantUp {
					t.Fatalf("step %d (%+v): up %v, want %v", i, s, h.Up, s.wantUp)
				}
				if !h.Up && h.Error == "" {
					t.Fatalf("step %d: down without an error", i)
				}
			}
		})
	}
}
