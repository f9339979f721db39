package flows

import (
	"net/netip"

	"github.com/ti-mo/conntrack"
)

// ProtoTCP is the IP protocol number of TCP, the only protocol ctguard flags.
const ProtoTCP = 6

// BeLiberal is IP_CT_TCP_FLAG_BE_LIBERAL in a direction's TCP protoinfo flags.
const BeLiberal = 0x08

// StatusSrcNAT and StatusDstNAT are the IPS_SRC_NAT and IPS_DST_NAT
// conntrack status bits.
const (
	StatusSrcNAT = 1 << 4
	StatusDstNAT = 1 << 5
)

// TCPState is conntrack's TCP state (enum tcp_conntrack).
type TCPState uint8

// The conntrack TCP states ctguard looks at.
const (
	TCPNone        TCPState = 0
	TCPSynSent     TCPState = 1
	TCPSynRecv     TCPState = 2
	TCPEstablished TCPState = 3
	TCPFinWait     TCPState = 4
	TCPCloseWait   TCPState = 5
	TCPLastAck     TCPState = 6
	TCPTimeWait    TCPState = 7
	TCPClose       TCPState = 8
)

// Directions is a set of conntrack tuple directions.
type Directions uint8

// The two directions and both.
const (
	Original Directions = 1 << 0
	Reply    Directions = 1 << 1
	Both                = Original | Reply
)

// Has reports whether every direction of o is in d.
func (d Directions) Has(o Directions) bool { return d&o == o }

// String renders the set as "original", "reply", "original,reply" or "none".
func (d Directions) String() string {
	switch d {
	case Original:
		return "original"
	case Reply:
		return "reply"
	case Both:
		return "original,reply"
	}
	return "none"
}

// MarkBit is the conntrack mark bit ctguard sets on the flows it flags (see
// the package documentation). Zero means "set no mark".
type MarkBit uint32

// DefaultMarkBit is ctguard's default ownership mark bit.
const DefaultMarkBit MarkBit = 0x00800000

// Tuple is one direction's addresses and ports.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Key identifies a live conntrack entry: its original tuple and zone.
type Key struct {
	Orig Tuple
	Zone uint16
}

// Flow is a conntrack entry (or the part of it an event carries), reduced to
// what ctguard needs.
type Flow struct {
	Orig, Reply Tuple
	Proto       uint8
	Zone        uint16
	// ID is the kernel's CTA_ID of the entry.
	ID uint32
	// Status holds the IPS_* status bits.
	Status uint32
	// Mark is the conntrack mark.
	Mark uint32
	// HasProtoInfo is false when the dump or event carried no TCP protoinfo
	// (events carry it only when it changed); State and the flags are then
	// unknown.
	HasProtoInfo bool
	// HasFlags is false when the protoinfo carried only the state (DESTROY
	// events); the flags are then unknown.
	HasFlags bool
	State    TCPState
	// OrigFlags and ReplyFlags are the IP_CT_TCP_FLAG_* bits per direction.
	OrigFlags, ReplyFlags uint8
	// OrigWScale and ReplyWScale are the window scales per direction.
	OrigWScale, ReplyWScale uint8
}

// Key returns the flow's identity.
func (f *Flow) Key() Key { return Key{Orig: f.Orig, Zone: f.Zone} }

// Liberal returns the directions whose flags carry BE_LIBERAL; it is only
// meaningful when HasFlags is true.
func (f *Flow) Liberal() Directions {
	var d Directions
	if f.OrigFlags&BeLiberal != 0 {
		d |= Original
	}
	if f.ReplyFlags&BeLiberal != 0 {
		d |= Reply
	}
	return d
}

// SrcNAT reports whether the flow is source-NATed (IPS_SRC_NAT).
func (f *Flow) SrcNAT() bool { return f.Status&StatusSrcNAT != 0 }

// String renders the original tuple, e.g. "198.18.1.2:40000 -> 198.19.0.10:443".
func (f *Flow) String() string {
	return netip.AddrPortFrom(f.Orig.Src, f.Orig.SrcPort).String() + " -> " +
		netip.AddrPortFrom(f.Orig.Dst, f.Orig.DstPort).String()
}

// fromConntrack converts a ti-mo/conntrack flow from a dump or a NEW or
// UPDATE event, which carry the flags whenever they carry protoinfo. The kernel sends each
// direction's flags as struct nf_ct_tcp_flags {flags, mask}, which
// ti-mo/conntrack decodes as one big-endian uint16: the flags are its high byte.
func fromConntrack(c *conntrack.Flow) Flow {
	f := Flow{
		Orig:   tupleFrom(c.TupleOrig),
		Reply:  tupleFrom(c.TupleReply),
		Proto:  c.TupleOrig.Proto.Protocol,
		Zone:   c.Zone,
		ID:     c.ID,
		Status: uint32(c.Status),
		Mark:   c.Mark,
	}
	if t := c.ProtoInfo.TCP; t != nil {
		f.HasProtoInfo = true
		f.State = TCPState(t.State)
		f.OrigWScale, f.ReplyWScale = t.OriginalWindowScale, t.ReplyWindowScale
		f.OrigFlags, f.ReplyFlags = uint8(t.OriginalFlags>>8), uint8(t.ReplyFlags>>8)
		f.HasFlags = true
	}
	return f
}

func tupleFrom(t conntrack.Tuple) Tuple {
	return Tuple{
		Src: t.IP.SourceAddress, Dst: t.IP.DestinationAddress,
		SrcPort: t.Proto.SourcePort, DstPort: t.Proto.DestinationPort,
	}
}
