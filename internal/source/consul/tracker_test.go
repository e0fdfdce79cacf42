package consul

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

func newTestTracker() *tracker {
	src := &Source{rules: rules, log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: newMetrics(nil, "catalog/services", "health/state/any"), spare: make(chan []byte, 1)}
	return newTracker(src)
}

// A broken answer from either watch is doubted (the engine holds every
// change) and changes nothing the tracker knows; the next good answer
// clears the doubt and is compared with the last good one.
func TestTrackerDoubtsBrokenAnswers(t *testing.T) {
	tr := newTestTracker()
	tr.onCatalog(catalogEvent{index: 5, body: []byte(`{"web":["a"],"consul":[]}`)})
	if len(tr.catalog) != 1 || !tr.dirty["web"] || len(tr.doubts) != 0 {
		t.Fatalf("first catalog: catalog %v dirty %v doubts %v", tr.catalog, tr.dirty, tr.doubts)
	}
	delete(tr.dirty, "web")

	tr.onCatalog(catalogEvent{index: 6, body: []byte(`{"web":["a"],"api`)})
	if why := tr.doubts["catalog/services"]; !strings.Contains(why, "not a map of services") {
		t.Fatalf("truncated catalog answer: doubts %v", tr.doubts)
	}
	if len(tr.catalog) != 1 || tr.catalogIdx != 5 || len(tr.dirty) != 0 {
		t.Fatalf("a broken catalog answer changed what the tracker knows: %v idx %d dirty %v", tr.catalog, tr.catalogIdx, tr.dirty)
	}
	// The same names again, at a new index: nothing to decode, but an
	// instance moved, so the checks must explain it (probe).
	tr.onCatalog(catalogEvent{index: 7, body: []byte(`{"web":["a"],"consul":[]}`)})
	if len(tr.doubts) != 0 || tr.catalogIdx != 7 || !tr.probe || len(tr.dirty) != 0 {
		t.Fatalf("same catalog at a new index: doubts %v idx %d probe %v dirty %v", tr.doubts, tr.catalogIdx, tr.probe, tr.dirty)
	}
	tr.onCatalog(catalogEvent{index: 8, body: []byte(`{"web":["a","b"],"consul":[]}`)})
	if !tr.dirty["web"] {
		t.Fatal("changed tags did not mark the service")
	}
	delete(tr.dirty, "web")

	good := []byte(`[{"Node":"n1","CheckID":"service:web-1","Status":"passing","ServiceID":"web-1","ServiceName":"web","ModifyIndex":5}]`)
	tr.onChecks(checksEvent{index: 5, body: good})
	if !tr.haveChecks || !tr.dirty["web"] || len(tr.doubts) != 0 {
		t.Fatalf("first checks: have %v dirty %v doubts %v", tr.haveChecks, tr.dirty, tr.doubts)
	}
	delete(tr.dirty, "web")
	tr.onChecks(checksEvent{index: 6, body: []byte(`[{"Node":"n1","CheckID":"service:web-1","Status":"critical",`)})
	if why := tr.doubts["health/state/any"]; !strings.Contains(why, "not a list of checks") || len(tr.dirty) != 0 {
		t.Fatalf("truncated checks answer: doubts %v dirty %v", tr.doubts, tr.dirty)
	}
	tr.onChecks(checksEvent{index: 7, body: []byte(strings.Replace(string(good), `"passing","ServiceID":"web-1","ServiceName":"web","ModifyIndex":5`, `"critical","ServiceID":"web-1","ServiceName":"web","ModifyIndex":7`, 1))})
	if len(tr.doubts) != 0 || !tr.dirty["web"] {
		t.Fatalf("good checks after a broken one: doubts %v dirty %v", tr.doubts, tr.dirty)
	}
}
