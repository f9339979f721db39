package ruleset

import (
	"testing"

	"github.com/ctguard/ctguard/policy"
)

func TestEqual(t *testing.T) {
	base := func() *Table {
		tb := Build([]policy.Policy{dropInvalid("p", policy.Match{Family: policy.FamilyIPv4, Destinations: prefixes("198.18.0.0/15")}, []string{"wan0"}, policy.HookInput)}, testOpts)
		return &tb
	}
	tests := []struct {
		name   string
		a, b   *Table
		modify func(*Table)
		want   bool
	}{
		{name: "both absent", want: true},
		{name: "one absent", a: base(), want: false},
		{name: "empty vs empty slices", a: &Table{}, b: &Table{Sets: []Set{}}, want: true},
		{name: "same", a: base(), b: base(), want: true},
		{name: "counter values ignored", a: base(), b: base(), modify: func(t *Table) { t.Counters[0].Packets = 9 }, want: true},
		{name: "counter renamed", a: base(), b: base(), modify: func(t *Table) { t.Counters[0].Name = "x" }, want: false},
		{name: "element changed", a: base(), b: base(), modify: func(t *Table) { t.Sets[0].Elements[0] = "198.18.0.0/16" }, want: false},
		{name: "priority changed", a: base(), b: base(), modify: func(t *Table) { t.Chains[0].Priority = 0 }, want: false},
		{name: "rule dropped", a: base(), b: base(), modify: func(t *Table) { t.Chains[0].Rules = nil }, want: false},
		{name: "verdict changed", a: base(), b: base(), modify: func(t *Table) { t.Chains[0].Rules[0].Drop = false }, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.modify != nil {
				tt.modify(tt.b)
			}
			if got := Equal(tt.a, tt.b); got != tt.want {
				t.Errorf("Equal(a, b) = %v, want %v", got, tt.want)
			}
			if got := Equal(tt.b, tt.a); got != tt.want {
				t.Errorf("Equal(b, a) = %v, want %v", got, tt.want)
			}
		})
	}
}
