package perflow

import (
	"context"
	"fmt"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// missing returns the directions of want the flow lacks BE_LIBERAL in: the
// only ones ctguard sets (all of want when the flags are unknown). A
// direction already liberal, e.g. because the kernel set it, is never
// flagged, so the ownership mark never claims it.
func missing(f *flows.Flow, want flows.Directions) flows.Directions {
	if !f.HasFlags {
		return want
	}
	return want &^ f.Liberal()
}

// existingMatch returns the policies of sel that select f and flag existing
// flows, i.e. what a flow found by a dump at start gets.
func existingMatch(sel *selector.Selector, f *flows.Flow) selector.Result {
	return sel.Restrict(sel.Match(f))
}

// markOrDefault returns mark, or flows.DefaultMarkBit when it is 0.
func markOrDefault(mark flows.MarkBit) flows.MarkBit {
	if mark == 0 {
		return flows.DefaultMarkBit
	}
	return mark
}

// FlagExisting does, in one pass over a dump and without tracking, what the
// engine does to existing flows at start: every flow that a policy of sel
// flagging existing flows selects gets BE_LIBERAL in the wanted directions
// it lacks, with the ownership mark bit (flows.DefaultMarkBit when mark is
// 0). Updates go out in batches as the dump streams in. It returns how many
// flows it flagged; flows that vanish meanwhile are skipped.
func FlagExisting(ctx context.Context, conn Conn, sel *selector.Selector, mark flows.MarkBit) (int, error) {
	mark = markOrDefault(mark)
	out, t := oneShot(conn)
	err := conn.DumpFunc(ctx, func(f *flows.Flow) error {
		if dirs := missing(f, existingMatch(sel, f).Dirs); dirs != 0 {
			out.add(f, dirs, true, mark, note{})
		}
		return nil
	})
	out.flush()
	if err != nil {
		return t.applied, fmt.Errorf("flag existing flows: %w", err)
	}
	if err := t.err(); err != nil {
		return t.applied, fmt.Errorf("flag %d existing flows: %w", t.failed, err)
	}
	return t.applied, nil
}
