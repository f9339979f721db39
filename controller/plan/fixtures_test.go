package plan

import (
	"net/netip"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

func ptr[T any](v T) *T { return &v }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// egress is a perFlow liberal policy for HTTPS servers behind the SNAT.
func egress(destinations ...string) policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: "egress"},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow, Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: ptr(true)},
			Match: policy.Match{
				Family:           policy.FamilyIPv4,
				Destinations:     prefixes(destinations...),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
			},
		},
	})
}

// wanDrop drops invalid packets from 198.19.0.0/16 arriving on wan0.
func wanDrop(hooks ...policy.Hook) policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: "wan-drop"},
		Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Interfaces: []string{"wan0"}, Hooks: hooks},
			Match:       policy.Match{Family: policy.FamilyIPv4, Destinations: prefixes("198.19.0.0/16")},
		},
	})
}

// global asks for the global be_liberal sysctl.
func global() policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: "global"},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopeGlobal},
			Match:      policy.Match{Family: policy.FamilyAny},
		},
	})
}

func table(ps ...policy.Policy) *ruleset.Table {
	t := ruleset.Build(ps, testOpts)
	return &t
}

func liberal(v string) map[string]string { return map[string]string{sysctl.BeLiberal: v} }

func egressFlow(matching int, sample ...string) PerFlowPolicy {
	return PerFlowPolicy{
		Name:          "egress",
		Directions:    []policy.Direction{policy.DirectionReply},
		ExistingFlows: true,
		MatchingFlows: matching,
		Sample:        sample,
	}
}

// base is a box with an egress perFlow policy and a wan0 drop in force.
func base() State {
	return State{
		Table:   table(egress("198.18.0.0/24"), wanDrop()),
		Sysctls: liberal("0"),
		PerFlow: []PerFlowPolicy{egressFlow(0)},
	}
}

// withCounterValues returns a copy of s whose counters have counted.
func withCounterValues(s State, n uint64) State {
	if s.Table == nil {
		return s
	}
	t := *s.Table
	t.Counters = make([]ruleset.Counter, len(s.Table.Counters))
	for i, c := range s.Table.Counters {
		t.Counters[i] = ruleset.Counter{Name: c.Name, Packets: n * uint64(i+1), Bytes: 60 * n * uint64(i+1)}
	}
	s.Table = &t
	return s
}

// editChain returns a deep enough copy of t with chain hook's rules
// replaced by edit's result.
func editChain(t *ruleset.Table, hook ruleset.Hook, edit func([]ruleset.Rule) []ruleset.Rule) *ruleset.Table {
	c := *t
	c.Chains = make([]ruleset.Chain, len(t.Chains))
	copy(c.Chains, t.Chains)
	for i := range c.Chains {
		if c.Chains[i].Hook == hook {
			rules := append([]ruleset.Rule(nil), c.Chains[i].Rules...)
			c.Chains[i].Rules = edit(rules)
		}
	}
	return &c
}

// unrecognised is a rule someone added to inet ctguard by hand.
func unrecognised(detail string) ruleset.Rule {
	return ruleset.Rule{Purpose: ruleset.PurposeUnrecognised, Detail: detail}
}

// testOpts are the ruleset.Build options of the tests.
var testOpts = ruleset.Options{MarkBit: 0x00800000, Queue: 7301}
