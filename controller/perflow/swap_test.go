package perflow

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// changes keeps the set and clear calls.
func changes(calls []string) []string {
	var out []string
	for _, c := range calls {
		if strings.HasPrefix(c, "set ") || strings.HasPrefix(c, "clear ") {
			out = append(out, c)
		}
	}
	return out
}

// TestSwapRematchesEveryFlow starts an engine on a flow (from the start dump
// or a NEW event), swaps the policies, and checks what the swap's resync
// changes on the flow.
func TestSwapRematchesEveryFlow(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}, false)
	web8443 := perFlow("web", policy.Match{DestinationPorts: []policy.PortRange{{From: 8443, To: 8443}}}, true)
	other := perFlow("other", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, true)
	key := f.String() + " "
	tests := []struct {
		name          string
		flow          flows.Flow // as in the table at start
		byEvent       bool       // seen by a NEW event, not the start dump
		before, after []policy.Policy
		owned         flows.Directions // Config.OwnedDirections
		want          []string         // changes at the swap
		liberal       flows.Directions
		marked        bool
	}{{
		name: "reply to both adds original", flow: f,
		before: []policy.Policy{web}, after: []policy.Policy{webBoth},
		want: []string{"set " + key + "original"}, liberal: flows.Both, marked: true,
	}, {
		name: "same policies change nothing", flow: f,
		before: []policy.Policy{web}, after: []policy.Policy{web},
		liberal: flows.Reply, marked: true,
	}, {
		name: "both to reply clears ctguard's original", flow: f,
		before: []policy.Policy{webBoth}, after: []policy.Policy{web},
		want: []string{"clear " + key + "original"}, liberal: flows.Reply, marked: true,
	}, {
		// The one-bit ownership's residual case (see package flows): a
		// third party's single direction on a flow ctguard then marked is
		// taken for ctguard's.
		name: "both to reply, a third party's original", flow: liberalIn(f, flows.Original, 0),
		before: []policy.Policy{webBoth}, after: []policy.Policy{web},
		want: []string{"clear " + key + "original"}, liberal: flows.Reply, marked: true,
	}, {
		name: "removed policy: flag and mark cleared", flow: f,
		before: []policy.Policy{web}, after: []policy.Policy{other},
		want: []string{"clear " + key + "reply"}, liberal: 0,
	}, {
		name: "removed policy, a third party's original", flow: liberalIn(f, flows.Original, 0),
		before: []policy.Policy{webBoth}, after: nil,
		want: []string{"clear " + key + "original,reply"}, liberal: 0,
	}, {
		name: "narrowed match: cleared", flow: f,
		before: []policy.Policy{web}, after: []policy.Policy{web8443},
		want: []string{"clear " + key + "reply"}, liberal: 0,
	}, {
		name: "added existingFlows=false policy leaves the flow alone", flow: f,
		before: []policy.Policy{other}, after: []policy.Policy{other, fresh},
		liberal: 0,
	}, {
		name: "existingFlows=false policy keeps applying to its flows", flow: f, byEvent: true,
		before: []policy.Policy{fresh}, after: []policy.Policy{withDirs(fresh, policy.DirectionOriginal, policy.DirectionReply)},
		want: []string{"set " + key + "original"}, liberal: flows.Both, marked: true,
	}, {
		// A flow an earlier ctguard flagged in both directions: this engine
		// knows from OwnedDirections what it may have set.
		name: "earlier ctguard's flow, owned directions", flow: liberalIn(f, flows.Both, ours),
		before: []policy.Policy{other}, after: nil, owned: flows.Both,
		want: []string{"clear " + key + "original,reply"}, liberal: 0,
	}, {
		name: "earlier ctguard's flow, default directions", flow: liberalIn(f, flows.Both, ours),
		before: []policy.Policy{other}, after: nil,
		want: []string{"clear " + key + "reply"}, liberal: flows.Original,
	}, {
		name: "someone else's flow", flow: liberalIn(f, flows.Both, 0x1),
		before: []policy.Policy{web}, after: nil,
		liberal: flows.Both,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newFakeConn()
			if !tt.byEvent {
				c.put(tt.flow)
			}
			e, err := New(Config{Policies: tt.before, Conn: c, OwnedDirections: tt.owned})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.resync(ctx, resyncStart); err != nil {
				t.Fatal(err)
			}
			if tt.byEvent {
				c.put(tt.flow)
				step(e, ev(flows.EventNew, tt.flow))
			}
			n := len(c.callLog())
			if err := e.SetPolicies(tt.after); err != nil {
				t.Fatal(err)
			}
			if err := e.resync(ctx, resyncSwap); err != nil {
				t.Fatal(err)
			}
			if got := changes(c.callLog()[n:]); !slices.Equal(got, tt.want) {
				t.Fatalf("swap changes %q, want %q", got, tt.want)
			}
			got := c.get(f.Key())
			if got.Liberal() != tt.liberal || (got.Mark&ours != 0) != tt.marked {
				t.Fatalf("after the swap: liberal %v mark %#x, want %v marked %v", got.Liberal(), got.Mark, tt.liberal, tt.marked)
			}
			// A second resync finds nothing to do: the swap converged.
			n = len(c.callLog())
			if err := e.resync(ctx, resyncPeriodic); err != nil {
				t.Fatal(err)
			}
			if got := changes(c.callLog()[n:]); len(got) != 0 {
				t.Fatalf("resync after the swap changed %q", got)
			}
		})
	}
}
