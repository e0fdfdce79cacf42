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
