package dyups

import (
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The series that alerts depend on exist from the start (issue 16): a
// target that never synced exports last_sync_timestamp_seconds 0 ("never")
// and in_sync 0 under its target label, so that an alert on them fires
// for it instead of finding nothing. A target made again for the same URL
// (a reload) keeps the values it had.
func TestNewTargetExportsItsSeriesAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tg, err := NewTarget("http://127.0.0.1:1", withDefaults(Options{MaxAttempts: 1}), log, m)
	if err != nil {
		t.Fatal(err)
	}
	check := func(inSync, lastSync float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		vals := map[string]float64{}
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "target" && l.GetValue() == tg.URL() && s.GetGauge() != nil {
						vals[mf.GetName()] = s.GetGauge().GetValue()
					}
				}
			}
		}
		for name, want := range map[string]float64{
			"swallowkeeper_dyups_in_sync":                     inSync,
			"swallowkeeper_dyups_last_sync_timestamp_seconds": lastSync,
		} {
			got, ok := vals[name]
			if !ok {
				t.Errorf("no %s{target=%q} series; have %v", name, tg.URL(), vals)
			} else if got != want {
				t.Errorf("%s{target=%q} = %v, want %v", name, tg.URL(), got, want)
			}
		}
	}
	check(0, 0)

	m.lastSync.WithLabelValues(tg.URL()).Set(1234)
	m.inSync.WithLabelValues(tg.URL()).Set(1)
	if _, err := NewTarget("http://127.0.0.1:1", withDefaults(Options{MaxAttempts: 1}), log, m); err != nil {
		t.Fatal(err)
	}
	check(1, 1234)
}
