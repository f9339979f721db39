package selector

import (
	"net/netip"

	"github.com/ctguard/ctguard/internal/intervals"
	"github.com/ctguard/ctguard/policy"
)

// addrSet is a list of prefixes as sorted, merged ranges per family. An
// empty list matches every address.
type addrSet struct {
	any bool
	intervals.Addrs
}

func newAddrSet(prefixes []netip.Prefix) addrSet {
	return addrSet{any: len(prefixes) == 0, Addrs: intervals.FromPrefixes(prefixes)}
}

func (s *addrSet) contains(a netip.Addr) bool {
	return s.any || s.Addrs.Contains(a)
}

// portSet is a list of port ranges, sorted and merged. An empty list matches
// every port.
type portSet struct {
	any    bool
	ranges []intervals.Span[uint16]
}

func newPortSet(prs []policy.PortRange) portSet {
	spans := make([]intervals.Span[uint16], 0, len(prs))
	for _, r := range prs {
		spans = append(spans, intervals.Span[uint16]{First: min(r.From, r.To), Last: max(r.From, r.To)})
	}
	return portSet{any: len(prs) == 0, ranges: intervals.Ports.Merge(spans)}
}

func (s *portSet) contains(p uint16) bool {
	return s.any || intervals.Ports.Contains(s.ranges, p)
}
