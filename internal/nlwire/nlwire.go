// Package nlwire reads and writes netlink messages and attributes in place,
// without allocating: the protocol-agnostic wire code that ctguard's bulk
// ctnetlink paths and its NFQUEUE gate share.
package nlwire

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Header sizes (include/uapi/linux/netlink.h, nfnetlink.h).
const (
	MsgHdrLen   = 16 // struct nlmsghdr
	NfgenLen    = 4  // struct nfgenmsg
	AttrHdrLen  = 4  // struct nlattr
	AttrNested  = 0x8000
	attrNetByte = 0x4000
)

// Writer appends netlink messages to a reusable buffer.
type Writer struct {
	// B holds the messages written so far; reset it with B = B[:0].
	B []byte
}

// Begin starts a netfilter message (nlmsghdr and nfgenmsg) of the given
// type (subsystem<<8 | message) and returns its offset, for End.
func (w *Writer) Begin(typ, flags uint16, seq uint32, family uint8, resID uint16) int {
	start := len(w.B)
	w.B = binary.NativeEndian.AppendUint32(w.B, 0) // length, set by End
	w.B = binary.NativeEndian.AppendUint16(w.B, typ)
	w.B = binary.NativeEndian.AppendUint16(w.B, flags)
	w.B = binary.NativeEndian.AppendUint32(w.B, seq)
	w.B = binary.NativeEndian.AppendUint32(w.B, 0) // port: the kernel fills it in
	w.B = append(w.B, family, 0)                   // nfgenmsg: family, version 0
	w.B = binary.BigEndian.AppendUint16(w.B, resID)
	return start
}

// End sets the length of the message started at start.
func (w *Writer) End(start int) {
	binary.NativeEndian.PutUint32(w.B[start:], uint32(len(w.B)-start))
}

// AttrHeader appends the header of an attribute with n bytes of data; the
// caller appends the data (and pads it with Pad).
func (w *Writer) AttrHeader(typ uint16, n int) {
	w.B = binary.NativeEndian.AppendUint16(w.B, uint16(AttrHdrLen+n))
	w.B = binary.NativeEndian.AppendUint16(w.B, typ)
}

// Pad aligns the buffer to 4 bytes with zeros.
func (w *Writer) Pad() {
	for len(w.B)%4 != 0 {
		w.B = append(w.B, 0)
	}
}

// Attr appends an attribute, padded.
func (w *Writer) Attr(typ uint16, data ...byte) {
	w.AttrHeader(typ, len(data))
	w.B = append(w.B, data...)
	w.Pad()
}

// U8 appends a one-byte attribute, padded.
func (w *Writer) U8(typ uint16, v uint8) {
	w.AttrHeader(typ, 1)
	w.B = append(w.B, v)
	w.Pad()
}

// BE16 appends a big-endian 16-bit attribute, padded.
func (w *Writer) BE16(typ uint16, v uint16) {
	w.AttrHeader(typ, 2)
	w.B = binary.BigEndian.AppendUint16(w.B, v)
	w.Pad()
}

// BE32 appends a big-endian 32-bit attribute.
func (w *Writer) BE32(typ uint16, v uint32) {
	w.AttrHeader(typ, 4)
	w.B = binary.BigEndian.AppendUint32(w.B, v)
}

// Nest starts a nested attribute and returns its offset, for Unnest.
func (w *Writer) Nest(typ uint16) int {
	start := len(w.B)
	w.AttrHeader(typ|AttrNested, 0)
	return start
}

// Unnest sets the length of the nested attribute started at start.
func (w *Writer) Unnest(start int) {
	binary.NativeEndian.PutUint16(w.B[start:], uint16(len(w.B)-start))
}

// Message is one netlink message of a datagram, aliasing it.
type Message struct {
	Type  uint16
	Flags uint16
	Seq   uint32
	// ResID is the nfgenmsg res_id (a queued packet's queue number).
	ResID uint16
	// Data is what follows the nfgenmsg header (attributes), or the whole
	// payload of an NLMSG_ERROR or NLMSG_DONE.
	Data []byte
}

// Next splits the first message off b; ok is false when b holds no whole
// message.
func Next(b []byte) (m Message, rest []byte, ok bool) {
	if len(b) < MsgHdrLen {
		return m, nil, false
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < MsgHdrLen || n > len(b) {
		return m, nil, false
	}
	m.Type = binary.NativeEndian.Uint16(b[4:])
	m.Flags = binary.NativeEndian.Uint16(b[6:])
	m.Seq = binary.NativeEndian.Uint32(b[8:])
	body := b[MsgHdrLen:n]
	switch {
	case m.Type == unix.NLMSG_ERROR || m.Type == unix.NLMSG_DONE:
		m.Data = body
	case len(body) >= NfgenLen:
		m.ResID = binary.BigEndian.Uint16(body[2:])
		m.Data = body[NfgenLen:]
	}
	return m, b[min((n+3)&^3, len(b)):], true
}

// Errno returns the error code of an NLMSG_ERROR payload: 0 for an ack,
// EPROTO for a payload too short to hold one.
func Errno(data []byte) unix.Errno {
	if len(data) < 4 {
		return unix.EPROTO
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(data)))
}

// Attrs iterates over the netlink attributes it holds, without allocating.
type Attrs []byte

// Next returns the next attribute's type (without the nested and
// byte-order flags) and data; ok is false at the end or at a malformed
// attribute.
func (a *Attrs) Next() (typ uint16, data []byte, ok bool) {
	b := *a
	if len(b) < AttrHdrLen {
		return 0, nil, false
	}
	n := int(binary.NativeEndian.Uint16(b))
	if n < AttrHdrLen || n > len(b) {
		return 0, nil, false
	}
	typ = binary.NativeEndian.Uint16(b[2:]) &^ (AttrNested | attrNetByte)
	*a = b[min((n+3)&^3, len(b)):]
	return typ, b[AttrHdrLen:n], true
}

// Recv reads one datagram from the socket fd into b without waiting
// (MSG_DONTWAIT, or-ed with flags; with MSG_TRUNC, n is the datagram's full
// length) and returns unix.EAGAIN when none is queued. It is a raw system
// call: it never blocks, so the Go scheduler need not account it as a
// blocking one, which spares what an accounted call costs a mostly idle
// process at every packet: waking the runtime's monitor thread (sysmon),
// which then polls every 20 µs until it sees a millisecond without calls.
func Recv(fd int, b []byte, flags int) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(p), uintptr(len(b)),
		uintptr(flags|unix.MSG_DONTWAIT), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Write sends b on the non-blocking netlink socket fd, as a raw system call
// like Recv. A netlink write is handled by the kernel before it returns (a
// ctnetlink update applies; an NFQUEUE verdict reinjects its packets, which
// run through the stack inside the call, some microseconds each): it never
// waits for a peer, though it keeps its Go processor (P) meanwhile.
func Write(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Batch receives many datagrams in one system call (recvmmsg), each into
// a buffer of its own, set once with Buffer.
type Batch struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// NewBatch returns a Batch of n buffers (set them with Buffer).
func NewBatch(n int) *Batch {
	b := &Batch{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n)}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.Iovlen = 1
	}
	return b
}

// Buffer sets the buffer of datagram i; buf must stay allocated while the
// Batch is used.
func (b *Batch) Buffer(i int, buf []byte) {
	b.iovs[i].Base = &buf[0]
	b.iovs[i].SetLen(len(buf))
}

// Len returns the length of datagram i of the last Recv (with MSG_TRUNC,
// its full length, which may exceed its buffer).
func (b *Batch) Len(i int) int { return int(b.hdrs[i].Len) }

// Recv reads up to max datagrams without waiting (MSG_DONTWAIT, or-ed with
// flags) into the first max buffers and returns how many it read, or
// unix.EAGAIN when none is queued; a raw system call, as Recv.
func (b *Batch) Recv(fd, max, flags int) (int, error) {
	max = min(max, len(b.hdrs))
	if max <= 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(max),
		uintptr(flags|unix.MSG_DONTWAIT), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
