package perflow

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// countCalls counts the calls equal to call.
func countCalls(calls []string, call string) int {
	n := 0
	for _, c := range calls {
		if c == call {
			n++
		}
	}
	return n
}

// TestRunSurvivesEventSocketErrors: a receive error other than a loss (a
// decode error, a socket error, the source closing by itself) makes Run
// count a loss, subscribe again (retrying when that fails), resync, and go
// on flagging new flows.
func TestRunSurvivesEventSocketErrors(t *testing.T) {
	for _, tt := range []struct {
		name           string
		err            error
		subscribeFails int
	}{
		{"decode error", fmt.Errorf("receive conntrack events: decode conntrack event: %w", errors.New("bad attribute")), 0},
		{"socket error", fmt.Errorf("receive conntrack events: %w", errRefused), 0},
		{"closed underneath", flows.ErrClosed, 0},
		{"subscribe fails once", errRefused, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeConn()
			e, err := New(Config{Policies: []policy.Policy{web}, Conn: c})
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, e)
			waitFor(t, "the start dump", func() bool { return slices.Contains(c.callLog(), "dump") })
			first := c.source()
			missed := tcpFlow(40000, 443, flows.TCPSynSent) // created while resubscribing
			c.put(missed)
			c.mu.Lock()
			c.subscribeFails = tt.subscribeFails
			c.mu.Unlock()
			c.send(fakeBatch{err: tt.err})
			waitFor(t, "a new subscription", func() bool { return c.source() != first })
			live := tcpFlow(40001, 443, flows.TCPSynSent)
			c.put(live)
			c.send(fakeBatch{evs: []flows.Event{{Type: flows.EventNew, Flow: live}}})
			waitFor(t, "both flags", func() bool {
				return c.get(missed.Key()).Liberal() == flows.Reply && c.get(live.Key()).Liberal() == flows.Reply
			})
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			calls := c.callLog()
			if n := countCalls(calls, "subscribe"); n != 2+tt.subscribeFails {
				t.Fatalf("%d subscribes, want %d: %q", n, 2+tt.subscribeFails, calls)
			}
			if i := slices.Index(calls, "dump"); countCalls(calls[i+1:], "dump") != 1 {
				t.Fatalf("calls %q, want one resync dump after the start", calls)
			}
			if s := e.Stats(); s.EventsLost != 1 || s.Resyncs != 1 {
				t.Fatalf("stats %+v, want one loss and one resync", s)
			}
			select {
			case <-first.done:
			default:
				t.Fatal("the failed source was not closed")
			}
		})
	}
}

// TestFailedSwapResyncIsNotLost: the swap's resync fails and an event loss
// comes before its retry: the loss's resync does the swap's work too.
func TestFailedSwapResyncIsNotLost(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	c := newFakeConn(f)
	e, err := New(Config{Policies: []policy.Policy{web}, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "the REPLY flag", func() bool { return e.Stats().Policies["web"].Confirmed == 1 })
	c.mu.Lock()
	c.dumpFails = 1
	c.mu.Unlock()
	if err := e.SetPolicies([]policy.Policy{webBoth}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed swap resync", func() bool { return e.Stats().Resyncs == 1 })
	c.send(fakeBatch{err: flows.ErrEventsLost})
	waitFor(t, "the ORIGINAL flag", func() bool { return c.get(f.Key()).Liberal() == flows.Both })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Resyncs != 2 {
		t.Fatalf("%d resyncs, want the failed one and the merged one", s.Resyncs)
	}
}
