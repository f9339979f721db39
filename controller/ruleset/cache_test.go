package ruleset

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/ctguard/ctguard/policy"
)

// randomMatches returns matches for policies a, b and c with random
// destinations (both families, overlapping and adjacent ones) and ports;
// some rounds leave a policy out.
func randomMatches(rng *rand.Rand) map[string]policy.Match {
	ms := map[string]policy.Match{}
	for _, name := range []string{"a", "b", "c"} {
		if rng.IntN(5) == 0 {
			continue
		}
		var m policy.Match
		for range rng.IntN(20) {
			a := netip.AddrFrom4([4]byte{198, 18, byte(rng.IntN(4)), byte(rng.IntN(256))})
			if rng.IntN(3) == 0 {
				a = netip.AddrFrom16([16]byte{0xfd, 0, 0xc7, 14: byte(rng.IntN(4)), 15: byte(rng.IntN(256))})
			}
			m.Destinations = append(m.Destinations, netip.PrefixFrom(a, a.BitLen()-rng.IntN(6)).Masked())
		}
		for range rng.IntN(4) {
			from := uint16(440 + rng.IntN(10))
			m.DestinationPorts = append(m.DestinationPorts, policy.PortRange{From: from, To: from + uint16(rng.IntN(3))})
		}
		ms[name] = m
	}
	return ms
}

// policiesOf builds policy b as perFlow liberal, the others as
// dropInvalid, each list without the duplicates validation rejects.
func policiesOf(ms map[string]policy.Match) []policy.Policy {
	var ps []policy.Policy
	for _, name := range []string{"a", "b", "c"} {
		m, ok := ms[name]
		m.Destinations, m.DestinationPorts = unique(m.Destinations), unique(m.DestinationPorts)
		switch {
		case !ok:
		case name == "b":
			ps = append(ps, liberal(name, policy.ScopePerFlow, m))
		default:
			ps = append(ps, dropInvalid(name, m, nil))
		}
	}
	return ps
}

// TestSetCacheBuildsWhatBuildBuilds builds a sequence of random policy
// sets with one cache and checks every table against Build's.
func TestSetCacheBuildsWhatBuildBuilds(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	var c SetCache
	ms := randomMatches(rng)
	for round := range 300 {
		if rng.IntN(3) == 0 {
			ms = randomMatches(rng)
		} else {
			// Edit one destination of one policy, as an operator would.
			name := []string{"a", "b", "c"}[rng.IntN(3)]
			if m := ms[name]; len(m.Destinations) > 0 {
				d := slices.Clone(m.Destinations)
				d[rng.IntN(len(d))] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 5, byte(round)}), 32)
				m.Destinations = d
				ms[name] = m
			}
		}
		ps := policiesOf(ms)
		got, want := c.Build(ps, testOpts), Build(ps, testOpts)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: cached build\n%s\nwant\n%s", round, got.String(), want.String())
		}
	}
}

// TestSetCacheReusesUnchangedElements edits one address of a large set:
// the other elements are the last build's strings, and an unchanged
// policy's set is the last build's slice.
func TestSetCacheReusesUnchangedElements(t *testing.T) {
	hosts := func(n, edit int) []netip.Prefix {
		out := make([]netip.Prefix, n)
		for i := range out {
			out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(2 * i >> 8), byte(2 * i)}), 32)
		}
		if edit >= 0 {
			out[edit] = netip.MustParsePrefix("10.200.0.1/32")
		}
		return out
	}
	other := dropInvalid("other", policy.Match{Destinations: hosts(50, -1)}, nil)
	before := []policy.Policy{dropInvalid("big", policy.Match{Destinations: hosts(1000, -1)}, nil), other}
	after := []policy.Policy{dropInvalid("big", policy.Match{Destinations: hosts(1000, 500)}, nil), other}
	var c SetCache
	t1 := c.Build(before, testOpts)
	t2 := c.Build(after, testOpts)
	set := func(t Table, name string) []string {
		i := slices.IndexFunc(t.Sets, func(s Set) bool { return s.Name == name })
		return t.Sets[i].Elements
	}
	old, edited := set(t1, "big-dst4"), set(t2, "big-dst4")
	add, remove := ElementDiff(SetIPv4Addr, edited, old)
	if !slices.Equal(add, []string{"10.200.0.1"}) || !slices.Equal(remove, []string{"10.0.3.232"}) {
		t.Fatalf("edit: added %v, removed %v", add, remove)
	}
	shared := 0
	for _, e := range edited {
		if i, ok := slices.BinarySearchFunc(old, e, func(x, y string) int { return compareOrZero(x, y) }); ok && unsafe.StringData(old[i]) == unsafe.StringData(e) {
			shared++
		}
	}
	if shared != len(edited)-1 {
		t.Errorf("%d of %d elements are the last build's strings, want all but the edited one", shared, len(edited))
	}
	if a, b := set(t1, "other-dst4"), set(t2, "other-dst4"); unsafe.SliceData(a) != unsafe.SliceData(b) {
		t.Error("the unchanged policy's set was built again")
	}
	if !reflect.DeepEqual(t2, Build(after, testOpts)) {
		t.Error("cached build differs from Build")
	}
}

// unique returns list without repeated elements, in first-seen order.
func unique[T comparable](list []T) []T {
	seen := map[T]bool{}
	var out []T
	for _, v := range list {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// compareOrZero orders IPv4 set elements by their first address.
func compareOrZero(x, y string) int {
	c, _ := compareElements(SetIPv4Addr, x, y)
	return c
}
