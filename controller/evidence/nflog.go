// Package evidence reads the packets ctguard's evidence rules log to an
// nfnetlink_log group (see ruleset.Evidence): the invalid TCP segments that
// reach the box and the resets the box sends. It is the kernel edge of
// "ctguard detect" and of the incident ring of "ctguard run"; correlating
// the packets into incidents is package incident's job.
//
// Messages the kernel could not deliver are counted, not hidden: the group
// is configured with per-message sequence numbers, so a gap counts the
// messages lost, and a receive buffer overrun (ENOBUFS) is counted too.
package evidence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log message types, attributes and values
// (include/uapi/linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaPacketHdr   = 1
	nfulaIfindexIn   = 4
	nfulaIfindexOut  = 5
	nfulaPayload     = 9
	nfulaSeq         = 12
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgQThresh  = 5
	nfulaCfgFlags    = 6
	nfulnlCmdBind    = 1
	nfulnlCopyPacket = 2
	nfulnlCfgFSeq    = 0x0001
)

// Hook is the netfilter hook a packet was logged on.
type Hook uint8

// The hooks the evidence rules log on (enum nf_inet_hooks).
const (
	HookInput   Hook = unix.NF_INET_LOCAL_IN
	HookForward Hook = unix.NF_INET_FORWARD
	HookOutput  Hook = unix.NF_INET_LOCAL_OUT
)

// String names the hook as the ruleset does.
func (h Hook) String() string {
	switch h {
	case HookInput:
		return "input"
	case HookForward:
		return "forward"
	case HookOutput:
		return "output"
	}
	return fmt.Sprintf("hook%d", uint8(h))
}

// Packet is one logged packet: where the kernel saw it and its headers.
type Packet struct {
	// Time is when the reader received it.
	Time time.Time
	Hook Hook
	// InIf and OutIf are the input and output interface indexes (0: none).
	InIf, OutIf uint32
	// Seq is the group's sequence number of the message.
	Seq uint32
	// Segment holds the decoded IP and TCP headers; ok is false when the
	// payload was not a TCP segment this package decodes.
	Segment Segment
	OK      bool
}

// Stats are the reader's delivery counters.
type Stats struct {
	// Received counts packets decoded.
	Received uint64
	// Lost counts messages the kernel logged but could not deliver (gaps
	// in the sequence numbers).
	Lost uint64
	// Overruns counts receive buffer overruns (ENOBUFS).
	Overruns uint64
}

// Reader is a bound nfnetlink_log group. Receive must be called from one
// goroutine; Stats and Close from any.
type Reader struct {
	nl    *netlink.Conn
	group uint16

	received, lost, overruns atomic.Uint64
	haveSeq                  bool
	nextSeq                  uint32
	closed                   atomic.Bool
}

// ErrGroupBusy is returned by Open when another socket (a "ctguard run",
// another "ctguard detect", ulogd) has bound the group.
var ErrGroupBusy = errors.New("the nfnetlink_log group is bound by another process")

// Open binds group in the network namespace netnsFd (-1: the caller's),
// copying at most snaplen bytes of each packet, with a receive buffer of
// bufBytes (0: the system default).
func Open(netnsFd int, group uint16, snaplen uint32, bufBytes int) (*Reader, error) {
	cfg := &netlink.Config{}
	if netnsFd >= 0 {
		cfg.NetNS = netnsFd
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nfnetlink_log: %w", err)
	}
	r := &Reader{nl: nl, group: group}
	if bufBytes > 0 {
		if err := setReadBuffer(nl, bufBytes); err != nil {
			nl.Close()
			return nil, err
		}
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, snaplen)
	mode[4] = nfulnlCopyPacket
	steps := []struct {
		what string
		attr netlink.Attribute
	}{
		{"bind", netlink.Attribute{Type: nfulaCfgCmd, Data: []byte{nfulnlCmdBind}}},
		{"copy mode", netlink.Attribute{Type: nfulaCfgMode, Data: mode}},
		// Deliver each message at once: the evidence rules' limit bounds the rate.
		{"queue threshold", netlink.Attribute{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 1)}},
		{"sequence numbers", netlink.Attribute{Type: nfulaCfgFlags, Data: binary.BigEndian.AppendUint16(nil, nfulnlCfgFSeq)}},
	}
	for _, s := range steps {
		if err := r.config(s.attr); err != nil {
			nl.Close()
			// The kernel answers EPERM to a bind of a group another
			// socket holds.
			if s.what == "bind" && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY)) {
				return nil, fmt.Errorf("nfnetlink_log group %d: %w", group, ErrGroupBusy)
			}
			return nil, fmt.Errorf("nfnetlink_log group %d: %s: %w", group, s.what, err)
		}
	}
	return r, nil
}

// setReadBuffer sizes the socket's receive buffer, beyond rmem_max when
// the process may (SO_RCVBUFFORCE).
func setReadBuffer(nl *netlink.Conn, n int) error {
	sc, err := nl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return nl.SetReadBuffer(n)
	}
	return nil
}

// config sends one NFULNL_MSG_CONFIG message for the group and waits for
// its acknowledgement.
func (r *Reader) config(a netlink.Attribute) error {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{a})
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], r.group)
	_, err = r.nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, attrs...),
	})
	return err
}

// Receive blocks until messages arrive and appends the packets they carry
// to dst. A buffer overrun is counted and reported as no packets and no
// error: the socket stays usable. After Close it returns os.ErrClosed.
func (r *Reader) Receive(dst []Packet) ([]Packet, error) {
	msgs, err := r.nl.Receive()
	if err != nil {
		if r.closed.Load() {
			return dst, os.ErrClosed
		}
		if errors.Is(err, unix.ENOBUFS) {
			r.overruns.Add(1)
			return dst, nil
		}
		return dst, fmt.Errorf("nfnetlink_log receive: %w", err)
	}
	now := time.Now()
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
			continue
		}
		p, seq, hasSeq := decodePacket(m.Data[4:])
		p.Time = now
		if hasSeq {
			r.countSeq(seq)
		}
		r.received.Add(1)
		dst = append(dst, p)
	}
	return dst, nil
}

// countSeq counts the messages a sequence number gap says were lost.
func (r *Reader) countSeq(seq uint32) {
	if r.haveSeq && seq != r.nextSeq {
		if gap := seq - r.nextSeq; gap < 1<<31 {
			r.lost.Add(uint64(gap))
		}
	}
	r.haveSeq, r.nextSeq = true, seq+1
}

// Stats returns the delivery counters so far.
func (r *Reader) Stats() Stats {
	return Stats{Received: r.received.Load(), Lost: r.lost.Load(), Overruns: r.overruns.Load()}
}

// Close closes the socket, which unbinds the group (the kernel releases a
// closed socket's instances); a blocked Receive returns.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	return r.nl.Close()
}

// decodePacket decodes an NFULNL_MSG_PACKET's attributes.
func decodePacket(b []byte) (p Packet, seq uint32, hasSeq bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return p, 0, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case nfulaPacketHdr:
			if d := ad.Bytes(); len(d) >= 3 {
				p.Hook = Hook(d[2])
			}
		case nfulaIfindexIn:
			p.InIf = ad.Uint32()
		case nfulaIfindexOut:
			p.OutIf = ad.Uint32()
		case nfulaSeq:
			seq, hasSeq = ad.Uint32(), true
			p.Seq = seq
		case nfulaPayload:
			p.Segment, p.OK = ParseSegment(ad.Bytes())
		}
	}
	return p, seq, hasSeq
}
