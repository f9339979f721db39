package perflow

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctnetlink attributes a creator writes (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig          = 1
	ctaTupleReply         = 2
	ctaStatus             = 3
	ctaProtoInfo          = 4
	ctaTimeout            = 7
	ctaProtoInfoTCP       = 1
	ctaTCPState           = 1
	ctaTCPWScaleOrig      = 2
	ctaTCPWScaleReply     = 3
	ctaTCPFlagsOrig       = 4
	ctaTCPFlagsReply      = 5
	ctNewMsg              = 1<<8 | 0 // NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
	createBatch           = 64
	statusConfirmedAssure = 1<<3 | 1<<1 | 1<<2 // IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
)

// creator creates the benchmark's flows (benchFlow) through ctnetlink in
// batches: up to createBatch NEW messages per write, acks only for
// failures, so that the benchmark's own flow creation outruns the engine
// it measures (one ti-mo Create per flow, waiting for its ack, did not).
type creator struct {
	nl  *netlink.Conn
	fd  int
	w   nlwire.Writer
	buf []byte
	seq uint32
}

func newCreator(b *testing.B, ns *netnstest.NS) *creator {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nl.Close() })
	c := &creator{nl: nl, buf: make([]byte, 64<<10)}
	raw, err := nl.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	raw.Control(func(fd uintptr) { c.fd = int(fd) })
	return c
}

// create creates flows [from, to) (benchFlow's addresses, ESTABLISHED) in
// one write each createBatch, and fails on any error the kernel answers.
func (c *creator) create(b *testing.B, from, to int) {
	for from < to {
		n := min(to-from, createBatch)
		c.w.B = c.w.B[:0]
		for i := from; i < from+n; i++ {
			c.seq++
			c.append(i)
		}
		if _, err := nlwire.Write(c.fd, c.w.B); err != nil {
			b.Fatalf("create flows: %v", err)
		}
		// The kernel handled the write's messages before it returned:
		// any error answer is queued already.
		for {
			k, err := nlwire.Recv(c.fd, c.buf, 0)
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				b.Fatalf("create flows: %v", err)
			}
			for rest := c.buf[:k]; ; {
				m, r, ok := nlwire.Next(rest)
				if !ok {
					break
				}
				rest = r
				if m.Type == unix.NLMSG_ERROR {
					if e := nlwire.Errno(m.Data); e != 0 {
						b.Fatalf("create flow (seq %d): %v", m.Seq, e)
					}
				}
			}
		}
		from += n
	}
}

// append writes the NEW message of benchFlow(i).
func (c *creator) append(i int) {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], benchBase+uint32(i))
	cli, srv := netip.AddrFrom4(a), netip.MustParseAddr(serverAddr)
	m := c.w.Begin(ctNewMsg, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_EXCL, c.seq, unix.AF_INET, 0)
	flows.AppendTuple(&c.w, ctaTupleOrig, &flows.Tuple{Src: cli, Dst: srv, SrcPort: 40000, DstPort: 443})
	flows.AppendTuple(&c.w, ctaTupleReply, &flows.Tuple{Src: srv, Dst: cli, SrcPort: 443, DstPort: 40000})
	c.w.BE32(ctaStatus, statusConfirmedAssure)
	c.w.BE32(ctaTimeout, 300)
	pi := c.w.Nest(ctaProtoInfo)
	tcp := c.w.Nest(ctaProtoInfoTCP)
	c.w.U8(ctaTCPState, uint8(flows.TCPEstablished))
	c.w.U8(ctaTCPWScaleOrig, 7)
	c.w.U8(ctaTCPWScaleReply, 7)
	c.w.Attr(ctaTCPFlagsOrig, 1, 1)
	c.w.Attr(ctaTCPFlagsReply, 1, 1)
	c.w.Unnest(tcp)
	c.w.Unnest(pi)
	c.w.End(m)
}
