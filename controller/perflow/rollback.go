package perflow

import (
	"context"
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
// The kernel filters the dump on the bit, and the clears go out in
// batches. Run must not be active. It returns how many flows it cleared.
func Rollback(ctx context.Context, conn Conn, mark flows.MarkBit, dirs flows.Directions) (int, error) {
	mark = markOrDefault(mark)
	if dirs&flows.Both == 0 {
		dirs = flows.Reply
	}
	out, t := oneShot(conn)
	// The kernel sends only the flows carrying the bit.
	err := conn.DumpMark(ctx, uint32(mark), uint32(mark), func(f *flows.Flow) error {
		if f.Mark&uint32(mark) == 0 {
			return nil
		}
		out.add(f, ownedDirs(f, dirs), false, mark, note{})
		return nil
	})
	out.flush()
	if err != nil {
		return t.applied, fmt.Errorf("roll back per-flow flags: %w", err)
	}
	if err := t.err(); err != nil {
		return t.applied, fmt.Errorf("clear %d of %d ctguard-flagged flows: %w", t.failed, t.applied+t.failed, err)
	}
	return t.applied, nil
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
