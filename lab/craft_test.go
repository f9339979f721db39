package lab

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestPlan(t *testing.T) {
	s := flowState{ServerISN: 0xfffffff0, ServerNext: 0x00100000, ClientNext: 777}
	for _, tc := range []struct {
		c       Case
		wantSeq uint32
	}{
		{BeyondWindow, 0x00100000 + beyondWindowOffset},
		{OldRetransmission, 0xfffffff1},
	} {
		seg, err := plan(tc.c, s)
		if err != nil {
			t.Fatal(err)
		}
		if seg.Seq != tc.wantSeq || seg.Ack != 777 || len(seg.Payload) != injectedPayload {
			t.Errorf("%s: seq %#x ack %d len %d, want seq %#x ack 777 len %d", tc.c, seg.Seq, seg.Ack, len(seg.Payload), tc.wantSeq, injectedPayload)
		}
	}
	if !seqAfter(s.ServerNext+beyondWindowOffset, s.ServerNext) {
		t.Error("beyond-window sequence is not after snd_nxt in sequence arithmetic")
	}
	if _, err := plan("sideways", s); !errors.Is(err, ErrUnknownCase) {
		t.Errorf("unknown case: %v", err)
	}
}

func TestCraft(t *testing.T) {
	s := flowState{NATPort: natPort, ServerMAC: serverMAC, NATMAC: natMAC, ServerWin: 509}
	seg := segment{Seq: 0x12345678, Ack: 0x9abcdef0, Payload: []byte("ctguard lab")}
	for _, fam := range []struct {
		name   string
		server netip.AddrPort
		nat    netip.Addr
	}{{"ipv4", testServer, testNAT}, {"ipv6", testServerV6, testNATV6}} {
		t.Run(fam.name, func(t *testing.T) {
			b, err := craft(fam.server, fam.nat, s, seg)
			if err != nil {
				t.Fatal(err)
			}
			p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := p.LinkLayer().(*layers.Ethernet)
			tcp, _ := p.TransportLayer().(*layers.TCP)
			if eth == nil || tcp == nil || p.ErrorLayer() != nil {
				t.Fatalf("undecodable frame: %v", p)
			}
			src, dst, ttl, _ := ipInfo(p.NetworkLayer())
			if eth.SrcMAC.String() != serverMAC.String() || eth.DstMAC.String() != natMAC.String() ||
				src != fam.server.Addr() || dst != fam.nat || ttl != 64 {
				t.Errorf("addresses %s %s -> %s %s ttl %d", eth.SrcMAC, src, eth.DstMAC, dst, ttl)
			}
			if tcp.SrcPort != 80 || tcp.DstPort != natPort || tcp.Seq != seg.Seq || tcp.Ack != seg.Ack ||
				!tcp.ACK || !tcp.PSH || tcp.SYN || tcp.RST || tcp.FIN || tcp.Window != 509 || string(tcp.Payload) != "ctguard lab" {
				t.Errorf("tcp %+v", tcp)
			}
			if got := tcpChecksum(fam.server.Addr(), fam.nat, p.NetworkLayer().LayerPayload()); got != 0 {
				t.Errorf("TCP checksum does not verify (sum %#x)", got)
			}
			if ip4, ok := p.NetworkLayer().(*layers.IPv4); ok && onesSum(ip4.Contents) != 0xffff {
				t.Error("IPv4 header checksum does not verify")
			}
		})
	}
}

// tcpChecksum folds the pseudo-header and segment: 0 when the segment's
// checksum is right (RFC 793, RFC 8200 section 8.1), computed here without
// gopacket.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
	pseudo = binary.BigEndian.AppendUint32(pseudo, 6)
	return ^onesSum(append(pseudo, seg...))
}

// onesSum is the 16-bit one's complement sum of b.
func onesSum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
