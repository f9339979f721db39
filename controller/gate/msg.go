package gate

import (
	"encoding/binary"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/nlwire"
	"golang.org/x/sys/unix"
)

// Netlink and nfnetlink constants (include/uapi/linux/netfilter/
// nfnetlink_queue.h and nfnetlink_conntrack.h) the gate speaks.
const (
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
	ipctnlMsgCtNew  = 0
	ipctnlMsgCtGet  = 1
	ctaTupleReply   = 2
	protoTCP        = 6
	afInet, afInet6 = unix.AF_INET, unix.AF_INET6
	nlmFRequestAck  = unix.NLM_F_REQUEST | unix.NLM_F_ACK
)

// Tuple is one conntrack tuple direction: the reply tuple a queued SYN-ACK
// carries in its own headers.
type Tuple = flows.Tuple

// writer appends the gate's netlink messages to a reusable buffer.
type writer struct{ nlwire.Writer }

func family(t *Tuple) uint8 {
	if t.Src.Is4() {
		return afInet
	}
	return afInet6
}

// get appends a ctnetlink GET of the entry whose REPLY tuple is t.
func (w *writer) get(seq uint32, t *Tuple) {
	m := w.Begin(subsysCtnetlink<<8|ipctnlMsgCtGet, nlmFRequestAck, seq, family(t), 0)
	flows.AppendTuple(&w.Writer, ctaTupleReply, t)
	w.End(m)
}

// bind appends the queue configuration: bind queue to this socket, copy
// copyRange bytes of each packet, hold at most maxLen packets, and accept
// (fail open) rather than drop when the queue is full.
func (w *writer) bind(seq uint32, queue uint16, copyRange, maxLen uint32) {
	m := w.Begin(subsysQueue<<8|nfqnlMsgConfig, nlmFRequestAck, seq, unix.AF_UNSPEC, queue)
	w.Attr(nfqaCfgCmd, nfqnlCfgCmdBind, 0, 0, 0) // struct nfqnl_msg_config_cmd {command, _pad, pf}
	w.Attr(nfqaCfgParams, byte(copyRange>>24), byte(copyRange>>16), byte(copyRange>>8), byte(copyRange), nfqnlCopyPacket)
	w.BE32(nfqaCfgQueueMaxlen, maxLen)
	w.BE32(nfqaCfgMask, nfqaCfgFFailOpen)
	w.BE32(nfqaCfgFlags, nfqaCfgFFailOpen)
	w.End(m)
}

// acceptUpTo appends a batch verdict accepting every packet of queue with an
// id up to id.
func (w *writer) acceptUpTo(queue uint16, id uint32) {
	m := w.Begin(subsysQueue<<8|nfqnlMsgVerdictBatch, unix.NLM_F_REQUEST, 0, unix.AF_UNSPEC, queue)
	w.Attr(nfqaVerdictHdr, 0, 0, 0, nfAccept, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	w.End(m)
}

// packetInfo reads a queued packet's id and payload.
func packetInfo(data []byte) (id uint32, payload []byte, ok bool) {
	a := nlwire.Attrs(data)
	var hasID bool
	for {
		typ, v, more := a.Next()
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
