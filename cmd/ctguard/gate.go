package main

import (
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/gate"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// startGate binds the gate's queue before anything else, so the first
// table with gate rules never queues to nobody and the engine's first dump
// comes after the gate listens. When it cannot bind, gate policies fall
// back to guard rules (loudly): never a policy without protection.
func startGate(s *session, g *globals, hold time.Duration, engine *perflow.Engine, m *metrics.Metrics, initial []policy.Policy) *gate.Runner {
	onState := func(state string) {
		m.Gate.State.Set(map[string]float64{gate.StateListening: metrics.GateListening, gate.StateFallback: metrics.GateFallback}[state])
	}
	gt, err := gate.Open(gate.Config{NetNSFd: -1, Queue: g.queue, MarkBit: flows.MarkBit(g.markBit), Hold: hold, Logger: s.log, Observer: newGateObserver(m)})
	if err != nil {
		s.log.Error("the handshake gate cannot run; gate policies fall back to guard rules (invalid packets from their servers are dropped)", "queue", g.queue, "err", err)
		s.SetGate(g.queue, false, nil)
		return gate.NewRunner(engine, nil, err, s.log, onState)
	}
	if err := gt.SetPolicies(initial); err != nil {
		s.log.Warn("gate policies", "err", err) // the engine reports the same error
	}
	r := gate.NewRunner(engine, gt, nil, s.log, onState)
	s.SetGate(g.queue, true, r.Fallback)
	return r
}

// gateStatus is the gate's part of the live status.
func gateStatus(r *gate.Runner, tables *nft.Client) *controller.GateStatus {
	state, reason := r.State()
	st := &controller.GateStatus{State: state, Reason: reason, Counters: r.GateStats()}
	if q, ok := tables.QueueEncoding(); ok {
		st.Encoding = q.String()
	}
	return st
}

// gateObserver feeds the gate's measurements to Prometheus, with every
// series resolved up front (nothing allocated per packet).
type gateObserver struct {
	packets   [gate.ReceiveErrors + 1]prometheus.Counter
	batch     prometheus.Histogram
	latencies prometheus.Histogram
	hold      prometheus.Histogram
}

func newGateObserver(m *metrics.Metrics) *gateObserver {
	o := &gateObserver{batch: m.Gate.BatchSize, latencies: m.Gate.Latency, hold: m.Gate.Hold}
	for c := range o.packets {
		o.packets[c] = m.Gate.Packets.WithLabelValues(gate.Counter(c).String())
	}
	return o
}

// Count implements gate.Observer.
func (o *gateObserver) Count(c gate.Counter, n int) {
	if int(c) < len(o.packets) {
		o.packets[c].Add(float64(n))
	}
}

// Batch implements gate.Observer.
func (o *gateObserver) Batch(n int, latencies []time.Duration) {
	o.batch.Observe(float64(n))
	for _, l := range latencies {
		o.latencies.Observe(l.Seconds())
	}
}

// Hold implements gate.Observer.
func (o *gateObserver) Hold(d time.Duration) { o.hold.Observe(d.Seconds()) }
