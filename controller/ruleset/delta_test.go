package ruleset

import (
	"fmt"
	"slices"
	"testing"
)

func TestElementDiff(t *testing.T) {
	tests := []struct {
		name                   string
		typ                    SetType
		desired, observed      []string
		wantAdded, wantRemoved []string
	}{
		{"equal", SetIPv4Addr, []string{"10.0.0.1", "10.0.0.3"}, []string{"10.0.0.1", "10.0.0.3"}, nil, nil},
		{"edited address moves to the end", SetIPv4Addr,
			[]string{"10.0.0.1", "10.0.0.5", "10.0.0.7", "10.200.0.1"}, []string{"10.0.0.1", "10.0.0.3", "10.0.0.5", "10.0.0.7"},
			[]string{"10.200.0.1"}, []string{"10.0.0.3"}},
		{"same start, wider range", SetIPv4Addr, []string{"10.0.0.0/23", "10.9.0.0/16"}, []string{"10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/16"},
			[]string{"10.0.0.0/23"}, []string{"10.0.0.0/24", "10.0.1.0/24"}},
		{"ipv6", SetIPv6Addr, []string{"2001:db8::/32"}, []string{"2001:db8::/32", "fd00::/8"}, nil, []string{"fd00::/8"}},
		{"ports", SetInetService, []string{"80", "443-444", "8000-8100"}, []string{"22", "443", "8000-8100"},
			[]string{"80", "443-444"}, []string{"22", "443"}},
		{"ifnames", SetIfname, []string{"eth0", "wan1"}, []string{"eth0", "wan0"}, []string{"wan1"}, []string{"wan0"}},
		{"one side empty", SetIPv4Addr, nil, []string{"10.0.0.1"}, nil, []string{"10.0.0.1"}},
		{"unparsable falls back to hashing", SetIPv4Addr, []string{"x", "10.0.0.1"}, []string{"10.0.0.1", "y"}, []string{"x"}, []string{"y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			added, removed := ElementDiff(tt.typ, tt.desired, tt.observed)
			if !slices.Equal(added, tt.wantAdded) || !slices.Equal(removed, tt.wantRemoved) {
				t.Errorf("ElementDiff = +%q -%q, want +%q -%q", added, removed, tt.wantAdded, tt.wantRemoved)
			}
		})
	}
}

func TestElementDeltas(t *testing.T) {
	base := func(elems ...string) *Table {
		return &Table{
			Counters: []Counter{{Name: "c"}},
			Sets:     []Set{{Name: "s", Type: SetIPv4Addr, Interval: true, Elements: elems}},
			Chains:   []Chain{{Hook: HookInput, Priority: Priority, Rules: []Rule{{Policy: "p", Purpose: PurposeDropInvalid, NFProto: NFProtoIPv4, AddrSet: "s", Counter: "c", Drop: true}}}},
		}
	}
	if d, ok := ElementDeltas(base("10.0.0.1", "10.0.0.9"), base("10.0.0.1", "10.0.0.3")); !ok || len(d) != 1 ||
		fmt.Sprint(d[0].Add, d[0].Remove) != "[10.0.0.9] [10.0.0.3]" || d[0].Set.Name != "s" {
		t.Errorf("elements only: %+v, %v", d, ok)
	}
	if d, ok := ElementDeltas(base("10.0.0.1"), base("10.0.0.1")); !ok || len(d) != 0 {
		t.Errorf("equal: %+v, %v", d, ok)
	}
	other := base("10.0.0.1")
	other.Chains[0].Priority = 0
	retyped := base("10.0.0.1")
	retyped.Sets[0].Interval = false
	recounted := base("10.0.0.1")
	recounted.Counters[0].Name = "d"
	for name, observed := range map[string]*Table{"chain": other, "set flags": retyped, "counter": recounted, "absent": nil} {
		if _, ok := ElementDeltas(base("10.0.0.2"), observed); ok {
			t.Errorf("%s differs too, yet only elements are changed", name)
		}
	}
}
