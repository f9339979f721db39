package handshake

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// BeyondWindowOffset puts a crafted segment this far past the sender's
// snd_nxt: beyond any receive window (the largest is 1 GiB with scale 14)
// and still "after" snd_nxt in 32-bit sequence arithmetic, so conntrack
// finds it over the window's upper bound on every kernel.
const BeyondWindowOffset = 1<<30 + 1<<28

// CraftedPayload is the data length of the crafted segment.
const CraftedPayload = 100

// Craft encodes the segment from local to remote with sequence number seq
// and acknowledgement ack (ACK|PSH, CraftedPayload bytes) as an IP packet
// with lengths and checksums computed, for an IPPROTO_RAW socket.
func Craft(local, remote netip.AddrPort, seq, ack uint32) ([]byte, error) {
	local, remote = netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	if local.Addr().Is4() != remote.Addr().Is4() {
		return nil, fmt.Errorf("craft segment %s -> %s: mixed address families", local, remote)
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(local.Port()),
		DstPort: layers.TCPPort(remote.Port()),
		Seq:     seq,
		Ack:     ack,
		ACK:     true,
		PSH:     true,
		Window:  502,
	}
	var ip gopacket.SerializableLayer
	if local.Addr().Is4() {
		ip4 := &layers.IPv4{
			Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: net.IP(local.Addr().AsSlice()), DstIP: net.IP(remote.Addr().AsSlice()),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip4); err != nil {
			return nil, err
		}
		ip = ip4
	} else {
		ip6 := &layers.IPv6{
			Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.IP(local.Addr().AsSlice()), DstIP: net.IP(remote.Addr().AsSlice()),
		}
		if err := tcp.SetNetworkLayerForChecksum(ip6); err != nil {
			return nil, err
		}
		ip = ip6
	}
	payload := make([]byte, CraftedPayload)
	copy(payload, "ctguard handshake lab: beyond the window")
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp, gopacket.Payload(payload)); err != nil {
		return nil, fmt.Errorf("encode segment: %w", err)
	}
	return buf.Bytes(), nil
}

// Injector sends, from a server connection's own tuple, the crafted
// segment beyond the client's window: the one injection of the lab's
// server and of the kernel tests' adversary (internal/racetest). It sends
// complete IP packets (IPPROTO_RAW: the header is its own) through the
// routing table of the namespace it was opened in.
type Injector struct {
	fd   int
	ipv6 bool
}

// NewInjector opens the raw socket in the calling thread's namespace (call
// it inside netns.Do).
func NewInjector(ipv6 bool) (*Injector, error) {
	domain := unix.AF_INET
	if ipv6 {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return &Injector{fd: fd, ipv6: ipv6}, nil
}

// Inject reads the server connection c's sequence numbers (TCP_REPAIR) and
// sends, from c's own address and port, CraftedPayload bytes at its next
// sequence number + BeyondWindowOffset. Concurrent calls are safe.
func (r *Injector) Inject(c *net.TCPConn) error {
	snd, rcv, err := sequences(c)
	if err != nil {
		return err
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	pkt, err := Craft(local, remote, snd+BeyondWindowOffset, rcv)
	if err != nil {
		return err
	}
	return r.send(pkt, remote.Addr())
}

// send transmits pkt towards dst. Concurrent calls are safe: each is one
// sendto.
func (r *Injector) send(pkt []byte, dst netip.Addr) error {
	var sa unix.Sockaddr
	if r.ipv6 {
		sa = &unix.SockaddrInet6{Addr: dst.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: dst.Unmap().As4()}
	}
	if err := unix.Sendto(r.fd, pkt, 0, sa); err != nil {
		return fmt.Errorf("send crafted segment to %s: %w", dst, err)
	}
	return nil
}

// Close closes the socket.
func (r *Injector) Close() error { return unix.Close(r.fd) }
