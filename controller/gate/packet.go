package gate

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 extension headers the parser steps over.
const (
	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6DestOpts = 60
	ipv6AH       = 51
	maxExtHdrs   = 4
)

// replyTuple reads the addresses and ports of a queued TCP packet (IPv4 or
// IPv6, as copied from the network header on): at prerouting before NAT,
// they are its conntrack entry's REPLY tuple. ok is false for anything else
// or a truncated copy.
func replyTuple(p []byte) (t Tuple, ok bool) {
	if len(p) < 1 {
		return t, false
	}
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return t, false
		}
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || len(p) < ihl || p[9] != protoTCP {
			return t, false
		}
		if binary.BigEndian.Uint16(p[6:])&0x1fff != 0 {
			return t, false // a later fragment has no TCP header
		}
		t.Src = netip.AddrFrom4([4]byte(p[12:16]))
		t.Dst = netip.AddrFrom4([4]byte(p[16:20]))
		l4 = p[ihl:]
	case 6:
		if len(p) < 40 {
			return t, false
		}
		t.Src = netip.AddrFrom16([16]byte(p[8:24]))
		t.Dst = netip.AddrFrom16([16]byte(p[24:40]))
		next, off := p[6], 40
		for range maxExtHdrs {
			if next == protoTCP {
				break
			}
			if len(p) < off+8 {
				return t, false
			}
			switch next {
			case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
				next, off = p[off], off+(int(p[off+1])+1)*8
			case ipv6AH:
				next, off = p[off], off+(int(p[off+1])+2)*4
			default:
				return t, false // fragments and the like
			}
		}
		if next != protoTCP || len(p) < off {
			return t, false
		}
		l4 = p[off:]
	default:
		return t, false
	}
	if len(l4) < 4 {
		return t, false
	}
	t.SrcPort = binary.BigEndian.Uint16(l4[0:])
	t.DstPort = binary.BigEndian.Uint16(l4[2:])
	return t, true
}
