package selector

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/ctguard/ctguard/policy"
)

// span is an inclusive range of ordered values.
type span[T any] struct{ lo, hi T }

// u128 is an IPv6 address as a number.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	return u128{a.hi + 1, 0}, a.hi != ^uint64(0)
}

func v6num(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func v4num(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// addrSet is a list of prefixes as sorted, merged ranges per family. An
// empty list matches every address.
type addrSet struct {
	any bool
	v4  []span[uint32]
	v6  []span[u128]
}

func newAddrSet(prefixes []netip.Prefix) addrSet {
	s := addrSet{any: len(prefixes) == 0}
	for _, p := range prefixes {
		p = p.Masked()
		first := p.Addr()
		if first.Is4() {
			lo := v4num(first)
			s.v4 = append(s.v4, span[uint32]{lo, lo | (1<<(32-p.Bits()) - 1)})
			continue
		}
		lo := v6num(first)
		hi := lo
		host := 128 - p.Bits()
		switch {
		case host >= 64:
			hi.lo = ^uint64(0)
			hi.hi |= 1<<(host-64) - 1
		default:
			hi.lo |= 1<<host - 1
		}
		s.v6 = append(s.v6, span[u128]{lo, hi})
	}
	s.v4 = merge(s.v4, cmp.Compare[uint32], func(v uint32) (uint32, bool) { return v + 1, v != ^uint32(0) })
	s.v6 = merge(s.v6, u128.cmp, u128.next)
	return s
}

func (s *addrSet) contains(a netip.Addr) bool {
	if s.any {
		return true
	}
	if a.Is4() {
		return search(s.v4, v4num(a), cmp.Compare[uint32])
	}
	return search(s.v6, v6num(a), u128.cmp)
}

// portSet is a list of port ranges, sorted and merged. An empty list matches
// every port.
type portSet struct {
	any    bool
	ranges []span[uint16]
}

func newPortSet(prs []policy.PortRange) portSet {
	s := portSet{any: len(prs) == 0}
	for _, r := range prs {
		s.ranges = append(s.ranges, span[uint16]{min(r.From, r.To), max(r.From, r.To)})
	}
	s.ranges = merge(s.ranges, cmp.Compare[uint16], func(v uint16) (uint16, bool) { return v + 1, v != ^uint16(0) })
	return s
}

func (s *portSet) contains(p uint16) bool {
	return s.any || search(s.ranges, p, cmp.Compare[uint16])
}

// merge sorts spans and merges overlapping and adjacent ones; next returns
// the successor of a value and false when there is none.
func merge[T any](spans []span[T], compare func(a, b T) int, next func(T) (T, bool)) []span[T] {
	slices.SortFunc(spans, func(a, b span[T]) int { return compare(a.lo, b.lo) })
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 {
			last := &out[n-1]
			after, ok := next(last.hi)
			if !ok || compare(s.lo, after) <= 0 { // overlaps or touches last
				if compare(s.hi, last.hi) > 0 {
					last.hi = s.hi
				}
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// search reports whether v lies in one of the sorted, disjoint spans.
func search[T any](spans []span[T], v T, compare func(a, b T) int) bool {
	lo, hi := 0, len(spans)
	for lo < hi { // first span whose hi >= v
		mid := int(uint(lo+hi) >> 1)
		if compare(spans[mid].hi, v) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < len(spans) && compare(spans[lo].lo, v) <= 0
}
