package evidence

import (
	"encoding/binary"
	"net/netip"
)

// TCP header flags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagACK = 0x10
)

// Segment is the part of a TCP segment's IP and TCP headers an incident
// report needs.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	// PayloadLen is the TCP payload's length per the IP header (the log
	// carries only the headers).
	PayloadLen int
}

// RST reports whether the segment carries the RST flag.
func (s Segment) RST() bool { return s.Flags&FlagRST != 0 }

// ParseSegment decodes an IPv4 or IPv6 packet carrying TCP (IPv6 without
// extension headers). ok is false for anything else or a truncated header.
func ParseSegment(b []byte) (s Segment, ok bool) {
	if len(b) < 1 {
		return s, false
	}
	var src, dst netip.Addr
	var l4 []byte
	var ipPayload int
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl || b[9] != 6 {
			return s, false
		}
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		ipPayload = int(binary.BigEndian.Uint16(b[2:4])) - ihl
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 || b[6] != 6 {
			return s, false
		}
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		ipPayload = int(binary.BigEndian.Uint16(b[4:6]))
		l4 = b[40:]
	default:
		return s, false
	}
	if len(l4) < 20 {
		return s, false
	}
	s.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
	s.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
	s.Seq = binary.BigEndian.Uint32(l4[4:8])
	s.Ack = binary.BigEndian.Uint32(l4[8:12])
	s.Flags = l4[13]
	s.Window = binary.BigEndian.Uint16(l4[14:16])
	s.PayloadLen = max(ipPayload-int(l4[12]>>4)*4, 0)
	return s, true
}
