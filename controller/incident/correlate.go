// Package incident turns the packets the evidence rules log into incidents:
// one per connection the box made somebody reset. It pairs the invalid
// segment a server sent (seen on input, or on forward in the DNAT case)
// with the reset that followed it (the box's own RST on output, or in the
// DNAT case the client's RST on forward), names the client behind the NAT
// from the flow's conntrack entry, and says which policies cover the flow.
// Everything here is pure but the Source it is given.
package incident

import (
	"net/netip"
	"time"

	"github.com/ctguard/ctguard/controller/evidence"
)

// Defaults of the Correlator.
const (
	// DefaultWindow is how long an invalid segment waits for its reset.
	DefaultWindow = 2 * time.Second
	// DefaultPending bounds the invalid segments waiting for a reset.
	DefaultPending = 4096
)

// Reset is a reset paired with the invalid segment that caused it, as far
// as the log shows them.
type Reset struct {
	// Time is when the reset was logged.
	Time time.Time
	// ByBox is true for the box's own RST (output hook), false for a RST
	// the box forwarded (the client's answer in the DNAT case).
	ByBox bool
	// Server is the peer that sent the invalid segment and got the RST;
	// Peer the other end as the packets carry it: the box's address and
	// NAT port (SNAT) or the client (DNAT).
	Server, Peer netip.AddrPort
	// RST is the reset.
	RST evidence.Segment
	// Stray is the invalid segment, when the log holds it (StrayHook is
	// then input or forward); the evidence rules' rate limit can leave it
	// out.
	Stray     *evidence.Segment
	StrayHook evidence.Hook
	// StrayInIf is the interface index the invalid segment arrived on.
	StrayInIf uint32
}

// key identifies a connection by the invalid segment's addresses.
type key struct{ server, peer netip.AddrPort }

// pending is an invalid segment waiting for its reset.
type pending struct {
	seg  evidence.Segment
	hook evidence.Hook
	inIf uint32
	at   time.Time
}

// Correlator pairs invalid segments with the resets that follow them. It
// keeps at most a bounded number of unpaired segments for a bounded time.
// Not safe for concurrent use.
type Correlator struct {
	// Window and Max bound the unpaired segments (DefaultWindow,
	// DefaultPending when zero).
	Window time.Duration
	Max    int

	pending    map[key]pending
	lastExpiry time.Time
	// reported holds when each connection's last reset was reported: a
	// connection is reported once per Window, however many RSTs it gets
	// (a retransmitted segment, two tables logging to one group).
	reported map[key]time.Time
	// Unpaired counts invalid segments no reset followed: a mitigation
	// dropped them, the stack ignored them, or the box's answer was no
	// reset. Evicted counts those pushed out while Max were waiting.
	Unpaired, Evicted uint64
	// Repeats counts resets of a connection already reported.
	Repeats uint64
}

// Add takes one logged packet; it returns the reset it completes, if any.
// Packets of the input and forward hooks are invalid segments, except a
// forwarded RST answering one (DNAT: the client resets the server); a RST
// on the output hook is the box's own.
func (c *Correlator) Add(p evidence.Packet) (Reset, bool) {
	if !p.OK {
		return Reset{}, false
	}
	if c.pending == nil {
		c.pending, c.reported = map[key]pending{}, map[key]time.Time{}
	}
	c.expire(p.Time)
	s := p.Segment
	switch p.Hook {
	case evidence.HookOutput:
		if !s.RST() {
			return Reset{}, false
		}
		return c.pair(p, true)
	case evidence.HookInput, evidence.HookForward:
		if p.Hook == evidence.HookForward && s.RST() {
			if _, ok := c.pending[key{server: s.Dst, peer: s.Src}]; ok {
				return c.pair(p, false)
			}
		}
		c.hold(key{server: s.Src, peer: s.Dst}, pending{seg: s, hook: p.Hook, inIf: p.InIf, at: p.Time})
	}
	return Reset{}, false
}

// pair builds the reset of p with the invalid segment it answers, if
// held; false for a connection reported less than a Window ago.
func (c *Correlator) pair(p evidence.Packet, byBox bool) (Reset, bool) {
	k := key{server: p.Segment.Dst, peer: p.Segment.Src}
	st, held := c.pending[k]
	delete(c.pending, k)
	if at, ok := c.reported[k]; ok && p.Time.Sub(at) <= c.window() {
		c.Repeats++
		return Reset{}, false
	}
	if len(c.reported) >= c.max() {
		c.forgetOldestReport()
	}
	c.reported[k] = p.Time
	r := Reset{Time: p.Time, ByBox: byBox, Server: k.server, Peer: k.peer, RST: p.Segment}
	if held {
		seg := st.seg
		r.Stray, r.StrayHook, r.StrayInIf = &seg, st.hook, st.inIf
	}
	return r, true
}

// forgetOldestReport makes room in reported.
func (c *Correlator) forgetOldestReport() {
	var oldest key
	var at time.Time
	for k, v := range c.reported {
		if at.IsZero() || v.Before(at) {
			oldest, at = k, v
		}
	}
	delete(c.reported, oldest)
}

// hold keeps an invalid segment, the newest per connection, evicting the
// oldest one when Max are held.
func (c *Correlator) hold(k key, p pending) {
	if _, ok := c.pending[k]; !ok && len(c.pending) >= c.max() {
		var oldest key
		var at time.Time
		for k, v := range c.pending {
			if at.IsZero() || v.at.Before(at) {
				oldest, at = k, v.at
			}
		}
		delete(c.pending, oldest)
		c.Evicted++
	}
	c.pending[k] = p
}

// expire forgets invalid segments and reports older than Window, checking
// at most ten times a Window.
func (c *Correlator) expire(now time.Time) {
	w := c.window()
	if now.Sub(c.lastExpiry) < w/10 {
		return
	}
	c.lastExpiry = now
	for k, v := range c.pending {
		if now.Sub(v.at) > w {
			delete(c.pending, k)
			c.Unpaired++
		}
	}
	for k, at := range c.reported {
		if now.Sub(at) > w {
			delete(c.reported, k)
		}
	}
}

func (c *Correlator) window() time.Duration {
	if c.Window > 0 {
		return c.Window
	}
	return DefaultWindow
}

func (c *Correlator) max() int {
	if c.Max > 0 {
		return c.Max
	}
	return DefaultPending
}

// Pending returns how many invalid segments wait for a reset.
func (c *Correlator) Pending() int { return len(c.pending) }
