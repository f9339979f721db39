package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// segment is a TCP segment the lab forges as if the server had sent it.
type segment struct {
	Seq, Ack uint32
	Payload  []byte
}

// Offsets of the crafted segments.
const (
	// beyondWindowOffset puts a segment this far past the server's snd_nxt:
	// beyond any receive window (the largest is 1 GiB with scale 14) and
	// still "after" in 32-bit sequence arithmetic.
	beyondWindowOffset = 1<<30 + 1<<28
	// injectedPayload is the length of a crafted segment's data.
	injectedPayload = 100
)

// readyToInject returns when case c's segment can be sent: once the server
// has sent threshold bytes and, for an old retransmission, once its first
// bytes lie more than the client's largest window behind snd_nxt (older
// kernels' lower bound for valid data).
func readyToInject(c Case, threshold uint32) func(flowState) bool {
	return func(s flowState) bool {
		if !s.Established || s.Sent() < threshold {
			return false
		}
		return c != OldRetransmission || s.Sent() > s.ClientWin+injectedPayload
	}
}

// plan returns the segment that reproduces case c on the flow in state s.
// Both carry ACK|PSH, the client's current sequence number as ACK (inside
// the window conntrack accepts for ACKs) and 100 bytes of data.
//
//   - beyond-window: Seq = snd_nxt + 1.25 GiB, beyond the client's window.
//   - old-retransmission: Seq = ISN+1, a repeat of the first response
//     bytes, ACKed long ago and, by readyToInject, more than the client's
//     largest window behind: kernels before 6.1 mark it invalid, 6.1+
//     ignore it ("ignore overly delayed tcp packets").
func plan(c Case, s flowState) (segment, error) {
	seg := segment{Ack: s.ClientNext, Payload: make([]byte, injectedPayload)}
	switch c {
	case BeyondWindow:
		seg.Seq = s.ServerNext + beyondWindowOffset
	case OldRetransmission:
		seg.Seq = s.ServerISN + 1
	default:
		return segment{}, fmt.Errorf("%q: %w", c, ErrUnknownCase)
	}
	copy(seg.Payload, "ctguard lab crafted segment")
	return seg, nil
}

// craft encodes seg as an Ethernet frame from the server to the NAT's
// public tuple of the flow in state s, with lengths and checksums computed.
func craft(server netip.AddrPort, nat netip.Addr, s flowState, seg segment) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: s.ServerMAC, DstMAC: s.NATMAC}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(server.Port()),
		DstPort: layers.TCPPort(s.NATPort),
		Seq:     seg.Seq,
		Ack:     seg.Ack,
		ACK:     true,
		PSH:     true,
		Window:  s.ServerWin,
	}
	var ip gopacket.SerializableLayer
	if server.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{
			Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: net.IP(server.Addr().AsSlice()), DstIP: net.IP(nat.AsSlice()),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, err
		}
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{
			Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(server.Addr().AsSlice()), DstIP: net.IP(nat.AsSlice()),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, err
		}
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(seg.Payload)); err != nil {
		return nil, fmt.Errorf("encode segment: %w", err)
	}
	return buf.Bytes(), nil
}
