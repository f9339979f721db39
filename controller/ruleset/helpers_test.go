package ruleset

import (
	"net/netip"

	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

func boolPtr(b bool) *bool { return &b }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func dropInvalid(name string, m policy.Match, ifaces []string, hooks ...policy.Hook) policy.Policy {
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Interfaces: ifaces, Hooks: hooks},
			Match:       m,
		},
	})
}

func liberal(name string, scope policy.Scope, m policy.Match) policy.Policy {
	l := &policy.Liberal{Scope: scope}
	if scope == policy.ScopePerFlow {
		l.Directions, l.ExistingFlows = []policy.Direction{policy.DirectionReply}, boolPtr(true)
	}
	return policytest.New(policy.Document{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    l,
			Match:      m,
		},
	})
}

// testOpts are the Build options of the tests: the default mark bit and a
// queue base.
var testOpts = Options{MarkBit: 0x00800000, Queue: 7301}

func handshake(p policy.Policy, h policy.Handshake) policy.Policy {
	d := p.Document()
	d.Spec.Liberal.Handshake = h
	return policytest.New(d)
}

func directions(p policy.Policy, ds ...policy.Direction) policy.Policy {
	d := p.Document()
	d.Spec.Liberal.Directions = ds
	return policytest.New(d)
}
