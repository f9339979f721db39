package nft

import (
	"errors"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
)

func TestFakeRejectsInvalidTables(t *testing.T) {
	counter := []ruleset.Counter{{Name: "c"}}
	rule := func(r ruleset.Rule) []ruleset.Chain {
		r.Policy, r.Counter = "p", "c"
		return []ruleset.Chain{{Hook: ruleset.HookInput, Rules: []ruleset.Rule{r}}}
	}
	tests := []struct {
		name  string
		table ruleset.Table
	}{
		{"duplicate counter", ruleset.Table{Counters: []ruleset.Counter{{Name: "c"}, {Name: "c"}}}},
		{"missing counter", ruleset.Table{Chains: rule(ruleset.Rule{Purpose: ruleset.PurposeDropInvalid, Drop: true})}},
		{"missing set", ruleset.Table{Counters: counter, Chains: rule(ruleset.Rule{Purpose: ruleset.PurposeCountInvalid, NFProto: ruleset.NFProtoIPv4, AddrSet: "nope"})}},
		{"set of the wrong family", ruleset.Table{Counters: counter,
			Sets:   []ruleset.Set{{Name: "s", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/15"}}},
			Chains: rule(ruleset.Rule{Purpose: ruleset.PurposeCountInvalid, NFProto: ruleset.NFProtoIPv6, AddrSet: "s"})}},
		{"address set without family", ruleset.Table{Counters: counter,
			Sets:   []ruleset.Set{{Name: "s", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/15"}}},
			Chains: rule(ruleset.Rule{Purpose: ruleset.PurposeCountInvalid, AddrSet: "s"})}},
		{"overlapping elements", ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/15", "198.19.0.0/16"}}}}},
		{"bad element", ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetInetService, Interval: true, Elements: []string{"http"}}}}},
		{"v6 element in v4 set", ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"2001:db8::/32"}}}}},
		{"interface name too long", ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetIfname, Elements: []string{"a-very-long-ifname"}}}}},
		{"interval ifname set", ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetIfname, Interval: true}}}},
		{"unknown hook", ruleset.Table{Chains: []ruleset.Chain{{Hook: "postrouting"}}}},
		{"iifname on output", ruleset.Table{Counters: counter,
			Sets:   []ruleset.Set{{Name: "i", Type: ruleset.SetIfname, Elements: []string{"wan0"}}},
			Chains: []ruleset.Chain{{Hook: ruleset.HookOutput, Rules: []ruleset.Rule{{Policy: "p", Purpose: ruleset.PurposeCountInvalidRST, RSTOnly: true, IifnameSet: "i", Counter: "c"}}}}}},
		{"unrecognised rule", ruleset.Table{Counters: counter, Chains: rule(ruleset.Rule{Purpose: ruleset.PurposeUnrecognised, Detail: "handle 3"})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFake()
			good := ruleset.Build(mixedPolicies(), testOpts)
			if err := f.Replace(good); err != nil {
				t.Fatal(err)
			}
			if err := f.Replace(tt.table); !errors.Is(err, ErrInvalidTable) {
				t.Fatalf("Replace = %v, want ErrInvalidTable", err)
			}
			if got, _ := f.Read(); !ruleset.Equal(got, &good) {
				t.Errorf("a rejected Replace changed the table")
			}
		})
	}
}

func TestFakeLifecycle(t *testing.T) {
	f := NewFake()
	if got, err := f.Read(); got != nil || err != nil {
		t.Fatalf("new Fake Read = %v, %v", got, err)
	}
	want := ruleset.Build(mixedPolicies(), testOpts)
	if err := f.Replace(want); err != nil {
		t.Fatal(err)
	}
	if !f.Hit("global_count-invalid-rst", 2, 80) || f.Hit("nope", 1, 1) {
		t.Fatal("Hit does not find exactly the existing counters")
	}
	boom := errors.New("boom")
	f.FailNext(boom)
	if err := f.Replace(ruleset.Table{}); !errors.Is(err, boom) {
		t.Fatalf("FailNext: Replace = %v", err)
	}
	if err := f.Replace(want); err != nil {
		t.Fatal(err)
	}
	counters, _ := f.Counters()
	if c := counters["global_count-invalid-rst"]; c.Packets != 2 || c.Bytes != 80 {
		t.Errorf("counter not carried over Replace: %+v", c)
	}
	got, _ := f.Read()
	got.Sets[0].Elements[0] = "mutated"
	if again, _ := f.Read(); !ruleset.Equal(again, &want) {
		t.Error("Read returned shared memory")
	}
	f.FailNext(boom)
	if err := f.Delete(); !errors.Is(err, boom) {
		t.Fatalf("FailNext: Delete = %v", err)
	}
	if err := f.Delete(); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.Read(); got != nil {
		t.Error("table still there after Delete")
	}
	if counters, _ := f.Counters(); len(counters) != 0 || f.Hit("global_count-invalid-rst", 1, 1) {
		t.Error("counters survive Delete")
	}
}
