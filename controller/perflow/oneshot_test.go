package perflow

import (
	"context"
	"slices"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

func compile(t testing.TB, ps ...policy.Policy) *selector.Selector {
	t.Helper()
	sel, err := selector.Compile(ps)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// withDirs returns p flagging the given directions.
func withDirs(p policy.Policy, ds ...policy.Direction) policy.Policy {
	d := p.Document()
	d.Spec.Liberal.Directions = ds
	return policytest.New(d)
}

// liberalIn returns f with BE_LIBERAL set in dirs and the given mark.
func liberalIn(f flows.Flow, dirs flows.Directions, mark uint32) flows.Flow {
	if dirs.Has(flows.Original) {
		f.OrigFlags |= flows.BeLiberal
	}
	if dirs.Has(flows.Reply) {
		f.ReplyFlags |= flows.BeLiberal
	}
	f.Mark = mark
	return f
}

const ours = uint32(flows.DefaultMarkBit)

// webBoth flags both directions of flows to port 443.
var webBoth = withDirs(web, policy.DirectionOriginal, policy.DirectionReply)

// TestFlagsOnlyMissingDirections: the engine (on a NEW event) and
// FlagExisting set only the wanted directions a flow lacks, and leave a flow
// liberal in every wanted direction unmarked.
func TestFlagsOnlyMissingDirections(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	tests := []struct {
		name    string
		pol     policy.Policy
		before  flows.Directions
		set     string // the update sent, "" for none
		after   flows.Directions
		marked  bool
		already bool
	}{
		{"reply wanted, none set", web, 0, "reply", flows.Reply, true, false},
		{"both wanted, kernel set original", webBoth, flows.Original, "reply", flows.Both, true, false},
		{"both wanted, kernel set both", webBoth, flows.Both, "", flows.Both, false, true},
		{"reply wanted, kernel set reply", web, flows.Reply, "", flows.Reply, false, true},
		{"reply wanted, kernel set original", web, flows.Original, "reply", flows.Both, true, false},
	}
	for _, tt := range tests {
		in := liberalIn(f, tt.before, 0)
		wantCalls := []string{"dump"}
		if tt.set != "" {
			wantCalls = append(wantCalls, "set "+f.String()+" "+tt.set)
		}
		check := func(t *testing.T, c *fakeConn, calls []string) {
			t.Helper()
			if !slices.Equal(calls, wantCalls) {
				t.Fatalf("calls %q, want %q", calls, wantCalls)
			}
			got := c.get(f.Key())
			if got.Liberal() != tt.after || (got.Mark == ours) != tt.marked {
				t.Fatalf("flow after: liberal %v mark %#x, want %v marked %v", got.Liberal(), got.Mark, tt.after, tt.marked)
			}
		}
		t.Run(tt.name+"/engine", func(t *testing.T) {
			c := newFakeConn(in)
			e := newEngine(t, c, nil, tt.pol)
			step(e, ev(flows.EventNew, in))
			check(t, c, append([]string{"dump"}, c.callLog()...))
			if got := e.Stats().Policies["web"].AlreadyLiberal == 1; got != tt.already {
				t.Fatalf("already liberal counted %v, want %v", got, tt.already)
			}
		})
		t.Run(tt.name+"/FlagExisting", func(t *testing.T) {
			c := newFakeConn(in)
			n, err := FlagExisting(context.Background(), c, compile(t, tt.pol), 0)
			if err != nil || n != len(wantCalls)-1 {
				t.Fatalf("FlagExisting = %d, %v", n, err)
			}
			check(t, c, c.callLog())
		})
	}
}

func TestFlagExistingHonoursExistingFlows(t *testing.T) {
	old := tcpFlow(40000, 80, flows.TCPEstablished)
	c := newFakeConn(old, tcpFlow(40001, 443, flows.TCPEstablished))
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	n, err := FlagExisting(context.Background(), c, compile(t, web, fresh), 0)
	if err != nil || n != 1 {
		t.Fatalf("FlagExisting = %d, %v; want 1", n, err)
	}
	if c.get(old.Key()).Liberal() != 0 {
		t.Fatal("an existingFlows=false policy flagged an existing flow")
	}
}

// TestRollbackClearsOnlyOwnedDirections: on marked flows Rollback clears
// only the given directions that are set, and the mark; unmarked flows keep
// everything.
func TestRollbackClearsOnlyOwnedDirections(t *testing.T) {
	base := tcpFlow(40000, 443, flows.TCPEstablished)
	tests := []struct {
		name      string
		flow      flows.Flow
		dirs      flows.Directions
		wantClear string // "" for none
		after     flows.Directions
		afterMark uint32
	}{
		{"ctguard's reply, kernel's original kept", liberalIn(base, flows.Both, ours|0x1), flows.Reply, "reply", flows.Original, 0x1},
		{"default directions are reply", liberalIn(base, flows.Both, ours), 0, "reply", flows.Original, 0},
		{"both policies' directions", liberalIn(base, flows.Both, ours), flows.Both, "original,reply", 0, 0},
		{"flag already gone: mark only", liberalIn(base, 0, ours), flows.Reply, "none", 0, 0},
		{"original only, reply policy: mark only", liberalIn(base, flows.Original, ours), flows.Reply, "none", flows.Original, 0},
		{"unmarked", liberalIn(base, flows.Both, 0x1), flows.Both, "", flows.Both, 0x1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeConn(tt.flow)
			n, err := Rollback(context.Background(), c, 0, tt.dirs)
			want := []string{"dump"}
			if tt.wantClear != "" {
				want = append(want, "clear "+base.String()+" "+tt.wantClear)
			}
			if err != nil || n != len(want)-1 {
				t.Fatalf("Rollback = %d, %v", n, err)
			}
			if calls := c.callLog(); !slices.Equal(calls, want) {
				t.Fatalf("calls %q, want %q", calls, want)
			}
			if got := c.get(base.Key()); got.Liberal() != tt.after || got.Mark != tt.afterMark {
				t.Fatalf("after: liberal %v mark %#x, want %v %#x", got.Liberal(), got.Mark, tt.after, tt.afterMark)
			}
		})
	}
}
