package perflow

import (
	"context"
	"errors"
	"fmt"

	"github.com/ctguard/ctguard/controller/flows"
)

// Rollback clears BE_LIBERAL (both directions) and the ownership mark bit on
// every flow carrying the bit, i.e. on the flows ctguard flagged, whichever
// ctguard process did it. Flows flagged by anybody else keep their flag.
// Run must not be active. It returns how many flows it cleared.
func (e *Engine) Rollback(ctx context.Context) (int, error) {
	fs, err := e.conn.Dump(ctx)
	if err != nil {
		return 0, fmt.Errorf("dump conntrack: %w", err)
	}
	cleared := 0
	var errs []error
	for i := range fs {
		f := &fs[i]
		if f.Mark&uint32(e.mark) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return cleared, err
		}
		switch err := e.conn.ClearLiberal(f, flows.Both, e.mark); {
		case err == nil:
			cleared++
		case errors.Is(err, flows.ErrFlowGone):
		default:
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cleared, fmt.Errorf("clear %d of %d ctguard-flagged flows: %w", len(errs), cleared+len(errs), err)
	}
	return cleared, nil
}
