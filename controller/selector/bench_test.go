package selector

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// cidrs returns n /31 prefixes inside 198.18.0.0/15, two addresses apart so
// that they do not merge.
func cidrs(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>14), byte(i >> 6), byte(i<<2) & 0xfc})
		out[i] = netip.PrefixFrom(a, 31)
	}
	return out
}

func BenchmarkMatch(b *testing.B) {
	yes := true
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("cidrs=%d", n), func(b *testing.B) {
			ps := cidrs(n)
			s, err := Compile([]policy.Policy{
				perFlow("web", policy.Match{Family: policy.FamilyIPv4, Sources: ps, DestinationPorts: []policy.PortRange{{From: 443, To: 443}}, NATOnly: &yes}),
				perFlow("any", policy.Match{Destinations: ps}),
			})
			if err != nil {
				b.Fatal(err)
			}
			last := ps[len(ps)-1].Addr().Next() // inside the last prefix
			f := &flows.Flow{Proto: flows.ProtoTCP, Status: flows.StatusSrcNAT, Orig: flows.Tuple{
				Src: last, Dst: netip.MustParseAddr("198.19.255.254"), SrcPort: 40000, DstPort: 443,
			}}
			b.ReportAllocs()
			for b.Loop() {
				if r := s.Match(f); r.Policies != 1 {
					b.Fatalf("Match = %+v", r)
				}
			}
		})
	}
}
