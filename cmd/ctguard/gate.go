package main

import (
	"context"
	"log/slog"
	"sync"
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

// gatedEngine is the Engine "ctguard run" drives: the per-flow engine and,
// beside it, the handshake gate. Policies reach both; while the gate
// listens, the engine leaves the new flows of gated policies to it.
type gatedEngine struct {
	*perflow.Engine
	gate   *gate.Gate // nil when the gate could not start
	tables *nft.Client
	m      *metrics.Metrics
	log    *slog.Logger

	mu     sync.Mutex
	state  string // as controller.GateStatus.State
	reason string
}

// startGate binds the gate's queue before anything else, so the first
// table with gate rules never queues to nobody and the engine's first dump
// comes after the gate listens. When it cannot bind, gate policies fall
// back to guard rules (loudly): never a policy without protection.
func startGate(s *session, g *globals, engine *perflow.Engine, m *metrics.Metrics, initial []policy.Policy) *gatedEngine {
	e := &gatedEngine{Engine: engine, tables: s.Tables, m: m, log: s.log}
	gt, err := gate.Open(gate.Config{NetNSFd: -1, Queue: g.queue, MarkBit: flows.MarkBit(g.markBit), Logger: s.log, Observer: newGateObserver(m)})
	if err != nil {
		s.log.Error("the handshake gate cannot run; gate policies fall back to guard rules (invalid packets from their servers are dropped)", "queue", g.queue, "err", err)
		s.SetGate(g.queue, false, nil)
		e.setState("fallback", err.Error(), metrics.GateFallback)
		return e
	}
	if err := gt.SetPolicies(initial); err != nil {
		s.log.Warn("gate policies", "err", err) // the engine reports the same error
	}
	e.gate = gt
	s.SetGate(g.queue, true, e.noQueue)
	engine.SetGateActive(true)
	e.setState("listening", "", metrics.GateListening)
	return e
}

// noQueue is called when the kernel refused the gate rules' queue: the
// controller installs guard rules instead and the engine flags new flows.
func (e *gatedEngine) noQueue(err error) {
	e.Engine.SetGateActive(false)
	e.setState("fallback", err.Error(), metrics.GateFallback)
}

func (e *gatedEngine) setState(state, reason string, metric float64) {
	e.mu.Lock()
	e.state, e.reason = state, reason
	e.mu.Unlock()
	e.m.Gate.State.Set(metric)
}

// SetPolicies hands the policies to the gate and the engine.
func (e *gatedEngine) SetPolicies(ps []policy.Policy) error {
	if e.gate != nil {
		if err := e.gate.SetPolicies(ps); err != nil {
			return err
		}
	}
	return e.Engine.SetPolicies(ps)
}

// Run runs the gate and the engine until ctx ends. A gate that fails
// hands new flows back to the engine (its rules bypass the queue once the
// gate's socket is closed).
func (e *gatedEngine) Run(ctx context.Context) error {
	if e.gate != nil {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		defer func() { <-done }()
		defer cancel() // runs first: the gate stops with the engine
		go func() {
			defer close(done)
			err := e.gate.Run(ctx)
			e.Engine.SetGateActive(false)
			e.gate.Close()
			if err != nil && ctx.Err() == nil {
				e.log.Error("the handshake gate stopped; the event engine flags new flows again", "err", err)
				e.setState("stopped", err.Error(), metrics.GateOff)
			}
		}()
	}
	return e.Engine.Run(ctx)
}

// status is the gate's part of the live status.
func (e *gatedEngine) status() *controller.GateStatus {
	e.mu.Lock()
	st := &controller.GateStatus{State: e.state, Reason: e.reason}
	e.mu.Unlock()
	if q, ok := e.tables.QueueEncoding(); ok {
		st.Encoding = q.String()
	}
	if e.gate != nil {
		st.Counters = e.gate.Stats()
	}
	return st
}

// gateObserver feeds the gate's measurements to Prometheus, with every
// series resolved up front (nothing allocated per packet).
type gateObserver struct {
	packets   [gate.ReceiveErrors + 1]prometheus.Counter
	batch     prometheus.Histogram
	latencies prometheus.Histogram
}

func newGateObserver(m *metrics.Metrics) *gateObserver {
	o := &gateObserver{batch: m.Gate.BatchSize, latencies: m.Gate.Latency}
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
