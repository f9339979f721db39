package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// packetSocket is an AF_PACKET socket bound to one link of a namespace. It
// sees the link's frames in both directions (ETH_P_ALL: ETH_P_IP would miss
// the outgoing ones) and sends raw frames out of it.
type packetSocket struct {
	f *os.File
}

// Capture sizing. Only headers matter (payload lengths come from the IP
// headers), so a socket filter cuts every frame to snapLen bytes: Ethernet,
// IPv6 and the longest TCP header fit. The receive buffer then holds
// seconds of traffic if the reader is starved of CPU; a lost frame could
// hide the NAT's RST, and drops reports any.
const (
	snapLen       = 128
	captureBuffer = 4 << 20
)

// openPacketSocket opens the socket on a thread inside ns, bound to link.
func openPacketSocket(ns Namespace, link string) (*packetSocket, error) {
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		// Protocol 0 receives nothing until bind names the link and ETH_P_ALL.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		snap := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: snapLen}}
		err = errors.Join(
			unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &snap[0]}),
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, captureBuffer),
			unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}),
		)
		if err != nil {
			unix.Close(fd)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s in %s: %w", link, ns.Name, err)
	}
	// A non-blocking descriptor joins the runtime poller: Close ends a
	// pending Read.
	return &packetSocket{f: os.NewFile(uintptr(fd), "packet:"+link)}, nil
}

// feed decodes every frame (its first snapLen bytes) into observe until the
// socket is closed.
func (p *packetSocket) feed(observe func(gopacket.Packet)) {
	buf := make([]byte, snapLen)
	for {
		n, err := p.f.Read(buf)
		if err != nil {
			return
		}
		observe(gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default))
	}
}

// drops returns how many frames the kernel could not queue to the socket
// since the last call.
func (p *packetSocket) drops() (uint32, error) {
	raw, err := p.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var stats *unix.TpacketStats
	cerr := raw.Control(func(fd uintptr) {
		stats, err = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err = errors.Join(cerr, err); err != nil {
		return 0, fmt.Errorf("packet socket statistics: %w", err)
	}
	return stats.Drops, nil
}

// send transmits one Ethernet frame out of the bound link.
func (p *packetSocket) send(frame []byte) error {
	if _, err := p.f.Write(frame); err != nil {
		return fmt.Errorf("send crafted frame: %w", err)
	}
	return nil
}

// Close closes the socket.
func (p *packetSocket) Close() error { return p.f.Close() }

// htons converts a 16-bit value to network byte order.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
