package ruleset

import (
	"net/netip"

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
	return policy.Policy{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Interfaces: ifaces, Hooks: hooks},
			Match:       m,
		},
	}
}

func liberal(name string, scope policy.Scope, m policy.Match) policy.Policy {
	return policy.Policy{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: scope, Directions: []policy.Direction{policy.DirectionReply}, ExistingFlows: boolPtr(true)},
			Match:      m,
		},
	}
}

// testOpts are the Build options of the tests: the default mark bit and a
// queue base.
var testOpts = Options{MarkBit: 0x00800000, Queue: 7301}

func handshake(p policy.Policy, h policy.Handshake) policy.Policy {
	p.Spec.Liberal.Handshake = h
	return p
}

func directions(p policy.Policy, ds ...policy.Direction) policy.Policy {
	p.Spec.Liberal.Directions = ds
	return p
}
