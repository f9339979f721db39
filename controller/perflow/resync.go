package perflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// resyncKind says why the engine dumps the table; a later kind covers an
// earlier one when resyncs are merged.
type resyncKind int

const (
	resyncStart    resyncKind = iota // at start: policies with existingFlows only
	resyncLoss                       // after event loss: every policy, except on flows that existed before
	resyncPeriodic                   // on ResyncInterval: like after a loss
	resyncSwap                       // after a policy swap: like the start, and re-match tracked flows
)

// preexistingFlow is a flow some policy must leave alone for good: it existed
// before that policy applied and the policy does not flag existing flows.
type preexistingFlow struct {
	id   uint32 // the entry's CTA_ID
	seen uint64 // the last resync whose dump showed it
}

// resync dumps the table and handles each flow as the dump streams in (see
// resyncFlow), then forgets the tracked flows the dump no longer showed:
// they ended without events.
func (e *Engine) resync(ctx context.Context, kind resyncKind) error {
	if kind != resyncStart {
		e.countGlobal(Resyncs)
	}
	e.epoch++
	g := e.gen.Load()
	released := 0
	err := e.conn.DumpFunc(ctx, func(f *flows.Flow) error {
		if e.resyncFlow(kind, g, f) {
			released++
		}
		return nil
	})
	if released > 0 {
		e.log.Info("cleared ctguard's flag from flows no policy selects any more", "flows", released)
	}
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	for key, t := range e.tracked {
		if t.seen != e.epoch {
			e.retire(key)
		}
	}
	for key, p := range e.preexisting {
		if p.seen != e.epoch {
			delete(e.preexisting, key)
		}
	}
	return nil
}

// resyncFlow brings one dumped flow in line with generation g: a tracked
// flow is re-flagged if it lost its flag and its pending flag confirmed; an
// untracked flow the policies select is tracked and flagged. After a swap,
// tracked flows are matched again first (see rematch), and a flow carrying
// ctguard's mark that no policy selects any more loses what ctguard set. It
// reports whether it cleared such a flow.
func (e *Engine) resyncFlow(kind resyncKind, g *generation, f *flows.Flow) (released bool) {
	key := f.Key()
	if p, ok := e.preexisting[key]; ok && sameEntry(p.id, f.ID) {
		p.seen = e.epoch
		e.preexisting[key] = p
	}
	t := e.lookup(f)
	owned := flows.Directions(0)
	if t != nil && kind == resyncSwap && t.gen != g {
		owned = t.owned
		t = e.rematch(f, g, t)
	}
	if t != nil {
		t.seen = e.epoch
		e.update(f, t, true)
	} else {
		if kind == resyncStart {
			e.countGlobal(FlowsSeen)
		}
		r := e.resyncMatch(kind, g, f)
		if t = e.startTracking(f, g, r, time.Time{}); t != nil {
			t.seen, t.fromDump = e.epoch, true
		} else if kind == resyncSwap {
			released = e.release(f, g, owned)
		}
	}
	if t := e.tracked[key]; t != nil && t.pending {
		e.confirmByGet(f, t)
	}
	return released
}

// resyncMatch returns the policies a resync applies to an untracked flow.
func (e *Engine) resyncMatch(kind resyncKind, g *generation, f *flows.Flow) selector.Result {
	r := g.sel.Match(f)
	restricted := g.sel.Restrict(r)
	key := f.Key()
	switch kind {
	case resyncStart, resyncSwap:
		if restricted != r {
			// Remember the flows some policy must leave alone for good.
			e.preexisting[key] = preexistingFlow{id: f.ID, seen: e.epoch}
		}
		return restricted
	default:
		if p, old := e.preexisting[key]; old && sameEntry(p.id, f.ID) {
			return restricted
		}
		return r
	}
}

// rematch moves a tracked flow to the swapped-in generation g. The policies
// that applied to it before (by name) go on applying; the other policies
// selecting it apply only if they flag existing flows (for them the flow
// existed at the swap). Directions ctguard set that no policy wants any
// more are cleared. A flow no policy applies to any more is no longer
// tracked (nil).
func (e *Engine) rematch(f *flows.Flow, g *generation, t *track) *track {
	before := map[string]bool{}
	for i := range t.gen.sel.Len() {
		if t.pols.Has(i) {
			before[t.gen.sel.Name(i)] = true
		}
	}
	full := g.sel.Match(f)
	var r selector.Result
	var added selector.Mask
	for i := range g.sel.Len() {
		name := g.sel.Name(i)
		if !full.Policies.Has(i) || !(before[name] || g.sel.ExistingFlows(i)) {
			continue
		}
		r.Policies |= 1 << uint(i)
		r.Dirs |= g.sel.Directions(i)
		if !before[name] {
			added |= 1 << uint(i)
		}
	}
	key := f.Key()
	if r.Policies == 0 {
		delete(e.tracked, key)
		if full.Policies != 0 {
			e.preexisting[key] = preexistingFlow{id: f.ID, seen: e.epoch}
		}
		return nil
	}
	t.gen, t.pols, t.dirs = g, r.Policies, r.Dirs
	e.count(g, added, Matched)
	if extra := ownedDirs(f, t.owned&^r.Dirs); extra != 0 {
		mark := flows.MarkBit(0) // the flow stays ctguard's
		if t.owned&r.Dirs == 0 {
			mark = e.mark // ctguard set nothing else on it
		}
		switch err := e.conn.ClearLiberal(f, extra, mark); {
		case err == nil:
			t.owned &^= extra
		case errors.Is(err, flows.ErrFlowGone):
		default:
			e.log.Warn("clearing directions no policy wants failed", "flow", f.String(), "err", err)
		}
	}
	return t
}

// release clears what ctguard set on a flow carrying its mark that no
// policy of g selects: owned, the directions this engine set (when known),
// or else the directions of every policy ctguard may have applied, and the
// mark bit. It reports whether it cleared the flow.
func (e *Engine) release(f *flows.Flow, g *generation, owned flows.Directions) bool {
	if f.Mark&uint32(e.mark) == 0 || g.sel.Match(f).Policies != 0 {
		return false
	}
	if owned == 0 {
		owned = g.owned
	}
	switch err := e.conn.ClearLiberal(f, ownedDirs(f, owned), e.mark); {
	case err == nil:
		return true
	case errors.Is(err, flows.ErrFlowGone):
	default:
		e.log.Warn("clearing the flag of a flow no policy selects failed", "flow", f.String(), "err", err)
	}
	return false
}

// confirmByGet confirms a pending flag by reading the entry back: flows
// created while nobody listened produce no UPDATE event to confirm with.
func (e *Engine) confirmByGet(f *flows.Flow, t *track) {
	got, err := e.conn.Get(f)
	if err != nil {
		e.log.Debug("confirm flag", "flow", f.String(), "err", err)
		return
	}
	if missing(&got, t.dirs) == 0 {
		t.pending = false
		e.count(t.gen, t.pols, Confirmed)
	}
}
