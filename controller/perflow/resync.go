package perflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
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
	resyncSwap                       // after a policy swap: like the start, and re-match ctguard's flows
)

// progressEvery is how often a long sweep logs its progress.
const progressEvery = 2 * time.Second

// sweep is one pass over a dump.
type sweep struct {
	kind    resyncKind
	g       *generation
	fresh   selector.Mask // policies new in g (all at start)
	seen    int
	queued  int
	cleared int
	start   time.Time
	logged  time.Time
}

// resync streams the dump and brings every flow in line with the current
// policies (see resyncFlow); updates go out in batches as the dump streams
// in. Flows that existed before an existingFlows=false policy applied are
// remembered (see preexisting) and left alone by it.
func (e *Engine) resync(ctx context.Context, kind resyncKind) error {
	if kind != resyncStart {
		e.countGlobal(Resyncs)
	}
	e.epoch++
	now := time.Now()
	s := sweep{kind: kind, g: e.gen.Load(), start: now, logged: now}
	s.fresh = selector.Mask(1)<<uint(s.g.sel.Len()) - 1
	if kind == resyncSwap && s.g.prev != nil {
		for i := range s.g.sel.Len() {
			for j := range s.g.prev.sel.Len() {
				if s.g.prev.sel.Name(j) == s.g.sel.Name(i) {
					s.fresh &^= 1 << uint(i)
				}
			}
		}
	}
	err := e.conn.DumpFunc(ctx, func(f *flows.Flow) error {
		e.resyncFlow(&s, f)
		s.seen++
		if s.seen%4096 == 0 {
			if t := time.Now(); t.Sub(s.logged) >= progressEvery {
				s.logged = t
				e.log.Info("sweeping the conntrack table", "flows", s.seen, "updates", s.queued,
					"flowsPerSecond", int(float64(s.seen)/t.Sub(s.start).Seconds()))
			}
		}
		return nil
	})
	e.flush()
	if s.cleared > 0 {
		e.log.Info("cleared ctguard's flag from flows no policy selects any more", "flows", s.cleared)
	}
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	if d := time.Since(s.start); d >= progressEvery {
		e.log.Info("swept the conntrack table", "flows", s.seen, "updates", s.queued, "seconds", d.Seconds())
	}
	for h, seen := range e.preexisting {
		if seen != e.epoch {
			delete(e.preexisting, h)
		}
	}
	return nil
}

// resyncFlow brings one dumped flow in line with the sweep's generation:
// the policies that apply to it (see applying) get the wanted directions
// it lacks; after the start, on a flow carrying ctguard's mark, directions
// ctguard may have set that no applying policy wants are cleared, with the
// mark when none of ctguard's is left. Flows that already ended (CLOSE, TIME_WAIT) are left
// as they are.
func (e *Engine) resyncFlow(s *sweep, f *flows.Flow) {
	if s.kind == resyncStart {
		e.countGlobal(FlowsSeen)
	}
	if f.HasProtoInfo && endState(f.State) {
		return
	}
	g := s.g
	r := e.applying(s, f)
	marked := f.Mark&uint32(e.mark) != 0
	if r.Policies != 0 {
		dirs := missing(f, r.Dirs)
		// Matched counts each policy's flows once: all at start, the
		// swapped-in policies' at a swap, the flows events missed later.
		counted := r.Policies
		switch s.kind {
		case resyncSwap:
			counted &= s.fresh
		case resyncLoss, resyncPeriodic:
			if marked || dirs == 0 {
				counted = 0
			}
		}
		if counted != 0 {
			e.count(g, counted, Matched)
			if dirs == 0 {
				e.count(g, counted, AlreadyLiberal)
			}
		}
		if dirs != 0 {
			switch {
			case marked && s.kind != resyncSwap:
				e.count(g, r.Policies, Reflagged)
			case !marked && s.kind != resyncStart:
				// Not at start: most flows the start flags never bring a
				// NEW event, so their entries would stay, and a later
				// connection reusing the tuple and the entry's memory
				// (hence its CTA_ID) would be skipped unflagged
				// (TestPrivilegedReusedTupleAfterStart, on 5.10). A flow
				// created during the start dump is counted twice instead.
				e.swept.add(entryHash(f))
			}
			e.out.add(f, dirs, true, e.mark, note{gen: g, pols: r.Policies})
			s.queued++
		}
	}
	if s.kind == resyncStart || !marked || !f.HasFlags {
		return // at start, ClearUnwanted ran before (see Config.OwnedDirections)
	}
	extra := g.owned & f.Liberal() &^ r.Dirs
	if extra == 0 {
		return
	}
	mark := flows.MarkBit(0) // ctguard's flag stays in a wanted direction
	if r.Dirs&f.Liberal() == 0 {
		mark = e.mark
	}
	e.out.add(f, extra, false, mark, note{})
	s.queued++
	s.cleared++
}

// applying returns the policies a sweep applies to a flow. At start (and
// for a swapped-in policy, at the swap) a policy with existingFlows=false
// leaves the flows that exist alone, for good: they are remembered by a
// hash of their tuple, zone and CTA_ID (8 bytes of key and 8 of epoch per
// flow, only for flows such a policy selects) until a dump no longer
// shows them. After a swap, a policy keeps applying to a flow carrying
// ctguard's mark that the policy of the same name selected before.
func (e *Engine) applying(s *sweep, f *flows.Flow) selector.Result {
	g := s.g
	r := g.sel.Match(f)
	restricted := g.sel.Restrict(r)
	if restricted == r {
		return r
	}
	h := entryHash(f)
	switch s.kind {
	case resyncStart:
		e.preexisting[h] = e.epoch
		return restricted
	case resyncSwap:
		var before map[string]bool
		if f.Mark&uint32(e.mark) != 0 && g.prev != nil {
			pr := g.prev.sel.Match(f)
			for i := range g.prev.sel.Len() {
				if pr.Policies.Has(i) {
					if before == nil {
						before = map[string]bool{}
					}
					before[g.prev.sel.Name(i)] = true
				}
			}
		}
		out := restricted
		for i := range g.sel.Len() {
			if r.Policies.Has(i) && !out.Policies.Has(i) && before[g.sel.Name(i)] {
				out.Policies |= 1 << uint(i)
				out.Dirs |= g.sel.Directions(i)
			}
		}
		if out != r {
			e.preexisting[h] = e.epoch
		}
		return out
	default:
		if _, old := e.preexisting[h]; old {
			e.preexisting[h] = e.epoch
			return restricted
		}
		return r
	}
}

// hashSeed keys the preexisting hashes (random per process).
var hashSeed = maphash.MakeSeed()

// entryHash identifies a conntrack entry: its original tuple, zone and
// CTA_ID (a new entry reusing the tuple almost always has another ID). It
// does not allocate.
func entryHash(f *flows.Flow) uint64 {
	var h maphash.Hash
	h.SetSeed(hashSeed)
	var b [2*16 + 2*2 + 2 + 4]byte
	s, d := f.Orig.Src.As16(), f.Orig.Dst.As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[32:], f.Orig.SrcPort)
	binary.BigEndian.PutUint16(b[34:], f.Orig.DstPort)
	binary.BigEndian.PutUint16(b[36:], f.Zone)
	binary.BigEndian.PutUint32(b[38:], f.ID)
	h.Write(b[:])
	return h.Sum64()
}

// maxSwept bounds the flows swept remembers: more than the NEW events an
// 8 MiB event socket and the reader's buffers can hold back.
const maxSwept = 1 << 16

// swept remembers the last maxSwept flows a resync flagged that carried no
// mark yet (a fixed ring of hashes and a set of at most maxSwept: about
// 3 MiB at most, nothing in steady state): their NEW event may still wait
// in the socket (a resync does not stop the event stream), and must then
// neither flag nor count them again.
type swept struct {
	ring []uint64
	pos  int
	set  map[uint64]struct{}
}

func (s *swept) add(h uint64) {
	if s.set == nil {
		s.set, s.ring = map[uint64]struct{}{}, make([]uint64, 0, maxSwept)
	}
	if _, ok := s.set[h]; ok {
		return
	}
	if len(s.ring) < maxSwept {
		s.ring = append(s.ring, h)
	} else {
		delete(s.set, s.ring[s.pos])
		s.ring[s.pos] = h
		s.pos = (s.pos + 1) % maxSwept
	}
	s.set[h] = struct{}{}
}

// take reports whether a resync flagged the entry, forgetting it.
func (s *swept) take(f *flows.Flow) bool {
	if len(s.set) == 0 {
		return false
	}
	h := entryHash(f)
	if _, ok := s.set[h]; ok {
		delete(s.set, h)
		return true
	}
	return false
}

// flush sends the outbox and logs the refused updates of the flush.
func (e *Engine) flush() {
	e.out.flush()
	if e.failures > 0 {
		e.log.Warn("flag updates refused by the kernel", "updates", e.failures)
		e.failures = 0
	}
}
