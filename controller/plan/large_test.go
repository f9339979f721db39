package plan

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

// hostsState is a dropInvalid policy's state with n /32 destinations, the
// one at edit (if >= 0) replaced by 203.0.113.9.
func hostsState(n, edit int) State {
	hosts := make([]netip.Prefix, n)
	for i := range hosts {
		v := 2 * i
		hosts[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(v >> 16), byte(v >> 8), byte(v)}), 32)
		if i == edit {
			hosts[i] = netip.MustParsePrefix("203.0.113.9/32")
		}
	}
	t := ruleset.Build([]policy.Policy{policytest.New(policy.Document{Metadata: policy.Metadata{Name: "big"}, Spec: policy.Spec{
		Workaround:  policy.WorkaroundDropInvalid,
		DropInvalid: &policy.DropInvalid{Hooks: []policy.Hook{policy.HookInput}},
		Match:       policy.Match{Family: policy.FamilyIPv4, Destinations: hosts},
	}})}, testOpts)
	return State{Table: &t}
}

// TestLargeSetEditShowsTheDelta: editing one address of a 100,000-address
// set plans one element removed and one added, and the text shows those
// two elements, not the set.
func TestLargeSetEditShowsTheDelta(t *testing.T) {
	p := Compute(hostsState(100000, 50000), hostsState(100000, -1))
	if p.Table == nil || len(p.Table.Sets) != 1 {
		t.Fatalf("plan: %+v", p.Table)
	}
	c := p.Table.Sets[0]
	if c.Action != ActionUpdate || fmt.Sprint(c.ElementsAdded) != "[203.0.113.9]" || fmt.Sprint(c.ElementsRemoved) != "[10.1.134.160]" {
		t.Errorf("set change %s: +%v -%v", c.Action, c.ElementsAdded, c.ElementsRemoved)
	}
	var out bytes.Buffer
	if err := WriteText(&out, p); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if n := strings.Count(text, "\n"); n > 40 {
		t.Errorf("the plan text has %d lines:\n%.3000s", n, text)
	}
	for _, want := range []string{"1 element added, 1 element removed", "-\t\t\t     10.1.134.160,", "+\t\t\t     203.0.113.9 }"} {
		if !strings.Contains(text, want) {
			t.Errorf("the plan text lacks %q:\n%s", want, text)
		}
	}
}

// BenchmarkPlanLargeSetEdit plans and renders one address edited in a
// 100,000-address set.
func BenchmarkPlanLargeSetEdit(b *testing.B) {
	desired, observed := hostsState(100000, 50000), hostsState(100000, -1)
	for b.Loop() {
		p := Compute(desired, observed)
		if err := WriteText(&bytes.Buffer{}, p); err != nil {
			b.Fatal(err)
		}
	}
}
