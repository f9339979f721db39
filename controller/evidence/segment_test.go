package evidence

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tcpHeader is a 20-byte TCP header with data offset 5.
func tcpHeader(sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 512)
	return b
}

func ipv4(src, dst string, proto byte, l4 []byte, payload int) []byte {
	b := make([]byte, 20)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)+payload))
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, l4...)
}

func ipv6(src, dst string, next byte, l4 []byte, payload int) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(l4)+payload))
	b[6] = next
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, l4...)
}

func TestParseSegment(t *testing.T) {
	v4 := ipv4("198.19.0.10", "198.19.0.1", 6, tcpHeader(443, 40000, 1000, 2000, FlagACK), 1400)
	s, ok := ParseSegment(v4)
	want := Segment{Src: netip.MustParseAddrPort("198.19.0.10:443"), Dst: netip.MustParseAddrPort("198.19.0.1:40000"),
		Seq: 1000, Ack: 2000, Flags: FlagACK, Window: 512, PayloadLen: 1400}
	if !ok || s != want {
		t.Errorf("IPv4: %+v %v", s, ok)
	}
	v6 := ipv6("fd00:c7::1", "fd00:c7::2", 6, tcpHeader(1, 2, 3, 4, FlagRST|FlagACK), 0)
	if s, ok := ParseSegment(v6); !ok || !s.RST() || s.Src.String() != "[fd00:c7::1]:1" || s.PayloadLen != 0 {
		t.Errorf("IPv6: %+v %v", s, ok)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"udp":            ipv4("1.1.1.1", "2.2.2.2", 17, tcpHeader(1, 2, 3, 4, 0), 0),
		"truncated tcp":  v4[:30],
		"truncated ipv4": v4[:10],
		"bad ihl":        append([]byte{0x41}, v4[1:]...),
		"v6 ext header":  ipv6("fd00:c7::1", "fd00:c7::2", 0, tcpHeader(1, 2, 3, 4, 0), 0),
		"version 5":      append([]byte{0x50}, v4[1:]...),
	} {
		if _, ok := ParseSegment(b); ok {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestSequenceGaps(t *testing.T) {
	var r Reader
	for _, s := range []uint32{5, 6, 9, 10} {
		r.countSeq(s)
	}
	if got := r.lost.Load(); got != 2 { // 7, 8
		t.Errorf("lost %d, want 2", got)
	}
	var w Reader // across the wrap: 0xfffffffe, 1 and 2 lost
	for _, s := range []uint32{0xfffffffd, 0xffffffff, 0, 3} {
		w.countSeq(s)
	}
	if got := w.lost.Load(); got != 3 {
		t.Errorf("lost across the wrap %d, want 3", got)
	}
}
