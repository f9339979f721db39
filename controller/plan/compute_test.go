package plan

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

// states returns a variety of states, golden cases' included.
func states() []State {
	var out []State
	for _, tc := range goldenCases() {
		out = append(out, tc.desired, tc.observed)
	}
	dup := base()
	dup.Table = editChain(dup.Table, ruleset.HookInput, func(rs []ruleset.Rule) []ruleset.Rule {
		return append(rs, unrecognised("handle 7"), unrecognised("handle 7"), rs[0])
	})
	return append(out,
		State{},
		State{Table: &ruleset.Table{}},
		State{Table: table(egress("198.18.0.0/24", "203.0.113.0/24"), wanDrop(policy.HookInput, policy.HookForward), global())},
		dup,
	)
}

func TestComputeSelfIsEmpty(t *testing.T) {
	for i, s := range states() {
		for _, other := range []State{s, withCounterValues(s, 1234)} {
			p := Compute(s, other)
			if !p.Empty() || p.Table != nil || len(p.Sysctls) != 0 {
				t.Errorf("state %d: Compute(x, x) = %+v", i, p)
			}
			for _, c := range p.PerFlow {
				if c.Action != ActionNone {
					t.Errorf("state %d: perFlow %q action %s", i, c.Name, c.Action)
				}
			}
			var text, js bytes.Buffer
			if err := WriteText(&text, p); err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(text.String(), "No changes. The kernel matches the policy.\n") {
				t.Errorf("state %d: text of an empty plan:\n%s", i, text.String())
			}
			if err := WriteJSON(&js, p); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(js.String(), `"empty": true`) {
				t.Errorf("state %d: JSON of an empty plan:\n%s", i, js.String())
			}
		}
	}
}

// TestTableChangeAgreesWithEqual cross-checks the per-object diff with
// ruleset.Equal over every pair of states.
func TestTableChangeAgreesWithEqual(t *testing.T) {
	ss := states()
	for i, a := range ss {
		for j, b := range ss {
			changed := Compute(a, b).Table != nil
			if changed == ruleset.Equal(a.Table, b.Table) {
				t.Errorf("states %d, %d: table change %t but ruleset.Equal %t", i, j, changed, ruleset.Equal(a.Table, b.Table))
			}
		}
	}
}

// TestSummarySymmetric: what one plan adds, the reverse plan removes.
func TestSummarySymmetric(t *testing.T) {
	ss := states()
	for i, a := range ss {
		for j, b := range ss {
			a.Sysctls, b.Sysctls = nil, nil // desired names only: not symmetric
			f, r := Compute(a, b).Summary(), Compute(b, a).Summary()
			if f.Add != r.Remove || f.Remove != r.Add || f.Change != r.Change {
				t.Errorf("states %d, %d: forward %+v, reverse %+v", i, j, f, r)
			}
		}
	}
}

func TestComputeTable(t *testing.T) {
	b := base()
	bigger := table(egress("198.18.0.0/24", "203.0.113.0/24"), wanDrop())
	tests := []struct {
		name              string
		desired, observed *ruleset.Table
		want              *TableChange
	}{
		{name: "both absent"},
		{name: "equal", desired: b.Table, observed: b.Table},
		{
			name: "empty table created", desired: &ruleset.Table{},
			want: &TableChange{Action: ActionCreate, Desired: &ruleset.Table{}},
		},
		{
			name: "set elements", desired: bigger, observed: b.Table,
			want: &TableChange{Action: ActionUpdate, Desired: bigger, Observed: b.Table, Sets: []SetChange{{
				Name: "egress-dst4", Action: ActionUpdate,
				Desired: &bigger.Sets[0], Observed: &b.Table.Sets[0],
				ElementsAdded:   []string{"203.0.113.0/24"},
				ElementsRemoved: nil,
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(State{Table: tt.desired}, State{Table: tt.observed}).Table
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Table change\ngot  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestComputeRules(t *testing.T) {
	r := func(policy string, drop bool) ruleset.Rule {
		return ruleset.Rule{Policy: policy, Purpose: ruleset.PurposeDropInvalid, Counter: policy, Drop: drop}
	}
	chain := func(rules ...ruleset.Rule) *ruleset.Table {
		return &ruleset.Table{Chains: []ruleset.Chain{{Hook: ruleset.HookInput, Priority: ruleset.Priority, Rules: rules}}}
	}
	type ruleWant struct {
		id     string
		action Action
	}
	tests := []struct {
		name              string
		desired, observed *ruleset.Table
		want              []ruleWant
		reordered         bool
	}{
		{name: "same", desired: chain(r("a", true), r("b", true)), observed: chain(r("a", true), r("b", true))},
		{name: "added", desired: chain(r("a", true), r("b", true)), observed: chain(r("a", true)),
			want: []ruleWant{{"ctguard policy b: drop-invalid", ActionCreate}}},
		{name: "removed", desired: chain(r("a", true)), observed: chain(r("a", true), r("b", true)),
			want: []ruleWant{{"ctguard policy b: drop-invalid", ActionDelete}}},
		{name: "changed in place", desired: chain(r("a", true)), observed: chain(r("a", false)),
			want: []ruleWant{{"ctguard policy a: drop-invalid", ActionUpdate}}},
		{name: "reordered", desired: chain(r("a", true), r("b", true)), observed: chain(r("b", true), r("a", true)), reordered: true},
		{name: "duplicate in kernel", desired: chain(r("a", true)), observed: chain(r("a", true), r("a", true)),
			want: []ruleWant{{"ctguard policy a: drop-invalid", ActionDelete}}},
		{name: "unrecognised by detail", desired: chain(r("a", true)),
			observed: chain(unrecognised("handle 4"), r("a", true), unrecognised("handle 5")),
			want:     []ruleWant{{"handle 4", ActionDelete}, {"handle 5", ActionDelete}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := Compute(State{Table: tt.desired}, State{Table: tt.observed}).Table
			var got []ruleWant
			reordered := false
			if tc != nil {
				for _, c := range tc.Chains {
					reordered = reordered || c.Reordered
					for _, r := range c.Rules {
						got = append(got, ruleWant{r.ID, r.Action})
					}
				}
			}
			if !reflect.DeepEqual(got, tt.want) || reordered != tt.reordered {
				t.Fatalf("rules %v reordered %t, want %v reordered %t", got, reordered, tt.want, tt.reordered)
			}
			if (tc == nil) != (len(tt.want) == 0 && !tt.reordered) {
				t.Fatalf("table change %+v", tc)
			}
		})
	}
}

func TestComputeSysctls(t *testing.T) {
	tests := []struct {
		name              string
		desired, observed map[string]string
		want              []SysctlChange
	}{
		{name: "same", desired: liberal("1"), observed: liberal("1")},
		{name: "changed", desired: liberal("1"), observed: liberal("0"),
			want: []SysctlChange{{Name: sysctl.BeLiberal, Old: ptr("0"), New: "1"}}},
		{name: "absent", desired: liberal("1"), observed: nil,
			want: []SysctlChange{{Name: sysctl.BeLiberal, New: "1"}}},
		{name: "not managed", desired: nil, observed: liberal("1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(State{Sysctls: tt.desired}, State{Sysctls: tt.observed}).Sysctls
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestComputePerFlow(t *testing.T) {
	reply := []policy.Direction{policy.DirectionReply}
	both := []policy.Direction{policy.DirectionReply, policy.DirectionOriginal}
	tests := []struct {
		name              string
		desired, observed PerFlowPolicy
		action            Action
		flowsToFlag       int
	}{
		{"unchanged with unflagged flows", PerFlowPolicy{Name: "p", Directions: reply, ExistingFlows: true, MatchingFlows: 9},
			PerFlowPolicy{Name: "p", Directions: reply, ExistingFlows: true}, ActionNone, 0},
		{"direction order ignored", PerFlowPolicy{Name: "p", Directions: both},
			PerFlowPolicy{Name: "p", Directions: []policy.Direction{policy.DirectionOriginal, policy.DirectionReply}}, ActionNone, 0},
		{"directions changed", PerFlowPolicy{Name: "p", Directions: both, ExistingFlows: true, MatchingFlows: 3},
			PerFlowPolicy{Name: "p", Directions: reply, ExistingFlows: true}, ActionUpdate, 3},
		{"existingFlows turned on", PerFlowPolicy{Name: "p", Directions: reply, ExistingFlows: true, MatchingFlows: 5},
			PerFlowPolicy{Name: "p", Directions: reply}, ActionUpdate, 5},
		{"existingFlows off", PerFlowPolicy{Name: "p", Directions: reply, MatchingFlows: 5},
			PerFlowPolicy{Name: "p", Directions: reply, ExistingFlows: true}, ActionUpdate, 0},
		{"observed counts ignored", PerFlowPolicy{Name: "p", Directions: reply},
			PerFlowPolicy{Name: "p", Directions: reply, MatchingFlows: 100, Sample: []string{"x"}}, ActionNone, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Compute(State{PerFlow: []PerFlowPolicy{tt.desired}}, State{PerFlow: []PerFlowPolicy{tt.observed}})
			c := p.PerFlow[0]
			if c.Action != tt.action || c.FlowsToFlag() != tt.flowsToFlag {
				t.Fatalf("action %s, flowsToFlag %d; want %s, %d", c.Action, c.FlowsToFlag(), tt.action, tt.flowsToFlag)
			}
			if p.Empty() != (tt.action == ActionNone) {
				t.Fatalf("Empty() = %t with action %s", p.Empty(), c.Action)
			}
		})
	}
}

// failingWriter fails after n bytes.
type failingWriter struct{ n int }

var errWrite = errors.New("disk full")

func (w *failingWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		n := w.n
		w.n = 0
		return n, errWrite
	}
	w.n -= len(b)
	return len(b), nil
}

func TestRenderersReportWriteErrors(t *testing.T) {
	p := Compute(goldenCases()[0].desired, goldenCases()[0].observed)
	for _, n := range []int{0, 10, 100, 1000} {
		if err := WriteText(&failingWriter{n}, p); !errors.Is(err, errWrite) {
			t.Errorf("WriteText after %d bytes: %v", n, err)
		}
		if err := WriteJSON(&failingWriter{n}, p); !errors.Is(err, errWrite) {
			t.Errorf("WriteJSON after %d bytes: %v", n, err)
		}
	}
}

func TestFromPolicies(t *testing.T) {
	d := egress("198.18.0.0/24").Document()
	d.Metadata.Name = "defaults"
	d.Spec.Liberal = &policy.Liberal{Scope: policy.ScopePerFlow}
	unset := policytest.New(d)
	d = egress("198.18.0.0/24").Document()
	d.Metadata.Name = "no-existing"
	d.Spec.Liberal.ExistingFlows = ptr(false)
	d.Spec.Liberal.Handshake = policy.HandshakeGuard
	d.Spec.Match.NAT = []policy.NATKind{policy.NATDest, policy.NATSource}
	off := policytest.New(d)
	got := FromPolicies([]policy.Policy{egress("198.18.0.0/24"), wanDrop(), global(), unset, off})
	snat := []policy.NATKind{policy.NATSource}
	want := []PerFlowPolicy{
		{Name: "egress", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: true, Handshake: policy.HandshakeGate, NAT: snat},
		{Name: "defaults", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: true, Handshake: policy.HandshakeGate, NAT: snat},
		{Name: "no-existing", Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: false, Handshake: policy.HandshakeGuard,
			NAT: []policy.NATKind{policy.NATSource, policy.NATDest}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromPolicies =\n%+v\nwant\n%+v", got, want)
	}
}
