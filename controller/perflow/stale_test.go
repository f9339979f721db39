package perflow

import (
	"context"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// withID returns f with CTA_ID id.
func withID(f flows.Flow, id uint32) flows.Flow {
	f.ID = id
	return f
}

// started returns an engine over c whose start resync ran.
func started(t *testing.T, c *fakeConn, ps ...policy.Policy) *Engine {
	t.Helper()
	e := newEngine(t, c, nil, ps...)
	if err := e.resync(context.Background(), resyncStart); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestReusedTupleIsANewFlow: a flow found by the start dump ends without any
// event (it had no event cache); a new entry with the same tuple must be
// flagged, whether its NEW event arrives or is lost.
func TestReusedTupleIsANewFlow(t *testing.T) {
	old := withID(tcpFlow(40000, 443, flows.TCPEstablished), 1)
	reused := withID(tcpFlow(40000, 443, flows.TCPSynSent), 2)
	for _, viaEvent := range []bool{true, false} {
		name := map[bool]string{true: "NEW event", false: "NEW lost, resync"}[viaEvent]
		t.Run(name, func(t *testing.T) {
			c := newFakeConn(old)
			e := started(t, c, web)
			if c.get(old.Key()).Liberal() != flows.Reply {
				t.Fatal("start dump did not flag the old flow")
			}
			c.put(reused) // replaces the old entry, without events
			if viaEvent {
				e.handle(ev(flows.EventNew, reused), time.Now())
			} else if err := e.resync(context.Background(), resyncLoss); err != nil {
				t.Fatal(err)
			}
			if got := c.get(reused.Key()); got.Liberal() != flows.Reply {
				t.Fatalf("reused tuple not flagged: %+v", got)
			}
			s := e.Stats().Policies["web"]
			if s.Matched != 2 || s.Flagged != 2 || s.Ended != 1 {
				t.Fatalf("stats %+v, want 2 matched, 2 flagged, the old one ended", s)
			}
			if tr := e.tracked[reused.Key()]; tr == nil || tr.id != 2 {
				t.Fatalf("tracked %+v, want the new entry", tr)
			}
		})
	}
}

// TestNewOfADumpedEntryCountsOnce: a flow created while the dump ran is seen
// by the dump and by its NEW event: counted and flagged once.
func TestNewOfADumpedEntryCountsOnce(t *testing.T) {
	f := withID(tcpFlow(40000, 443, flows.TCPSynSent), 7)
	c := newFakeConn(f)
	e := started(t, c, web)
	e.handle(ev(flows.EventNew, f), time.Now())
	s := e.Stats().Policies["web"]
	if s.Matched != 1 || s.Flagged != 1 || s.Ended != 0 {
		t.Fatalf("stats %+v, want matched and flagged once, not ended", s)
	}
	if c.get(f.Key()).Liberal() != flows.Reply {
		t.Fatal("flag lost")
	}
}

// TestEventsOfAnOlderEntry: DESTROY and UPDATE events carrying another CTA_ID
// than the tracked entry's never touch the new entry's track.
func TestEventsOfAnOlderEntry(t *testing.T) {
	old := withID(tcpFlow(40000, 443, flows.TCPEstablished), 1)
	cur := withID(tcpFlow(40000, 443, flows.TCPSynSent), 2)
	c := newFakeConn(cur)
	e := newEngine(t, c, nil, web)
	e.handle(ev(flows.EventNew, cur), time.Now())
	closed := old
	closed.State = flows.TCPClose
	e.handle(ev(flows.EventDestroy, closed), time.Now())
	if tr := e.tracked[cur.Key()]; tr == nil || tr.ended {
		t.Fatal("an older entry's DESTROY ended the current one")
	}
	e.handle(ev(flows.EventUpdate, closed), time.Now())
	if e.tracked[cur.Key()] != nil {
		t.Fatal("an UPDATE of another entry left the stale track")
	}
	if s := e.Stats().Policies["web"]; s.EndedByReset != 0 || s.Ended != 1 {
		t.Fatalf("stats %+v, want the stale track ended once, not by reset", s)
	}
}

// TestResyncForgetsVanishedFlows: flows that end without events leave the
// engine's memory at the next resync (tracked and preexisting alike).
func TestResyncForgetsVanishedFlows(t *testing.T) {
	tracked := tcpFlow(40000, 443, flows.TCPEstablished)
	old := tcpFlow(40001, 80, flows.TCPEstablished)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	c := newFakeConn(tracked, old)
	e := started(t, c, web, fresh)
	if len(e.tracked) != 1 || len(e.preexisting) != 1 {
		t.Fatalf("after start: %d tracked, %d preexisting; want 1 and 1", len(e.tracked), len(e.preexisting))
	}
	c.remove(tracked.Key())
	c.remove(old.Key())
	if err := e.resync(context.Background(), resyncPeriodic); err != nil {
		t.Fatal(err)
	}
	if len(e.tracked) != 0 || len(e.preexisting) != 0 {
		t.Fatalf("after the resync: %d tracked, %d preexisting; want none", len(e.tracked), len(e.preexisting))
	}
	if s := e.Stats().Policies["web"]; s.Ended != 1 {
		t.Fatalf("stats %+v, want the vanished flow ended", s)
	}
	// The tuple of the forgotten pre-existing flow comes back as a new flow:
	// the existingFlows=false policy flags it.
	c.put(old)
	e.handle(ev(flows.EventNew, old), time.Now())
	if c.get(old.Key()).Liberal() != flows.Reply {
		t.Fatal("a new flow on a forgotten pre-existing tuple was left alone")
	}
}

// TestReusedPreexistingTupleAfterLoss: the tuple of a flow an
// existingFlows=false policy leaves alone is reused by a new entry whose NEW
// event is lost: the loss resync sees another CTA_ID and flags it.
func TestReusedPreexistingTupleAfterLoss(t *testing.T) {
	old := withID(tcpFlow(40001, 80, flows.TCPEstablished), 1)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	c := newFakeConn(old)
	e := started(t, c, fresh)
	if err := e.resync(context.Background(), resyncLoss); err != nil {
		t.Fatal(err)
	}
	if c.get(old.Key()).Liberal() != 0 {
		t.Fatal("a loss resync flagged the pre-existing flow")
	}
	c.put(withID(tcpFlow(40001, 80, flows.TCPSynSent), 2))
	if err := e.resync(context.Background(), resyncLoss); err != nil {
		t.Fatal(err)
	}
	if c.get(old.Key()).Liberal() != flows.Reply {
		t.Fatal("the new entry on the pre-existing tuple was left alone")
	}
}

// TestReusedTupleWithTheSameID: the new entry reuses the old one's memory,
// hence its CTA_ID, and its NEW passes for the dumped entry's; its UPDATE
// at ESTABLISHED still flags it.
func TestReusedTupleWithTheSameID(t *testing.T) {
	old := withID(tcpFlow(40000, 443, flows.TCPEstablished), 7)
	c := newFakeConn(old)
	e := started(t, c, web)
	reused := withID(tcpFlow(40000, 443, flows.TCPSynSent), 7)
	c.put(reused)
	e.handle(ev(flows.EventNew, reused), time.Now())
	reused.State = flows.TCPEstablished
	c.put(reused)
	e.handle(ev(flows.EventUpdate, reused), time.Now())
	if c.get(reused.Key()).Liberal() != flows.Reply {
		t.Fatal("the reused entry was not flagged at ESTABLISHED")
	}
}

// TestResyncKeepsPreexistingOfTrackedFlows: a flow tracked for one policy
// and left alone by an existingFlows=false one stays remembered as such
// across resyncs.
func TestResyncKeepsPreexistingOfTrackedFlows(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	fresh := perFlow("fresh", policy.Match{}, false)
	c := newFakeConn(f)
	e := started(t, c, web, fresh)
	for range 2 {
		if err := e.resync(context.Background(), resyncPeriodic); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.tracked) != 1 || len(e.preexisting) != 1 {
		t.Fatalf("%d tracked, %d preexisting; want 1 and 1", len(e.tracked), len(e.preexisting))
	}
	if s := e.Stats().Policies["fresh"]; s.Matched != 0 {
		t.Fatalf("fresh stats %+v: the pre-existing flow was matched", s)
	}
}
