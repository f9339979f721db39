package main

import (
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
)

// metricsObserver feeds the per-flow engine's counters to Prometheus.
type metricsObserver struct{ m *metrics.Metrics }

// Count implements perflow.Observer.
func (o metricsObserver) Count(c perflow.Counter, policy string) {
	o.m.Flow(c, policy).Inc()
}

// FlagLatency implements perflow.Observer.
func (o metricsObserver) FlagLatency(_ string, seconds float64) {
	o.m.FlagLatency.Observe(seconds)
}
