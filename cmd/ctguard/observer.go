package main

import (
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsObserver feeds the per-flow engine's counters to Prometheus.
type metricsObserver struct{ m *metrics.Metrics }

// Count implements perflow.Observer.
func (o metricsObserver) Count(c perflow.Counter, policy string) {
	switch c {
	case perflow.FlowsSeen:
		o.m.FlowsSeen.Inc()
	case perflow.EventsLost:
		o.m.EventsLost.Inc()
	case perflow.Resyncs:
		o.m.Resyncs.Inc()
	default:
		if vec := o.perPolicy(c); vec != nil {
			vec.WithLabelValues(policy).Inc()
		}
	}
}

// perPolicy returns the metric of a per-policy counter, nil for those
// Prometheus does not export.
func (o metricsObserver) perPolicy(c perflow.Counter) *prometheus.CounterVec {
	switch c {
	case perflow.Matched:
		return o.m.FlowsMatched
	case perflow.Flagged:
		return o.m.FlowsFlagged
	case perflow.Confirmed:
		return o.m.FlowsConfirmed
	case perflow.Failed:
		return o.m.FlowsFailed
	case perflow.Gone:
		return o.m.FlowsGone
	case perflow.Reflagged:
		return o.m.FlowsReflagged
	case perflow.Ended:
		return o.m.FlowsEnded
	case perflow.EndedByReset:
		return o.m.FlowsEndedByReset
	}
	return nil
}

// FlagLatency implements perflow.Observer.
func (o metricsObserver) FlagLatency(_ string, seconds float64) {
	o.m.FlagLatency.Observe(seconds)
}
