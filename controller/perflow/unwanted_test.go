package perflow

import (
	"context"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
)

// TestClearUnwanted is finding 4 of issue 13 at its core: after the
// policies change outside a running engine, flags ctguard set in directions
// no policy wants any more are cleared; wanted ones, and flags on unmarked
// flows (the kernel's or another tool's), stay.
func TestClearUnwanted(t *testing.T) {
	tests := []struct {
		name      string
		sel       bool // the web policy (reply, port 443) is in force; else none
		dport     uint16
		before    flows.Directions
		mark      uint32
		after     flows.Directions
		afterMark uint32
		cleared   bool
	}{
		{"narrowed to reply: original goes, mark stays", true, 443, flows.Both, ours, flows.Reply, ours, true},
		{"no policy any more: all goes with the mark", false, 443, flows.Both, ours, 0, 0, true},
		{"not selected any more", true, 80, flows.Reply, ours, 0, 0, true},
		{"wanted: untouched", true, 443, flows.Reply, ours, flows.Reply, ours, false},
		{"unmarked (the kernel's): untouched", false, 443, flows.Both, 0, flows.Both, 0, false},
		{"marked without flags: untouched", false, 443, 0, ours, 0, ours, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := liberalIn(tcpFlow(40000, tt.dport, flows.TCPEstablished), tt.before, tt.mark)
			c := newFakeConn(f)
			sel := compile(t)
			if tt.sel {
				sel = compile(t, web)
			}
			found, err := FindUnwanted(context.Background(), c, sel, 0, flows.Both)
			if err != nil {
				t.Fatal(err)
			}
			if (found.Flows == 1) != tt.cleared || len(c.callLog()) != 1 {
				t.Fatalf("FindUnwanted: %+v, calls %q", found, c.callLog())
			}
			done, err := ClearUnwanted(context.Background(), c, sel, 0, flows.Both)
			if err != nil {
				t.Fatal(err)
			}
			got := c.get(f.Key())
			if (done.Flows == 1) != tt.cleared || got.Liberal() != tt.after || got.Mark != tt.afterMark {
				t.Fatalf("after ClearUnwanted: cleared %d, flags %v mark %#x; want flags %v mark %#x", done.Flows, got.Liberal(), got.Mark, tt.after, tt.afterMark)
			}
		})
	}
}
