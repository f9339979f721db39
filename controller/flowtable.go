package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/policy"
)

// conntrackTable is the FlowTable of one namespace's conntrack table.
type conntrackTable struct {
	conn *flows.Conn
	mark flows.MarkBit
	log  *slog.Logger
}

// engine returns a per-flow engine for the policies; it is only used for
// its one-shot methods here, never Run.
func (t conntrackTable) engine(policies []policy.Policy) (*perflow.Engine, error) {
	return perflow.New(perflow.Config{Policies: policies, Conn: perflow.FromFlows(t.conn), MarkBit: t.mark, Logger: t.log})
}

// Plan implements FlowTable.
func (t conntrackTable) Plan(ctx context.Context, policies []policy.Policy) (map[string]perflow.PlanEntry, error) {
	e, err := t.engine(policies)
	if err != nil {
		return nil, err
	}
	fs, err := t.conn.Dump(ctx)
	if err != nil {
		return nil, fmt.Errorf("dump conntrack: %w", err)
	}
	return e.Plan(fs), nil
}

// FlagExisting implements FlowTable: one pass over a dump, flagging every
// flow a policy with existingFlows selects that lacks the flag.
func (t conntrackTable) FlagExisting(ctx context.Context, policies []policy.Policy) (int, error) {
	sel, err := selector.Compile(policies)
	if err != nil {
		return 0, err
	}
	fs, err := t.conn.Dump(ctx)
	if err != nil {
		return 0, fmt.Errorf("dump conntrack: %w", err)
	}
	flagged := 0
	var errs []error
	for i := range fs {
		f := &fs[i]
		r := sel.Restrict(sel.Match(f))
		if r.Policies == 0 || f.Liberal().Has(r.Dirs) {
			continue
		}
		switch err := t.conn.SetLiberal(f, r.Dirs, t.mark); {
		case err == nil:
			flagged++
		case errors.Is(err, flows.ErrFlowGone):
		default:
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return flagged, fmt.Errorf("flag %d existing flows: %w", len(errs), err)
	}
	return flagged, nil
}

// ClearOwned implements FlowTable.
func (t conntrackTable) ClearOwned(ctx context.Context) (int, error) {
	e, err := t.engine(nil)
	if err != nil {
		return 0, err
	}
	return e.Rollback(ctx)
}

// Invalid implements FlowTable.
func (t conntrackTable) Invalid(context.Context) (uint64, error) {
	return t.conn.Stats()
}
