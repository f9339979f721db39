package ruleset

import (
	"net/netip"
	"testing"

	"github.com/ctguard/ctguard/policy"
)

// hostsPolicies returns a dropInvalid policy of n IPv4 addresses two
// apart; edit >= 0 replaces the one at that index by 10.200.0.1.
func hostsPolicies(n, edit int) []policy.Policy {
	dst := make([]netip.Prefix, n)
	a := netip.MustParseAddr("10.0.0.0")
	for i := range dst {
		dst[i], a = netip.PrefixFrom(a, 32), a.Next().Next()
	}
	if edit >= 0 {
		dst[edit] = netip.MustParsePrefix("10.200.0.1/32")
	}
	return []policy.Policy{dropInvalid("big", policy.Match{Family: policy.FamilyIPv4, Destinations: dst}, nil, policy.HookInput)}
}

// BenchmarkBuild100k builds the table of a 100,000-address policy: from
// nothing (Build, as a one-shot command does) and, with a SetCache, after
// editing one address (as a running controller does on a reload).
func BenchmarkBuild100k(b *testing.B) {
	versions := [2][]policy.Policy{hostsPolicies(100000, -1), hostsPolicies(100000, 50000)}
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Build(versions[0], testOpts)
		}
	})
	b.Run("edit-one/cached", func(b *testing.B) {
		var c SetCache
		c.Build(versions[0], testOpts)
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			n++
			c.Build(versions[n%2], testOpts)
		}
	})
}
