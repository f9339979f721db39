package lab

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	testServer   = netip.MustParseAddrPort("198.19.0.2:80")
	testNAT      = netip.MustParseAddr("198.19.0.1")
	testServerV6 = netip.MustParseAddrPort("[fd00:c7:2::2]:80")
	testNATV6    = netip.MustParseAddr("fd00:c7:2::1")
	serverMAC    = net.HardwareAddr{2, 0, 0, 0, 0, 2}
	natMAC       = net.HardwareAddr{2, 0, 0, 0, 0, 1}
)

// frame is a test segment between the server and the NAT's public tuple.
type frame struct {
	fromServer bool
	ttl        uint8
	tcp        layers.TCP
	payload    int
}

// encode builds the frame as the server namespace's capture sees it.
func (f frame) encode(t *testing.T, server netip.AddrPort, nat netip.Addr) gopacket.Packet {
	t.Helper()
	src, dst := nat, server.Addr()
	eth := &layers.Ethernet{SrcMAC: natMAC, DstMAC: serverMAC}
	tcp := f.tcp
	if f.fromServer {
		src, dst = dst, src
		eth.SrcMAC, eth.DstMAC = serverMAC, natMAC
	}
	var ip gopacket.SerializableLayer
	if server.Addr().Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{Version: 4, TTL: f.ttl, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: f.ttl, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, &tcp, gopacket.Payload(make([]byte, f.payload))); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if len(data) > snapLen { // as the capture's socket filter cuts it
		data = data[:snapLen]
	}
	return gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
}

const (
	natPort          = 40000
	clientISN uint32 = 1000
)

// serverISN is a variable so sequence arithmetic wraps as on the wire.
var serverISN uint32 = 0xfffff000

// tcpHandshake is SYN (window scale 7, TTL 63 after the NAT), SYN-ACK, ACK.
var tcpHandshake = []frame{
	{ttl: 63, tcp: layers.TCP{SrcPort: natPort, DstPort: 80, Seq: clientISN, SYN: true, Window: 64240,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}}}},
	{fromServer: true, ttl: 64, tcp: layers.TCP{SrcPort: 80, DstPort: natPort, Seq: serverISN, Ack: clientISN + 1, SYN: true, ACK: true, Window: 65160}},
	{ttl: 63, tcp: layers.TCP{SrcPort: natPort, DstPort: 80, Seq: clientISN + 1, Ack: serverISN + 1, ACK: true, Window: 502}},
}

func TestFlowTracker(t *testing.T) {
	request := frame{ttl: 63, payload: 100, tcp: layers.TCP{SrcPort: natPort, DstPort: 80, Seq: clientISN + 1, Ack: serverISN + 1, ACK: true, PSH: true, Window: 502}}
	data := frame{fromServer: true, ttl: 64, payload: 8000, tcp: layers.TCP{SrcPort: 80, DstPort: natPort, Seq: serverISN + 1, Ack: clientISN + 101, ACK: true, Window: 509}}
	ack := frame{ttl: 63, tcp: layers.TCP{SrcPort: natPort, DstPort: 80, Seq: clientISN + 101, Ack: serverISN + 8001, ACK: true, Window: 1000}}
	other := data
	other.tcp.DstPort = natPort + 1
	other.tcp.Seq += 1 << 20
	natRST := frame{ttl: 64, tcp: layers.TCP{SrcPort: natPort, DstPort: 80, Seq: clientISN + 101, RST: true}}
	forwardedRST := natRST
	forwardedRST.ttl = 63

	for _, fam := range []struct {
		name   string
		server netip.AddrPort
		nat    netip.Addr
	}{{"ipv4", testServer, testNAT}, {"ipv6", testServerV6, testNATV6}} {
		t.Run(fam.name, func(t *testing.T) {
			tr := newFlowTracker(fam.server, fam.nat, readyToInject(BeyondWindow, 4000))
			for _, f := range append(append([]frame{}, tcpHandshake...), request, data, ack, other, forwardedRST, natRST) {
				tr.observe(f.encode(t, fam.server, fam.nat))
			}
			s := tr.snapshot()
			want := flowState{
				Established: true, NATPort: natPort, ServerISN: serverISN, ServerNext: serverISN + 8001,
				ServerWin: 509, ClientNext: clientISN + 101, ClientWin: 1000 << 7, ForwardTTL: 63,
			}
			if s.Established != want.Established || s.NATPort != want.NATPort || s.ServerISN != want.ServerISN ||
				s.ServerNext != want.ServerNext || s.ServerWin != want.ServerWin || s.ClientNext != want.ClientNext ||
				s.ClientWin != want.ClientWin || s.ForwardTTL != want.ForwardTTL {
				t.Errorf("state %+v\nwant  %+v", s, want)
			}
			if s.Sent() != 8000 {
				t.Errorf("Sent() = %d, want 8000", s.Sent())
			}
			if s.ServerMAC.String() != serverMAC.String() || s.NATMAC.String() != natMAC.String() {
				t.Errorf("MACs %s -> %s", s.ServerMAC, s.NATMAC)
			}
			if len(s.NATResets) != 1 || s.NATResets[0] != (reset{Seq: clientISN + 101, TTL: 64}) {
				t.Errorf("NAT resets %v, want the TTL 64 one only", s.NATResets)
			}
			select {
			case <-tr.reached:
			default:
				t.Error("reached not closed after 8000 bytes with threshold 4000")
			}
		})
	}
}

func TestReadyToInject(t *testing.T) {
	base := flowState{Established: true, ServerISN: 0, ServerNext: 1 + 10000, ClientWin: 5000}
	for _, tc := range []struct {
		name string
		c    Case
		s    flowState
		want bool
	}{
		{"beyond before threshold", BeyondWindow, flowState{Established: true, ServerNext: 1 + 999}, false},
		{"beyond at threshold", BeyondWindow, flowState{Established: true, ServerNext: 1 + 1000}, true},
		{"not established", BeyondWindow, flowState{ServerNext: 1 + 5000}, false},
		{"old, window behind", OldRetransmission, base, true},
		{"old, window not yet behind", OldRetransmission, flowState{Established: true, ServerNext: 1 + 10000, ClientWin: 9950}, false},
	} {
		if got := readyToInject(tc.c, 1000)(tc.s); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
