package perflow

import (
	"context"
	"testing"

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

// TestResyncForgetsVanishedFlows: flows that end without events leave the
// engine's memory (the hashes of pre-existing flows) at the next resync.
func TestResyncForgetsVanishedFlows(t *testing.T) {
	tracked := tcpFlow(40000, 443, flows.TCPEstablished)
	old := tcpFlow(40001, 80, flows.TCPEstablished)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	c := newFakeConn(tracked, old)
	e := started(t, c, web, fresh)
	if len(e.preexisting) != 1 {
		t.Fatalf("after start: %d preexisting; want 1", len(e.preexisting))
	}
	c.remove(tracked.Key())
	c.remove(old.Key())
	if err := e.resync(context.Background(), resyncPeriodic); err != nil {
		t.Fatal(err)
	}
	if len(e.preexisting) != 0 {
		t.Fatalf("after the resync: %d preexisting; want none", len(e.preexisting))
	}
	// The tuple of the forgotten pre-existing flow comes back as a new flow:
	// the existingFlows=false policy flags it.
	c.put(old)
	step(e, ev(flows.EventNew, old))
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

// TestResyncKeepsPreexistingOfFlaggedFlows: a flow flagged for one policy
// and left alone by an existingFlows=false one stays remembered as such
// across resyncs.
func TestResyncKeepsPreexistingOfFlaggedFlows(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	fresh := perFlow("fresh", policy.Match{}, false)
	c := newFakeConn(f)
	e := started(t, c, web, fresh)
	for range 2 {
		if err := e.resync(context.Background(), resyncPeriodic); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.preexisting) != 1 {
		t.Fatalf("%d preexisting; want 1", len(e.preexisting))
	}
	if s := e.Stats().Policies["fresh"]; s.Matched != 0 {
		t.Fatalf("fresh stats %+v: the pre-existing flow was matched", s)
	}
}
