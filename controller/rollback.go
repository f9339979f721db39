package controller

import (
	"context"
	"errors"
	"time"

	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
)

// RollbackResult tells what Rollback did.
type RollbackResult struct {
	// ToRevision is the revision now in force; 0 after a full rollback.
	ToRevision int
	// ClearedFlows is how many flows lost the flag ctguard had set.
	ClearedFlows int
	// ForeignTableKept is set when a table inet ctguard that ctguard did
	// not create was left in place.
	ForeignTableKept bool
}

// Rollback restores the state before the last apply: the previous
// revision's policies are applied again. With all, or when there is no
// previous revision, everything ctguard ever applied is removed (its
// table, its sysctl changes, its per-flow flags) and the journal deleted,
// leaving the box as it was before the first apply. It refuses while a
// "ctguard run" manages the state directory, as Apply does.
func (c *Controller) Rollback(ctx context.Context, all bool) (RollbackResult, error) {
	release, err := c.hold("rollback")
	if err != nil {
		return RollbackResult{}, err
	}
	defer release()
	return c.rollback(ctx, all)
}

// rollback is Rollback for a caller that holds the controller lock.
func (c *Controller) rollback(ctx context.Context, all bool) (RollbackResult, error) {
	j, unlock, err := c.loadJournal(true)
	if err != nil {
		return RollbackResult{}, err
	}
	defer unlock()
	if j.Baseline == nil {
		return RollbackResult{}, ErrNothingToRollBack
	}
	// An interrupted apply (Pending) never became a revision: rolling back
	// "the last apply" then means returning to the newest committed one.
	target := len(j.Revisions) - 2
	if j.Pending != nil {
		target = len(j.Revisions) - 1
	}
	if all || target < 0 {
		return c.rollbackAll(ctx, j)
	}
	prev := j.Revisions[target]
	j.Revisions = j.Revisions[:target]
	res, err := c.applyLocked(ctx, j, PolicySet{Source: prev.Source, Policies: prev.Policies}, applyOptions{flows: true})
	if err != nil {
		return RollbackResult{}, err
	}
	// Flags the undone revision's perFlow policies set that the previous
	// policies do not want went in the apply.
	return RollbackResult{ToRevision: res.Revision, ClearedFlows: res.ClearedStale}, nil
}

// rollbackAll removes everything ctguard applied and then the journal.
// A table inet ctguard ctguard did not create stays.
func (c *Controller) rollbackAll(ctx context.Context, j *journal.Journal) (RollbackResult, error) {
	var res RollbackResult
	j.Begin(journal.Revision{AppliedAt: time.Now().UTC(), Source: "rollback --all"})
	if err := c.store.Save(j); err != nil {
		return RollbackResult{}, wrap("journal the rollback (kernel untouched)", err)
	}
	_, err := c.readTable(j)
	switch {
	case errors.Is(err, nft.ErrForeignTable):
		// Not ctguard's: its own table is gone already.
		res.ForeignTableKept = true
		c.log.Warn("left table inet ctguard alone: ctguard did not create it", "err", err)
	case err != nil:
		return RollbackResult{}, err
	default:
		if err := c.tables.Delete(); err != nil {
			return RollbackResult{}, wrap("delete table inet ctguard", err)
		}
	}
	for name, value := range j.Baseline.Sysctls {
		current, err := c.sysctls.Get(name)
		if err != nil {
			return RollbackResult{}, wrap("read sysctl", err)
		}
		if current != value {
			if err := c.sysctls.Set(name, value); err != nil {
				return RollbackResult{}, wrap("restore sysctl", err)
			}
		}
	}
	cleared, err := c.flows.ClearOwned(ctx, flaggedDirections(j))
	if err != nil {
		return RollbackResult{}, wrap("clear per-flow flags", err)
	}
	if err := c.store.Remove(); err != nil {
		return RollbackResult{}, wrap("remove the journal", err)
	}
	c.log.Info("rolled back everything", "clearedFlows", cleared)
	res.ClearedFlows = cleared
	return res, nil
}
