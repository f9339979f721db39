package gate

import (
	"context"
	"errors"
	"testing"

	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/policy"
)

type fakeEngine struct {
	active   []bool
	policies int
	ran      bool
}

func (e *fakeEngine) Run(context.Context) error { e.ran = true; return nil }
func (e *fakeEngine) SetPolicies(ps []policy.Policy) error {
	e.policies = len(ps)
	return nil
}
func (e *fakeEngine) Stats() perflow.Snapshot { return perflow.Snapshot{} }
func (e *fakeEngine) SetGateActive(on bool)   { e.active = append(e.active, on) }

func TestRunnerWithoutGate(t *testing.T) {
	e := &fakeEngine{}
	var states []string
	r := NewRunner(e, nil, errors.New("EBUSY"), nil, func(s string) { states = append(states, s) })
	if st, why := r.State(); st != StateFallback || why != "EBUSY" {
		t.Errorf("state %q (%q), want fallback (EBUSY)", st, why)
	}
	if len(e.active) != 0 {
		t.Errorf("the engine was told the gate is active: %v", e.active)
	}
	if err := r.SetPolicies(make([]policy.Policy, 2)); err != nil || e.policies != 2 {
		t.Errorf("SetPolicies: %v, engine got %d", err, e.policies)
	}
	if err := r.Run(context.Background()); err != nil || !e.ran {
		t.Errorf("Run: %v, engine ran %v", err, e.ran)
	}
	if r.GateStats() != (Snapshot{}) || len(states) != 1 {
		t.Errorf("stats %+v, states %v", r.GateStats(), states)
	}
}

func TestRunnerFallbackHandsFlowsBack(t *testing.T) {
	e := &fakeEngine{}
	r := NewRunner(e, &Gate{}, nil, nil, nil)
	if st, _ := r.State(); st != StateListening || len(e.active) != 1 || !e.active[0] {
		t.Fatalf("state %q, engine told %v, want listening and active", st, e.active)
	}
	r.Fallback(errors.New("no NFQUEUE"))
	if st, why := r.State(); st != StateFallback || why != "no NFQUEUE" || e.active[len(e.active)-1] {
		t.Errorf("after Fallback: state %q (%q), engine told %v", st, why, e.active)
	}
}
