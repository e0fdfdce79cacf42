package metric

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The sources register their registry_up gauges on one registry: that only
// works while the three share the name and help and differ by the label.
func TestRegistryUpGaugesShareOneFamily(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for i, src := range []string{"consul", "etcd", "zookeeper"} {
		g := RegistryUp(src)
		g.Set(Bool(i%2 == 0))
		Register(reg, g)
	}
	want := `# HELP swallowkeeper_registry_up ` + RegistryUpHelp + `
# TYPE swallowkeeper_registry_up gauge
swallowkeeper_registry_up{source="consul"} 1
swallowkeeper_registry_up{source="etcd"} 0
swallowkeeper_registry_up{source="zookeeper"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "swallowkeeper_registry_up"); err != nil {
		t.Fatal(err)
	}
}

func TestConstructorsKeepNameHelpAndLabels(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := Counter("x_total", "Xs.")
	cv := CounterVec("y_total", "Ys, by a and b.", "a", "b")
	g := Gauge("z", "Z now.")
	gv := GaugeVec("w", "W, by a.", "a")
	h := Histogram("h_seconds", "H.", []float64{1})
	hv := HistogramVec("hv_seconds", "HV, by a.", []float64{1}, "a")
	Register(reg, c, cv, g, gv, h, hv)
	Register(nil, Counter("unregistered_total", "Not registered anywhere."))
	c.Inc()
	cv.WithLabelValues("1", "2").Add(2)
	g.Set(3)
	gv.WithLabelValues("1").Set(4)
	h.Observe(0.5)
	hv.WithLabelValues("1").Observe(2)
	want := `# HELP h_seconds H.
# TYPE h_seconds histogram
h_seconds_bucket{le="1"} 1
h_seconds_bucket{le="+Inf"} 1
h_seconds_sum 0.5
h_seconds_count 1
# HELP hv_seconds HV, by a.
# TYPE hv_seconds histogram
hv_seconds_bucket{a="1",le="1"} 0
hv_seconds_bucket{a="1",le="+Inf"} 1
hv_seconds_sum{a="1"} 2
hv_seconds_count{a="1"} 1
# HELP w W, by a.
# TYPE w gauge
w{a="1"} 4
# HELP x_total Xs.
# TYPE x_total counter
x_total 1
# HELP y_total Ys, by a and b.
# TYPE y_total counter
y_total{a="1",b="2"} 2
# HELP z Z now.
# TYPE z gauge
z 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
