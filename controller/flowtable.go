package controller

import (
	"context"
	"log/slog"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/policy"
)

// conntrackTable is the FlowTable of one namespace's conntrack table, over
// the per-flow engine's one-shot functions.
type conntrackTable struct {
	conn *flows.Conn
	mark flows.MarkBit
	log  *slog.Logger
}

// Plan implements FlowTable.
func (t conntrackTable) Plan(ctx context.Context, policies []policy.Policy) (map[string]perflow.PlanEntry, error) {
	sel, err := selector.Compile(policies)
	if err != nil {
		return nil, err
	}
	return perflow.Plan(ctx, perflow.FromFlows(t.conn), sel)
}

// FlagExisting implements FlowTable: what the engine does to existing flows
// at start, in one pass over a dump.
func (t conntrackTable) FlagExisting(ctx context.Context, policies []policy.Policy) (int, error) {
	sel, err := selector.Compile(policies)
	if err != nil {
		return 0, err
	}
	return perflow.FlagExisting(ctx, perflow.FromFlows(t.conn), sel, t.mark)
}

// FindUnwanted implements FlowTable.
func (t conntrackTable) FindUnwanted(ctx context.Context, policies []policy.Policy, owned flows.Directions) (perflow.Unwanted, error) {
	sel, err := selector.Compile(policies)
	if err != nil {
		return perflow.Unwanted{}, err
	}
	return perflow.FindUnwanted(ctx, perflow.FromFlows(t.conn), sel, t.mark, owned)
}

// ClearUnwanted implements FlowTable.
func (t conntrackTable) ClearUnwanted(ctx context.Context, policies []policy.Policy, owned flows.Directions) (perflow.Unwanted, error) {
	sel, err := selector.Compile(policies)
	if err != nil {
		return perflow.Unwanted{}, err
	}
	u, err := perflow.ClearUnwanted(ctx, perflow.FromFlows(t.conn), sel, t.mark, owned)
	if u.Flows > 0 {
		t.log.Info("cleared ctguard's per-flow flags no policy wants any more", "flows", u.Flows)
	}
	return u, err
}

// ClearOwned implements FlowTable (perflow.Rollback: dirs 0 means reply).
func (t conntrackTable) ClearOwned(ctx context.Context, dirs flows.Directions) (int, error) {
	n, err := perflow.Rollback(ctx, perflow.FromFlows(t.conn), t.mark, dirs)
	if n > 0 {
		t.log.Info("cleared ctguard's per-flow flags", "flows", n, "directions", dirs.String())
	}
	return n, err
}

// Invalid implements FlowTable.
func (t conntrackTable) Invalid(context.Context) (uint64, error) {
	return t.conn.Stats()
}
