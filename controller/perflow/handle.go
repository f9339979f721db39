package perflow

import (
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"golang.org/x/sys/unix"
)

// statusAssured is IPS_ASSURED: conntrack saw the TCP handshake complete
// (the flow reached ESTABLISHED).
const statusAssured = 1 << 2

// handle processes one event; now is when it was read. It keeps nothing
// per flow: the entry's flags and ctguard's mark bit, which every event
// carries, say what is done. Flag updates go to the outbox, sent when the
// event batch ends.
func (e *Engine) handle(ev *flows.Event, now time.Time) {
	f := &ev.Flow
	switch ev.Type {
	case flows.EventNew:
		e.countGlobal(FlowsSeen)
		if e.swept.take(f) {
			return // a resync flagged it first
		}
		g := e.gen.Load()
		r := g.sel.Match(f)
		if g.gated != 0 && e.gateActive.Load() {
			r = g.sel.Without(r, g.gated)
		}
		e.flagMatched(g, r, f, now)
	case flows.EventUpdate:
		g := e.gen.Load()
		if f.Mark&uint32(e.mark) == 0 {
			// Not ctguard's: only its end matters, if it is already
			// liberal where a policy wants it.
			if r := g.sel.Match(f); r.Policies != 0 && f.HasFlags && missing(f, r.Dirs) == 0 {
				e.ended(g, r.Policies, f)
			}
			return
		}
		r := g.sel.Match(f)
		if r.Policies == 0 {
			return
		}
		e.ended(g, r.Policies, f)
		// A flag the kernel lost (older kernels wipe it when the SYN-ACK
		// passes): set it again once the flow is ESTABLISHED.
		if f.HasFlags && f.State == flows.TCPEstablished {
			if dirs := missing(f, r.Dirs); dirs != 0 {
				e.count(g, r.Policies, Reflagged)
				e.out.add(f, dirs, true, e.mark, note{gen: g, pols: r.Policies})
			}
		}
	case flows.EventDestroy:
		// Ended flows were counted when they reached CLOSE or TIME_WAIT;
		// the others (timed out, deleted) end here.
		if f.Mark&uint32(e.mark) == 0 || (f.HasProtoInfo && endState(f.State)) {
			return
		}
		g := e.gen.Load()
		if r := g.sel.Match(f); r.Policies != 0 {
			e.count(g, r.Policies, Ended)
		}
	}
}

// flagMatched counts a flow the policies r select and queues the flag
// update of the wanted directions it lacks. since is when its event was
// read (zero for dumped flows).
func (e *Engine) flagMatched(g *generation, r selector.Result, f *flows.Flow, since time.Time) {
	if r.Policies == 0 {
		return
	}
	e.count(g, r.Policies, Matched)
	dirs := missing(f, r.Dirs)
	if dirs == 0 {
		e.count(g, r.Policies, AlreadyLiberal)
		return
	}
	e.out.add(f, dirs, true, e.mark, note{gen: g, pols: r.Policies, since: since})
}

// endState reports whether a flow in state s has ended: CLOSE or TIME_WAIT
// (its DESTROY comes only when the timeout expires).
func endState(s flows.TCPState) bool { return s == flows.TCPClose || s == flows.TCPTimeWait }

// ended counts a matching flow whose UPDATE shows it reaching CLOSE or
// TIME_WAIT (conntrack sends the TCP protoinfo only when the state
// changes), and as ended by reset when it reaches CLOSE after its handshake
// completed (IPS_ASSURED): the incident's signature.
func (e *Engine) ended(g *generation, pols selector.Mask, f *flows.Flow) {
	if !f.HasProtoInfo || !endState(f.State) {
		return
	}
	e.count(g, pols, Ended)
	if f.State == flows.TCPClose && f.Status&statusAssured != 0 {
		e.count(g, pols, EndedByReset)
	}
}

// answered accounts for the kernel's answer to an update of the outbox.
func (e *Engine) answered(u *flows.Update, n *note) {
	if n.pols == 0 { // a clear
		if u.Errno != 0 && u.Errno != unix.ENOENT {
			e.log.Warn("clearing ctguard's flag failed", "flow", u.Key.Orig.Src.String(), "err", u.Errno)
		}
		return
	}
	switch u.Errno {
	case 0:
		e.count(n.gen, n.pols, Flagged)
		e.count(n.gen, n.pols, Confirmed)
		if !n.since.IsZero() {
			lat := time.Since(n.since).Seconds()
			for i := range n.gen.counters {
				if n.pols.Has(i) {
					e.obs.FlagLatency(n.gen.sel.Name(i), lat)
				}
			}
		}
	case unix.ENOENT:
		e.count(n.gen, n.pols, Gone)
	default:
		e.count(n.gen, n.pols, Failed)
		e.failures++
	}
}
