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
