// Package mitigate applies ctguard's workarounds inside a lab's NAT
// namespace with ctguard's own code: the controller's Run loop (journal,
// nftables batch, sysctl, per-flow engine), with a state directory of its
// own, rolled back completely when the lab run ends.
package mitigate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/lab"
	"github.com/ctguard/ctguard/policy"
)

// Names of the workarounds, as "ctguard lab --workaround" takes them.
const (
	Liberal       = "liberal"
	LiberalGlobal = "liberal-global"
	DropInvalid   = "dropInvalid"
)

// All returns every workaround, in report order.
func All(log *slog.Logger) []lab.Mitigation {
	return []lab.Mitigation{ByName(Liberal, log), ByName(LiberalGlobal, log), ByName(DropInvalid, log)}
}

// ByName returns the named workaround, or nil for an unknown name.
func ByName(name string, log *slog.Logger) lab.Mitigation {
	t := true
	p := policy.Policy{APIVersion: policy.APIVersion, Kind: policy.Kind}
	p.Metadata.Name = "lab-" + name
	p.Spec.Match.Family = policy.FamilyAny
	switch name {
	case Liberal:
		p.Spec.Workaround = policy.WorkaroundLiberal
		p.Spec.Liberal = &policy.Liberal{Scope: policy.ScopePerFlow, Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: &t}
		p.Spec.Match.NATOnly = &t
	case LiberalGlobal:
		p.Spec.Workaround = policy.WorkaroundLiberal
		p.Spec.Liberal = &policy.Liberal{Scope: policy.ScopeGlobal}
	case DropInvalid:
		p.Spec.Workaround = policy.WorkaroundDropInvalid
		p.Spec.DropInvalid = &policy.DropInvalid{Hooks: []policy.Hook{policy.HookInput}}
	default:
		return nil
	}
	return workaround{name: name, policies: []policy.Policy{p}, log: log}
}

// workaround runs ctguard's controller with fixed policies in the NAT
// namespace for the duration of one lab run.
type workaround struct {
	name     string
	policies []policy.Policy
	log      *slog.Logger
}

// Name implements lab.Mitigation.
func (w workaround) Name() string { return w.name }

// Apply implements lab.Mitigation: it starts the controller's Run loop in
// nat and returns once the policies are applied and the per-flow engine
// listens; stop ends the loop, which removes everything it applied.
func (w workaround) Apply(ctx context.Context, nat lab.Namespace) (func() error, error) {
	log := w.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "ctguard-lab-state-")
	if err != nil {
		return nil, err
	}
	k, err := controller.Open(nat.Fd(), dir, flows.DefaultMarkBit, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ready := make(chan struct{})
	engine, err := perflow.New(perflow.Config{
		Conn:    perflow.FromFlows(k.Conntrack),
		Logger:  log,
		OnReady: func() { close(ready) },
	})
	if err != nil {
		k.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() {
		done <- k.Run(runCtx, controller.RunConfig{
			Load: func() (controller.PolicySet, error) {
				return controller.PolicySet{Source: "lab", Policies: w.policies}, nil
			},
			Resync:        time.Minute,
			Engine:        engine,
			Metrics:       metrics.New(),
			CleanupOnExit: true,
		})
	}()
	stop := func() error {
		cancel()
		err := <-done
		k.Close()
		os.RemoveAll(dir)
		return err
	}
	select {
	case <-ready:
		return stop, nil
	case err := <-done:
		done <- err
		stop()
		return nil, fmt.Errorf("%s: %w", w.name, err)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}
