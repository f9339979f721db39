package gate

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Netlink and nfnetlink constants (include/uapi/linux/netfilter/
// nfnetlink_queue.h and nfnetlink_conntrack.h) the gate speaks.
const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	nfgenLen    = 4  // struct nfgenmsg
	nlaHdrLen   = 4  // struct nlattr
	nlaNested   = 0x8000

	subsysCtnetlink = 1
	subsysQueue     = 3

	// nfnetlink_queue
	nfqnlMsgPacket       = 0
	nfqnlMsgConfig       = 2
	nfqnlMsgVerdictBatch = 3
	nfqaPacketHdr        = 1
	nfqaVerdictHdr       = 2
	nfqaPayload          = 10
	nfqaCfgCmd           = 1
	nfqaCfgParams        = 2
	nfqaCfgQueueMaxlen   = 3
	nfqaCfgMask          = 4
	nfqaCfgFlags         = 5
	nfqnlCfgCmdBind      = 1
	nfqnlCopyPacket      = 2
	nfqaCfgFFailOpen     = 0x1
	nfAccept             = 1

	// ctnetlink
	ipctnlMsgCtNew    = 0
	ipctnlMsgCtGet    = 1
	ctaTupleOrig      = 1
	ctaTupleReply     = 2
	ctaStatus         = 3
	ctaProtoinfo      = 4
	ctaMark           = 8
	ctaMarkMask       = 21
	ctaTupleIP        = 1
	ctaTupleProto     = 2
	ctaIPv4Src        = 1
	ctaIPv4Dst        = 2
	ctaIPv6Src        = 3
	ctaIPv6Dst        = 4
	ctaProtoNum       = 1
	ctaProtoSrcPort   = 2
	ctaProtoDstPort   = 3
	ctaProtoinfoTCP   = 1
	ctaTCPFlagsOrig   = 4
	ctaTCPFlagsReply  = 5
	beLiberal         = 0x08
	protoTCP          = 6
	afInet, afInet6   = unix.AF_INET, unix.AF_INET6
	nlmFRequestAck    = unix.NLM_F_REQUEST | unix.NLM_F_ACK
	directionOriginal = 1
	directionReply    = 2
)

// Tuple is one conntrack tuple direction: the reply tuple a queued SYN-ACK
// carries in its own headers.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// writer appends netlink messages to a reusable buffer.
type writer struct{ b []byte }

// begin starts a message and returns its offset, for end.
func (w *writer) begin(typ, flags uint16, seq uint32, family uint8, resID uint16) int {
	start := len(w.b)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // length, set by end
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = binary.NativeEndian.AppendUint16(w.b, flags)
	w.b = binary.NativeEndian.AppendUint32(w.b, seq)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // port: the kernel fills it in
	w.b = append(w.b, family, 0)
	w.b = binary.BigEndian.AppendUint16(w.b, resID)
	return start
}

// end sets the length of the message started at start.
func (w *writer) end(start int) {
	binary.NativeEndian.PutUint32(w.b[start:], uint32(len(w.b)-start))
}

// attr appends an attribute.
func (w *writer) attr(typ uint16, data ...byte) {
	n := nlaHdrLen + len(data)
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(n))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = append(w.b, data...)
	w.pad()
}

func (w *writer) pad() {
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

// nest starts a nested attribute and returns its offset, for unnest.
func (w *writer) nest(typ uint16) int {
	start := len(w.b)
	w.b = binary.NativeEndian.AppendUint16(w.b, 0)
	w.b = binary.NativeEndian.AppendUint16(w.b, typ|nlaNested)
	return start
}

// unnest sets the length of the nested attribute started at start.
func (w *writer) unnest(start int) {
	binary.NativeEndian.PutUint16(w.b[start:], uint16(len(w.b)-start))
}

func (w *writer) be16(typ uint16, v uint16) {
	w.attr(typ, byte(v>>8), byte(v))
}

func (w *writer) be32(typ uint16, v uint32) {
	w.attr(typ, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// tuple appends a CTA_TUPLE_* nest for t.
func (w *writer) tuple(typ uint16, t *Tuple) {
	n := w.nest(typ)
	ip := w.nest(ctaTupleIP)
	if t.Src.Is4() {
		s, d := t.Src.As4(), t.Dst.As4()
		w.attr(ctaIPv4Src, s[:]...)
		w.attr(ctaIPv4Dst, d[:]...)
	} else {
		s, d := t.Src.As16(), t.Dst.As16()
		w.attr(ctaIPv6Src, s[:]...)
		w.attr(ctaIPv6Dst, d[:]...)
	}
	w.unnest(ip)
	p := w.nest(ctaTupleProto)
	w.attr(ctaProtoNum, protoTCP)
	w.be16(ctaProtoSrcPort, t.SrcPort)
	w.be16(ctaProtoDstPort, t.DstPort)
	w.unnest(p)
	w.unnest(n)
}

func family(t *Tuple) uint8 {
	if t.Src.Is4() {
		return afInet
	}
	return afInet6
}

// liberalUpdate appends the flags-only ctnetlink update of the entry whose
// REPLY tuple is t (the kernel looks the entry up by it when no original
// tuple is given): BE_LIBERAL in dirs (bits: 1 original, 2 reply) and the
// mark bit, nothing else.
func (w *writer) liberalUpdate(seq uint32, t *Tuple, dirs uint8, mark uint32) {
	m := w.begin(subsysCtnetlink<<8|ipctnlMsgCtNew, nlmFRequestAck, seq, family(t), 0)
	w.tuple(ctaTupleReply, t)
	pi := w.nest(ctaProtoinfo)
	tcp := w.nest(ctaProtoinfoTCP)
	if dirs&directionOriginal != 0 {
		w.attr(ctaTCPFlagsOrig, beLiberal, beLiberal) // struct nf_ct_tcp_flags {flags, mask}
	}
	if dirs&directionReply != 0 {
		w.attr(ctaTCPFlagsReply, beLiberal, beLiberal)
	}
	w.unnest(tcp)
	w.unnest(pi)
	// The kernel computes (mark & ~CTA_MARK_MASK) ^ CTA_MARK.
	w.be32(ctaMark, mark)
	w.be32(ctaMarkMask, mark)
	w.end(m)
}

// get appends a ctnetlink GET of the entry whose REPLY tuple is t.
func (w *writer) get(seq uint32, t *Tuple) {
	m := w.begin(subsysCtnetlink<<8|ipctnlMsgCtGet, nlmFRequestAck, seq, family(t), 0)
	w.tuple(ctaTupleReply, t)
	w.end(m)
}

// bind appends the queue configuration: bind queue to this socket, copy
// copyRange bytes of each packet, hold at most maxLen packets, and accept
// (fail open) rather than drop when the queue is full.
func (w *writer) bind(seq uint32, queue uint16, copyRange, maxLen uint32) {
	m := w.begin(subsysQueue<<8|nfqnlMsgConfig, nlmFRequestAck, seq, unix.AF_UNSPEC, queue)
	w.attr(nfqaCfgCmd, nfqnlCfgCmdBind, 0, 0, 0) // struct nfqnl_msg_config_cmd {command, _pad, pf}
	w.attr(nfqaCfgParams, byte(copyRange>>24), byte(copyRange>>16), byte(copyRange>>8), byte(copyRange), nfqnlCopyPacket)
	w.be32(nfqaCfgQueueMaxlen, maxLen)
	w.be32(nfqaCfgMask, nfqaCfgFFailOpen)
	w.be32(nfqaCfgFlags, nfqaCfgFFailOpen)
	w.end(m)
}

// acceptUpTo appends a batch verdict accepting every packet of queue with an
// id up to id.
func (w *writer) acceptUpTo(queue uint16, id uint32) {
	m := w.begin(subsysQueue<<8|nfqnlMsgVerdictBatch, unix.NLM_F_REQUEST, 0, unix.AF_UNSPEC, queue)
	w.attr(nfqaVerdictHdr, 0, 0, 0, nfAccept, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	w.end(m)
}

// message is one netlink message of a datagram.
type message struct {
	typ   uint16
	seq   uint32
	resID uint16 // nfgenmsg res_id (the queue number of a packet)
	data  []byte // after the nfgenmsg header (attributes), or the NLMSG_ERROR payload
}

// nextMessage splits the first message off b; ok is false when b holds no
// whole message.
func nextMessage(b []byte) (m message, rest []byte, ok bool) {
	if len(b) < nlmsgHdrLen {
		return m, nil, false
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < nlmsgHdrLen || n > len(b) {
		return m, nil, false
	}
	m.typ = binary.NativeEndian.Uint16(b[4:])
	m.seq = binary.NativeEndian.Uint32(b[8:])
	body := b[nlmsgHdrLen:n]
	switch {
	case m.typ == unix.NLMSG_ERROR || m.typ == unix.NLMSG_DONE:
		m.data = body
	case len(body) >= nfgenLen:
		m.resID = binary.BigEndian.Uint16(body[2:])
		m.data = body[nfgenLen:]
	}
	aligned := (n + 3) &^ 3
	if aligned > len(b) {
		aligned = len(b)
	}
	return m, b[aligned:], true
}

// errno returns the error code of an NLMSG_ERROR payload (0 for an ack).
func errno(data []byte) unix.Errno {
	if len(data) < 4 {
		return unix.EPROTO
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(data)))
}

// attrs iterates over netlink attributes without allocating.
type attrs struct{ b []byte }

// next returns the next attribute's type (without flags) and data.
func (a *attrs) next() (typ uint16, data []byte, ok bool) {
	if len(a.b) < nlaHdrLen {
		return 0, nil, false
	}
	n := int(binary.NativeEndian.Uint16(a.b))
	if n < nlaHdrLen || n > len(a.b) {
		return 0, nil, false
	}
	typ = binary.NativeEndian.Uint16(a.b[2:]) &^ (nlaNested | 0x4000)
	data = a.b[nlaHdrLen:n]
	aligned := (n + 3) &^ 3
	if aligned > len(a.b) {
		aligned = len(a.b)
	}
	a.b = a.b[aligned:]
	return typ, data, true
}

// packetInfo reads a queued packet's id and payload.
func packetInfo(data []byte) (id uint32, payload []byte, ok bool) {
	a := attrs{data}
	var hasID bool
	for {
		typ, v, more := a.next()
		if !more {
			break
		}
		switch typ {
		case nfqaPacketHdr:
			if len(v) >= 4 {
				id, hasID = binary.BigEndian.Uint32(v), true
			}
		case nfqaPayload:
			payload = v
		}
	}
	return id, payload, hasID
}

// Entry is what the gate reads of a conntrack entry fetched by its reply
// tuple: enough for the policies' match.
type Entry struct {
	Orig, Reply Tuple
	Status      uint32
	// OrigFlags and ReplyFlags are the TCP flags of each direction
	// (HasFlags false when the entry carried none).
	OrigFlags, ReplyFlags uint8
	HasFlags              bool
}

// decodeEntry decodes a ctnetlink entry message's attributes.
func decodeEntry(data []byte) (e Entry, ok bool) {
	a := attrs{data}
	var orig, reply bool
	for {
		typ, v, more := a.next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleOrig:
			orig = decodeTuple(v, &e.Orig)
		case ctaTupleReply:
			reply = decodeTuple(v, &e.Reply)
		case ctaStatus:
			if len(v) == 4 {
				e.Status = binary.BigEndian.Uint32(v)
			}
		case ctaProtoinfo:
			decodeTCPFlags(v, &e)
		}
	}
	return e, orig && reply
}

func decodeTuple(b []byte, t *Tuple) bool {
	a := attrs{b}
	var ip, ports bool
	for {
		typ, v, more := a.next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleIP:
			ia := attrs{v}
			for {
				it, iv, more := ia.next()
				if !more {
					break
				}
				switch {
				case (it == ctaIPv4Src || it == ctaIPv4Dst) && len(iv) == 4:
					addr := netip.AddrFrom4([4]byte(iv))
					if it == ctaIPv4Src {
						t.Src = addr
					} else {
						t.Dst = addr
					}
				case (it == ctaIPv6Src || it == ctaIPv6Dst) && len(iv) == 16:
					addr := netip.AddrFrom16([16]byte(iv))
					if it == ctaIPv6Src {
						t.Src = addr
					} else {
						t.Dst = addr
					}
				}
			}
			ip = t.Src.IsValid() && t.Dst.IsValid()
		case ctaTupleProto:
			pa := attrs{v}
			for {
				pt, pv, more := pa.next()
				if !more {
					break
				}
				switch {
				case pt == ctaProtoSrcPort && len(pv) == 2:
					t.SrcPort = binary.BigEndian.Uint16(pv)
				case pt == ctaProtoDstPort && len(pv) == 2:
					t.DstPort = binary.BigEndian.Uint16(pv)
				}
			}
			ports = true
		}
	}
	return ip && ports
}

func decodeTCPFlags(b []byte, e *Entry) {
	a := attrs{b}
	for {
		typ, v, more := a.next()
		if !more {
			return
		}
		if typ != ctaProtoinfoTCP {
			continue
		}
		ta := attrs{v}
		for {
			tt, tv, more := ta.next()
			if !more {
				break
			}
			switch {
			case tt == ctaTCPFlagsOrig && len(tv) == 2:
				e.OrigFlags, e.HasFlags = tv[0], true
			case tt == ctaTCPFlagsReply && len(tv) == 2:
				e.ReplyFlags, e.HasFlags = tv[0], true
			}
		}
	}
}
