package ruleset

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ctguard/ctguard/internal/intervals"
)

// AddrRange is an inclusive range of addresses of one family.
type AddrRange struct {
	First, Last netip.Addr
}

// PortSpan is an inclusive range of TCP ports.
type PortSpan struct {
	First, Last uint16
}

// String renders the range as nft lists it: "198.18.0.1" for one address,
// "198.18.0.0/15" for a whole prefix, "198.18.1.0-198.18.2.255" otherwise.
func (r AddrRange) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	if n, ok := prefixBits(r.First, r.Last); ok {
		return netip.PrefixFrom(r.First, n).String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// prefixBits returns the length of the prefix whose addresses are exactly
// first to last, if there is one: the bits the two share, followed by
// zeros in first and ones in last.
func prefixBits(first, last netip.Addr) (int, bool) {
	a, b := first.As16(), last.As16()
	ahi, alo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	bhi, blo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	xhi, xlo := ahi^bhi, alo^blo
	common := bits.LeadingZeros64(xhi)
	if xhi == 0 {
		common = 64 + bits.LeadingZeros64(xlo)
	}
	// host is the mask of the bits after the common prefix.
	hostHi, hostLo := ^uint64(0), ^uint64(0)
	switch {
	case common >= 128:
		hostHi, hostLo = 0, 0
	case common >= 64:
		hostHi, hostLo = 0, ^uint64(0)>>(common-64)
	default:
		hostHi = ^uint64(0) >> common
	}
	if ahi&hostHi != 0 || alo&hostLo != 0 || bhi&hostHi != hostHi || blo&hostLo != hostLo {
		return 0, false
	}
	if first.Is4() {
		common -= 96
	}
	return common, true
}

// String renders the span as nft lists it: "443" or "8000-8100".
func (s PortSpan) String() string {
	if s.First == s.Last {
		return strconv.Itoa(int(s.First))
	}
	return strconv.Itoa(int(s.First)) + "-" + strconv.Itoa(int(s.Last))
}

// ParseAddrRange parses an element rendered by AddrRange.String.
func ParseAddrRange(s string) (AddrRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(first)
		if err != nil {
			return AddrRange{}, fmt.Errorf("address range %q: %w", s, err)
		}
		b, err := netip.ParseAddr(last)
		if err != nil {
			return AddrRange{}, fmt.Errorf("address range %q: %w", s, err)
		}
		if a.BitLen() != b.BitLen() || a.Compare(b) > 0 {
			return AddrRange{}, fmt.Errorf("address range %q: bounds out of order or of mixed families", s)
		}
		return AddrRange{First: a, Last: b}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return AddrRange{}, fmt.Errorf("address prefix %q: %w", s, err)
		}
		first, last := intervals.PrefixBounds(p)
		return AddrRange{First: first, Last: last}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return AddrRange{}, fmt.Errorf("address %q: %w", s, err)
	}
	return AddrRange{First: a, Last: a}, nil
}

// ParsePortSpan parses an element rendered by PortSpan.String.
func ParsePortSpan(s string) (PortSpan, error) {
	first, last, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(first, 10, 16)
	if err != nil {
		return PortSpan{}, fmt.Errorf("port %q: %w", s, err)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(last, 10, 16); err != nil {
			return PortSpan{}, fmt.Errorf("port range %q: %w", s, err)
		}
	}
	if a > b {
		return PortSpan{}, fmt.Errorf("port range %q: bounds out of order", s)
	}
	return PortSpan{First: uint16(a), Last: uint16(b)}, nil
}
