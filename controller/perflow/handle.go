package perflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// track is what the engine remembers of a matching flow until it ends.
type track struct {
	gen     *generation
	pols    selector.Mask
	dirs    flows.Directions
	state   flows.TCPState // last known
	pending bool           // flagged, not yet confirmed
	ended   bool           // counted as ended
}

// handle processes one event; now is when it was read.
func (e *Engine) handle(ev *flows.Event, now time.Time) {
	f := &ev.Flow
	switch ev.Type {
	case flows.EventNew:
		e.countGlobal(FlowsSeen)
		g := e.gen.Load()
		e.consider(f, g, g.sel.Match(f), now)
	case flows.EventUpdate:
		if t := e.tracked[f.Key()]; t != nil {
			e.update(f, t, false)
		}
	case flows.EventDestroy:
		e.destroy(f)
	}
}

// consider starts tracking a matching flow not tracked yet and flags it
// unless it already carries the flag. now is when its event was read (zero
// for dumped flows).
func (e *Engine) consider(f *flows.Flow, g *generation, r selector.Result, now time.Time) {
	if r.Policies == 0 {
		return
	}
	key := f.Key()
	if e.tracked[key] != nil {
		return
	}
	t := &track{gen: g, pols: r.Policies, dirs: r.Dirs, state: f.State}
	e.tracked[key] = t
	e.count(g, t.pols, Matched)
	if f.HasFlags && f.Liberal().Has(t.dirs) {
		e.count(g, t.pols, AlreadyLiberal)
		return
	}
	e.flag(f, t, now)
}

// update applies what an UPDATE event (or, in a resync, a dump) shows of a
// tracked flow: state changes, the confirmation of a pending flag, and a
// flag the kernel lost. A resync re-flags in any state; an event only once
// the flow is ESTABLISHED and no flag is pending (events older than the
// flag update can still be queued).
func (e *Engine) update(f *flows.Flow, t *track, resync bool) {
	if f.HasProtoInfo {
		e.transition(t, f.State)
	}
	if !f.HasFlags || t.ended {
		return
	}
	if f.Liberal().Has(t.dirs) {
		if t.pending {
			t.pending = false
			e.count(t.gen, t.pols, Confirmed)
		}
		return
	}
	if resync || (!t.pending && f.State == flows.TCPEstablished) {
		e.count(t.gen, t.pols, Reflagged)
		e.flag(f, t, time.Time{})
	}
}

func (e *Engine) destroy(f *flows.Flow) {
	key := f.Key()
	delete(e.preexisting, key)
	t := e.tracked[key]
	if t == nil {
		return
	}
	delete(e.tracked, key)
	if f.HasProtoInfo {
		e.transition(t, f.State)
	}
	if !t.ended {
		e.count(t.gen, t.pols, Ended)
	}
}

// transition records a flow's new TCP state. A flow ends when it reaches
// CLOSE or TIME_WAIT (its DESTROY comes only when the timeout expires), and
// ends by reset when it goes from ESTABLISHED to CLOSE.
func (e *Engine) transition(t *track, s flows.TCPState) {
	prev := t.state
	t.state = s
	if t.ended || (s != flows.TCPClose && s != flows.TCPTimeWait) {
		return
	}
	t.ended = true
	e.count(t.gen, t.pols, Ended)
	if prev == flows.TCPEstablished && s == flows.TCPClose {
		e.count(t.gen, t.pols, EndedByReset)
	}
}

// flag sends the flags-only update for t's directions with the ownership
// mark. since is when the triggering event was read (zero: no latency).
func (e *Engine) flag(f *flows.Flow, t *track, since time.Time) {
	err := e.conn.SetLiberal(f, t.dirs, e.mark)
	switch {
	case err == nil:
		t.pending = true
		e.count(t.gen, t.pols, Flagged)
		if !since.IsZero() {
			lat := time.Since(since).Seconds()
			for i := range t.gen.counters {
				if t.pols.Has(i) {
					e.obs.FlagLatency(t.gen.sel.Name(i), lat)
				}
			}
		}
	case errors.Is(err, flows.ErrFlowGone):
		delete(e.tracked, f.Key())
		e.count(t.gen, t.pols, Gone)
		e.log.Debug("flow gone before its flag update", "flow", f.String())
	default:
		t.pending = false
		e.count(t.gen, t.pols, Failed)
		e.log.Warn("flag update failed", "flow", f.String(), "err", err)
	}
}

// resyncKind says why the engine dumps the table.
type resyncKind int

const (
	resyncStart    resyncKind = iota // at start: policies with existingFlows only
	resyncLoss                       // after event loss: every policy, except on flows that existed before
	resyncPeriodic                   // on ResyncInterval: like after a loss
	resyncSwap                       // after a policy swap: like the start
)

// resyncMatch returns the policies a resync applies to an untracked flow.
func (e *Engine) resyncMatch(kind resyncKind, g *generation, f *flows.Flow) selector.Result {
	r := g.sel.Match(f)
	restricted := g.sel.Restrict(r)
	switch kind {
	case resyncStart, resyncSwap:
		if restricted != r {
			// Remember the flows some policy must leave alone for good.
			e.preexisting[f.Key()] = struct{}{}
		}
		return restricted
	default:
		if _, old := e.preexisting[f.Key()]; old {
			return restricted
		}
		return r
	}
}

// confirmByGet confirms a pending flag by reading the entry back: flows
// created while nobody listened produce no UPDATE event to confirm with.
func (e *Engine) confirmByGet(f *flows.Flow, t *track) {
	got, err := e.conn.Get(f)
	if err != nil {
		e.log.Debug("confirm flag", "flow", f.String(), "err", err)
		return
	}
	if got.HasFlags && got.Liberal().Has(t.dirs) {
		t.pending = false
		e.count(t.gen, t.pols, Confirmed)
	}
}

// resync dumps the table, flags every matching flow missing its flag,
// confirms pending flags and forgets tracked flows that ended unseen.
func (e *Engine) resync(ctx context.Context, kind resyncKind) error {
	if kind != resyncStart {
		e.countGlobal(Resyncs)
	}
	dumped, err := e.conn.Dump(ctx)
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	g := e.gen.Load()
	present := make(map[flows.Key]struct{}, len(dumped))
	for i := range dumped {
		f := &dumped[i]
		key := f.Key()
		present[key] = struct{}{}
		if t := e.tracked[key]; t != nil {
			e.update(f, t, true)
		} else {
			if kind == resyncStart {
				e.countGlobal(FlowsSeen)
			}
			e.consider(f, g, e.resyncMatch(kind, g, f), time.Time{})
		}
		if t := e.tracked[key]; t != nil && t.pending {
			e.confirmByGet(f, t)
		}
	}
	for key, t := range e.tracked {
		if _, ok := present[key]; !ok {
			delete(e.tracked, key)
			if !t.ended {
				e.count(t.gen, t.pols, Ended)
			}
		}
	}
	for key := range e.preexisting {
		if _, ok := present[key]; !ok {
			delete(e.preexisting, key)
		}
	}
	return nil
}
