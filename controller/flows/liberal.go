package flows

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ErrFlowGone reports that the conntrack entry no longer exists (ENOENT): a
// normal race with the flow's end, not a failure.
var ErrFlowGone = errors.New("conntrack entry gone")

// ctnetlink attribute types (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaProtoInfo  = 4
	ctaMark       = 8
	ctaZone       = 18
	ctaMarkMask   = 21

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	ctaProtoInfoTCP              = 1
	ctaProtoInfoTCPFlagsOriginal = 4
	ctaProtoInfoTCPFlagsReply    = 5

	ipctnlMsgCtNew = 0
	ipctnlMsgCtGet = 1
)

// SetLiberal sets BE_LIBERAL in the given directions of the flow's TCP
// protoinfo and, in the same update, sets the ownership mark bit (none when
// mark is 0). Nothing else of the entry changes. A vanished flow returns
// ErrFlowGone.
func (c *Conn) SetLiberal(f *Flow, dirs Directions, mark MarkBit) error {
	return c.update(f, dirs, BeLiberal, mark)
}

// ClearLiberal clears BE_LIBERAL in the given directions and the ownership
// mark bit (none when mark is 0), atomically. With no direction it clears
// only the mark bit. A vanished flow returns ErrFlowGone.
func (c *Conn) ClearLiberal(f *Flow, dirs Directions, mark MarkBit) error {
	return c.update(f, dirs, 0, mark)
}

func (c *Conn) update(f *Flow, dirs Directions, flags uint8, mark MarkBit) error {
	msg, err := liberalMessage(f, dirs, flags, mark)
	if err != nil {
		return err
	}
	if _, err := c.execute(msg); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("update %s: %w", f, ErrFlowGone)
		}
		return fmt.Errorf("update %s: %w", f, err)
	}
	return nil
}

// liberalMessage builds the flags-only update: IPCTNL_MSG_CT_NEW without
// NLM_F_CREATE/NLM_F_EXCL (update only), the original tuple, the zone, the
// {flags, mask=BE_LIBERAL} pair of each direction in dirs (no protoinfo when
// dirs is empty), and, when mark is set, CTA_MARK/CTA_MARK_MASK touching only
// that bit (the bit is set when flags sets BE_LIBERAL and cleared otherwise).
// It refuses an update that would change nothing.
func liberalMessage(f *Flow, dirs Directions, flags uint8, mark MarkBit) (netlink.Message, error) {
	if f.Proto != ProtoTCP {
		return netlink.Message{}, fmt.Errorf("flow %s: protocol %d is not TCP", f, f.Proto)
	}
	if dirs&Both == 0 && mark == 0 {
		return netlink.Message{}, fmt.Errorf("flow %s: no direction and no mark to update", f)
	}
	ae := netfilter.NewAttributeEncoder()
	encodeKey(ae, f)
	if dirs&Both != 0 {
		ae.Nested(ctaProtoInfo, func(pae *netlink.AttributeEncoder) error {
			pae.Nested(ctaProtoInfoTCP, func(tae *netlink.AttributeEncoder) error {
				pair := []byte{flags, BeLiberal} // struct nf_ct_tcp_flags {flags, mask}
				if dirs.Has(Original) {
					tae.Bytes(ctaProtoInfoTCPFlagsOriginal, pair)
				}
				if dirs.Has(Reply) {
					tae.Bytes(ctaProtoInfoTCPFlagsReply, pair)
				}
				return nil
			})
			return nil
		})
	}
	if mark != 0 {
		// The kernel computes (mark & ~CTA_MARK_MASK) ^ CTA_MARK.
		value := uint32(0)
		if flags&BeLiberal != 0 {
			value = uint32(mark)
		}
		ae.Uint32(ctaMark, value)
		ae.Uint32(ctaMarkMask, uint32(mark))
	}
	return netfilter.EncodeNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ipctnlMsgCtNew,
		Family:      family(f),
		Flags:       netlink.Request | netlink.Acknowledge,
	}, ae)
}

func family(f *Flow) netfilter.ProtoFamily {
	if f.Orig.Src.Is6() {
		return netfilter.ProtoIPv6
	}
	return netfilter.ProtoIPv4
}

// encodeKey encodes what identifies an entry: the original tuple and, when
// not the default, the zone.
func encodeKey(ae *netlink.AttributeEncoder, f *Flow) {
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error {
		encodeTuple(nae, &f.Orig)
		return nil
	})
	if f.Zone != 0 {
		ae.Uint16(ctaZone, f.Zone)
	}
}

func encodeTuple(ae *netlink.AttributeEncoder, t *Tuple) {
	ae.Nested(ctaTupleIP, func(iae *netlink.AttributeEncoder) error {
		if t.Src.Is4() {
			s, d := t.Src.As4(), t.Dst.As4()
			iae.Bytes(ctaIPv4Src, s[:])
			iae.Bytes(ctaIPv4Dst, d[:])
		} else {
			s, d := t.Src.As16(), t.Dst.As16()
			iae.Bytes(ctaIPv6Src, s[:])
			iae.Bytes(ctaIPv6Dst, d[:])
		}
		return nil
	})
	ae.Nested(ctaTupleProto, func(pae *netlink.AttributeEncoder) error {
		pae.Uint8(ctaProtoNum, ProtoTCP)
		pae.Uint16(ctaProtoSrcPort, t.SrcPort)
		pae.Uint16(ctaProtoDstPort, t.DstPort)
		return nil
	})
}
