// Package metric declares the daemon's Prometheus collectors in one shape,
// so that each component's declaration reads as a list of names and help
// texts. The names and help texts are part of the operations contract
// (docs/OPERATIONS.md, alert rules): the callers own them, this package only
// builds and registers the collectors.
package metric

import "github.com/prometheus/client_golang/prometheus"

// RegistryUpHelp is the help of swallowkeeper_registry_up, the one
// watch-health gauge every source exports with its own source label; the
// sources' texts must be the same for one registry to hold them all.
const RegistryUpHelp = "1 while the source's watch of its registry is healthy (connected, watching), 0 while it is not and nothing new is sent; by source (consul, etcd, zookeeper)."

// RegistryUp is the swallowkeeper_registry_up gauge of one source.
func RegistryUp(source string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "swallowkeeper_registry_up",
		Help:        RegistryUpHelp,
		ConstLabels: prometheus.Labels{"source": source},
	})
}

// Counter is a counter without labels.
func Counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

// CounterVec is a counter partitioned by labels.
func CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// Gauge is a gauge without labels.
func Gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

// GaugeVec is a gauge partitioned by labels.
func GaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// Histogram is a histogram without labels.
func Histogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
}

// HistogramVec is a histogram partitioned by labels.
func HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Register registers cs with reg; a nil reg leaves them unregistered (tests
// and one-shot commands that export nothing).
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) {
	if reg != nil {
		reg.MustRegister(cs...)
	}
}

// Bool is the gauge value of b: 1 or 0.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
