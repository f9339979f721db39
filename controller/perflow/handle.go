package perflow

import (
	"errors"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// track is what the engine remembers of a matching flow until it ends.
type track struct {
	gen   *generation
	pols  selector.Mask
	dirs  flows.Directions // wanted
	owned flows.Directions // set by this engine
	id    uint32           // the entry's CTA_ID (0: unknown)
	state flows.TCPState   // last known
	seen  uint64           // the last resync whose dump showed it
	// fromDump: a dump started the track and no event was seen since.
	fromDump bool
	pending  bool // flagged, not yet confirmed
	ended    bool // counted as ended
}

// sameEntry reports whether two CTA_IDs can be the same conntrack entry (0
// means unknown). Different IDs are different entries; equal ones are not
// proof: the ID hashes the tuple and the entry's address, which a new entry
// may reuse.
func sameEntry(a, b uint32) bool { return a == 0 || b == 0 || a == b }

// handle processes one event; now is when it was read.
func (e *Engine) handle(ev *flows.Event, now time.Time) {
	f := &ev.Flow
	switch ev.Type {
	case flows.EventNew:
		e.countGlobal(FlowsSeen)
		key := f.Key()
		if t := e.tracked[key]; t != nil && t.fromDump && t.seen == e.epoch && t.id != 0 && t.id == f.ID {
			// The entry the last dump showed, created while the dump ran:
			// the dump's view is the newer one. (Were it a new entry
			// reusing the tuple and the memory, hence the CTA_ID, of one
			// that ended unseen, its UPDATE events would re-flag it once
			// ESTABLISHED, as after an older kernel wiped the flag.)
			t.fromDump = false
			return
		}
		// Otherwise a NEW is a new entry: it replaces whatever the engine
		// knew under its tuple, which ended unseen (flows found by a dump
		// produce no events at all, not even DESTROY), and is matched
		// afresh.
		e.retire(key)
		delete(e.preexisting, key)
		g := e.gen.Load()
		r := g.sel.Match(f)
		if g.gated != 0 && e.gateActive.Load() {
			r = g.sel.Without(r, g.gated)
		}
		e.startTracking(f, g, r, now)
	case flows.EventUpdate:
		if t := e.lookup(f); t != nil {
			t.fromDump = false
			e.update(f, t, false)
		}
	case flows.EventDestroy:
		e.destroy(f)
	}
}

// lookup returns the track of f's entry, retiring a stale track of an older
// entry with the same tuple.
func (e *Engine) lookup(f *flows.Flow) *track {
	key := f.Key()
	t := e.tracked[key]
	if t == nil || sameEntry(t.id, f.ID) {
		return t
	}
	e.retire(key)
	return nil
}

// retire forgets the track under key, counting it as ended.
func (e *Engine) retire(key flows.Key) {
	t := e.tracked[key]
	if t == nil {
		return
	}
	delete(e.tracked, key)
	if !t.ended {
		e.count(t.gen, t.pols, Ended)
	}
}

// startTracking starts tracking a flow the policies r select, replacing any
// track of its tuple, and flags the wanted directions it lacks. now is when
// its event was read (zero for dumped flows). It returns the track, nil
// when nothing selects the flow or it vanished.
func (e *Engine) startTracking(f *flows.Flow, g *generation, r selector.Result, now time.Time) *track {
	if r.Policies == 0 {
		return nil
	}
	t := &track{gen: g, pols: r.Policies, dirs: r.Dirs, id: f.ID, state: f.State}
	e.tracked[f.Key()] = t
	e.count(g, t.pols, Matched)
	if missing(f, t.dirs) == 0 {
		e.count(g, t.pols, AlreadyLiberal)
		return t
	}
	e.flag(f, t, now)
	return e.tracked[f.Key()] // nil when the flow was gone
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
	if missing(f, t.dirs) == 0 {
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
	if p, ok := e.preexisting[key]; ok && sameEntry(p.id, f.ID) {
		delete(e.preexisting, key)
	}
	t := e.tracked[key]
	if t == nil || !sameEntry(t.id, f.ID) {
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

// flag sends the flags-only update for the wanted directions the flow
// lacks, with the ownership mark. since is when the triggering event was
// read (zero: no latency).
func (e *Engine) flag(f *flows.Flow, t *track, since time.Time) {
	dirs := missing(f, t.dirs)
	err := e.conn.SetLiberal(f, dirs, e.mark)
	switch {
	case err == nil:
		t.pending = true
		t.owned |= dirs
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
