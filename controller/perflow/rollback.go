package perflow

import (
	"context"
	"errors"
	"fmt"

	"github.com/ctguard/ctguard/controller/flows"
)

// Rollback clears what ctguard set on every flow carrying the ownership mark
// bit (flows.DefaultMarkBit when mark is 0), whichever ctguard process set
// it: BE_LIBERAL in those of dirs that are set, and the bit. dirs must be
// the union of the directions of every per-flow policy ctguard applied
// (flows.Reply when 0): ctguard only ever set missing directions among them
// (see package flows on the ownership mark and its one residual case).
// Flows without the bit, e.g. made liberal by the kernel, are left alone.
// Run must not be active. It returns how many flows it cleared.
func Rollback(ctx context.Context, conn Conn, mark flows.MarkBit, dirs flows.Directions) (int, error) {
	mark = markOrDefault(mark)
	if dirs&flows.Both == 0 {
		dirs = flows.Reply
	}
	cleared := 0
	var errs []error
	err := conn.DumpFunc(ctx, func(f *flows.Flow) error {
		if f.Mark&uint32(mark) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch err := conn.ClearLiberal(f, ownedDirs(f, dirs), mark); {
		case err == nil:
			cleared++
		case errors.Is(err, flows.ErrFlowGone):
		default:
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		return cleared, fmt.Errorf("roll back per-flow flags: %w", err)
	}
	if err := errors.Join(errs...); err != nil {
		return cleared, fmt.Errorf("clear %d of %d ctguard-flagged flows: %w", len(errs), cleared+len(errs), err)
	}
	return cleared, nil
}

// ownedDirs returns the directions of dirs to clear on a flow carrying the
// ownership mark: those set (all of dirs when the flags are unknown). None
// means clearing the mark bit only.
func ownedDirs(f *flows.Flow, dirs flows.Directions) flows.Directions {
	if !f.HasFlags {
		return dirs
	}
	return dirs & f.Liberal()
}
