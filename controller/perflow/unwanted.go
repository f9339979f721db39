package perflow

import (
	"context"
	"errors"
	"fmt"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// Unwanted counts the flows that carry ctguard's flag in a direction no
// policy wants any more.
type Unwanted struct {
	// Flows is how many flows were found (or, after ClearUnwanted, cleared).
	Flows int
	// Sample renders up to PlanSampleSize of them.
	Sample []string
}

// unwantedDirs returns the directions to clear on f: those of owned it
// carries BE_LIBERAL in that no policy of sel selecting f wants, and the
// mark bit to clear with them (0: the flow keeps it, as ctguard's flag
// stays in a wanted direction). Only flows with the ownership mark count:
// a flag the kernel or another tool set on an unmarked flow is never
// touched.
func unwantedDirs(f *flows.Flow, sel *selector.Selector, mark flows.MarkBit, owned flows.Directions) (flows.Directions, flows.MarkBit) {
	if f.Mark&uint32(mark) == 0 || !f.HasFlags {
		return 0, 0
	}
	want := flows.Directions(0)
	if sel != nil {
		want = sel.Match(f).Dirs
	}
	extra := owned & f.Liberal() &^ want
	if extra == 0 {
		return 0, 0
	}
	if want&f.Liberal() != 0 {
		return extra, 0
	}
	return extra, mark
}

// FindUnwanted reports, from a dump and changing nothing, the flows
// ClearUnwanted would clear.
func FindUnwanted(ctx context.Context, conn Conn, sel *selector.Selector, mark flows.MarkBit, owned flows.Directions) (Unwanted, error) {
	mark = markOrDefault(mark)
	var u Unwanted
	err := conn.DumpFunc(ctx, func(f *flows.Flow) error {
		if dirs, _ := unwantedDirs(f, sel, mark, owned); dirs != 0 {
			u.Flows++
			if len(u.Sample) < PlanSampleSize {
				u.Sample = append(u.Sample, f.String())
			}
		}
		return nil
	})
	if err != nil {
		return Unwanted{}, fmt.Errorf("find unwanted per-flow flags: %w", err)
	}
	return u, nil
}

// ClearUnwanted brings the flags ctguard set in line with the policies of
// sel (nil: none) wherever the policies changed outside a running engine
// (one-shot apply, rollback, a controller's start after a restart): on
// every flow with the ownership mark (flows.DefaultMarkBit when mark is 0)
// it clears BE_LIBERAL in the directions of owned (every direction ctguard
// may have set) that no policy selecting the flow wants, and the mark bit
// when no wanted direction is left flagged. Flags in wanted directions,
// and every flag of unmarked flows, stay.
func ClearUnwanted(ctx context.Context, conn Conn, sel *selector.Selector, mark flows.MarkBit, owned flows.Directions) (Unwanted, error) {
	mark = markOrDefault(mark)
	var u Unwanted
	var errs []error
	err := conn.DumpFunc(ctx, func(f *flows.Flow) error {
		dirs, clearMark := unwantedDirs(f, sel, mark, owned)
		if dirs == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch err := conn.ClearLiberal(f, dirs, clearMark); {
		case err == nil:
			u.Flows++
			if len(u.Sample) < PlanSampleSize {
				u.Sample = append(u.Sample, f.String())
			}
		case errors.Is(err, flows.ErrFlowGone):
		default:
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("clear unwanted per-flow flags: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return u, fmt.Errorf("clear unwanted flags of %d flows: %w", len(errs), err)
	}
	return u, nil
}
