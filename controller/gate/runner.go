package gate

import (
	"context"
	"log/slog"
	"sync"

	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/policy"
)

// The states of a Runner's gate.
const (
	// StateListening: the gate listens and flags the gated policies' new
	// flows.
	StateListening = "listening"
	// StateFallback: the gate cannot run (its queue could not be bound,
	// or the kernel refused the gate rules' queue): gate policies run
	// guard rules and the engine flags their new flows.
	StateFallback = "fallback"
	// StateStopped: the gate failed while running; the engine flags new
	// flows again and the gate rules bypass the closed queue.
	StateStopped = "stopped"
)

// Engine is the per-flow engine a Runner runs the gate beside
// (*perflow.Engine).
type Engine interface {
	Run(ctx context.Context) error
	SetPolicies(ps []policy.Policy) error
	Stats() perflow.Snapshot
	SetGateActive(on bool)
}

// Runner is the per-flow engine with the gate beside it, driven as one:
// policies reach both, Run runs both, and while the gate listens the
// engine leaves the gated policies' new flows to it.
type Runner struct {
	Engine
	gate    *Gate // nil when the gate could not start
	log     *slog.Logger
	onState func(state string)

	mu     sync.Mutex
	state  string
	reason string
}

// NewRunner wraps engine with g, an open gate, or with none (g nil) because
// of why. onState (optional) hears every state change, including the first.
func NewRunner(engine Engine, g *Gate, why error, log *slog.Logger, onState func(state string)) *Runner {
	r := &Runner{Engine: engine, gate: g, log: log, onState: onState}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if g == nil {
		r.set(StateFallback, why)
		return r
	}
	engine.SetGateActive(true)
	r.set(StateListening, nil)
	return r
}

func (r *Runner) set(state string, why error) {
	r.mu.Lock()
	r.state, r.reason = state, ""
	if why != nil {
		r.reason = why.Error()
	}
	r.mu.Unlock()
	if r.onState != nil {
		r.onState(state)
	}
}

// State returns the gate's state and why it is not listening.
func (r *Runner) State() (state, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, r.reason
}

// GateStats returns the gate's counters (zero without a gate).
func (r *Runner) GateStats() Snapshot {
	if r.gate == nil {
		return Snapshot{}
	}
	return r.gate.Stats()
}

// Fallback records that the kernel refused the gate rules' queue (the
// controller installed guard rules instead): the engine takes the new
// flows back.
func (r *Runner) Fallback(why error) {
	r.Engine.SetGateActive(false)
	r.set(StateFallback, why)
}

// SetPolicies hands the policies to the gate and the engine.
func (r *Runner) SetPolicies(ps []policy.Policy) error {
	if r.gate != nil {
		if err := r.gate.SetPolicies(ps); err != nil {
			return err
		}
	}
	return r.Engine.SetPolicies(ps)
}

// Run runs the gate and the engine until ctx ends or the engine returns.
// A gate that fails hands new flows back to the engine; its rules bypass
// the queue once its socket is closed.
func (r *Runner) Run(ctx context.Context) error {
	if r.gate == nil {
		return r.Engine.Run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() { <-done }()
	defer cancel() // runs first: the gate stops with the engine
	go func() {
		defer close(done)
		err := r.gate.Run(ctx)
		r.Engine.SetGateActive(false)
		r.gate.Close()
		if err != nil && ctx.Err() == nil {
			r.log.Error("the handshake gate stopped; the event engine flags new flows again", "err", err)
			r.set(StateStopped, err)
		}
	}()
	return r.Engine.Run(ctx)
}
