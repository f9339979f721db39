package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// QueueEncoding is how a gate rule's NFQUEUE verdict is expressed: the
// native nft queue expression (nft_queue) or the xtables NFQUEUE target,
// revision 3, through nft_compat. The kernel tells which it takes.
type QueueEncoding int

// The queue encodings, in the order Replace tries them.
const (
	QueueNative QueueEncoding = iota
	QueueCompat
)

// String names the encoding as status shows it.
func (q QueueEncoding) String() string {
	if q == QueueCompat {
		return "xt NFQUEUE (nft_compat)"
	}
	return "nft queue"
}

// NFQUEUE target revision 3 (struct xt_NFQ_info_v3) and its bypass flag.
const (
	nfqueueTarget   = "NFQUEUE"
	nfqueueRevision = 3
	nfqFlagBypass   = 0x01
	ipCtDirReply    = 1
	tcpFlagsSynAck  = 0x12
)

// nfqueueInfo is struct xt_NFQ_info_v3 {u16 queuenum; u16 queues_total;
// u16 flags} in host byte order, padded to 8 bytes as XT_ALIGN wants.
func nfqueueInfo(num uint16) xt.Unknown {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint16(b[0:], num)
	binary.NativeEndian.PutUint16(b[2:], 1)
	binary.NativeEndian.PutUint16(b[4:], nfqFlagBypass)
	return b
}

// queueExpr is the verdict of a gate rule: queue num, one queue, bypass.
func queueExpr(num uint16, q QueueEncoding) expr.Any {
	if q == QueueCompat {
		info := nfqueueInfo(num)
		return &expr.Target{Name: nfqueueTarget, Rev: nfqueueRevision, Info: &info}
	}
	return &expr.Queue{Num: num, Total: 1, Flag: expr.QueueFlagBypass}
}

// gateExprs encodes a gate rule (see ruleset.Rule): "meta l4proto tcp tcp
// flags & (syn|ack) == syn|ack ct direction reply ct mark & BIT == 0 [ct
// status & BITS != 0] [meta nfproto P] counter name C queue num N bypass".
func gateExprs(r ruleset.Rule, q QueueEncoding) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: offTCPFlags, Len: 1},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 1, Mask: []byte{tcpFlagsSynAck}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{tcpFlagsSynAck}},
		&expr.Ct{Register: reg, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{ipCtDirReply}},
		&expr.Ct{Register: reg, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(r.MarkBit), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: make([]byte, 4)},
	}
	if r.NATStatus != 0 {
		e = append(e,
			&expr.Ct{Register: reg, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(r.NATStatus), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: make([]byte, 4)},
		)
	}
	if r.NFProto != ruleset.NFProtoAny {
		proto := byte(unix.NFPROTO_IPV4)
		if r.NFProto == ruleset.NFProtoIPv6 {
			proto = unix.NFPROTO_IPV6
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
		)
	}
	return append(e, &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: r.Counter}, queueExpr(r.Queue, q))
}

// elementsPerMessage bounds the ranges sent in one NEWSETELEM message: its
// element list is one netlink attribute, whose length is 16 bits.
const elementsPerMessage = 512

// reg is the data register every ctguard expression uses (as nft does).
const reg = 1

// Header offsets of the fields ctguard matches.
const (
	offIPv4Src, offIPv4Dst   = 12, 16
	offIPv6Src, offIPv6Dst   = 8, 24
	offTCPSport, offTCPDport = 0, 2
	offTCPFlags              = 13
	tcpFlagRST               = 0x04
)

// keyTypes maps the model's set types to nftables key types.
var keyTypes = map[ruleset.SetType]nftables.SetDatatype{
	ruleset.SetIPv4Addr:    nftables.TypeIPAddr,
	ruleset.SetIPv6Addr:    nftables.TypeIP6Addr,
	ruleset.SetInetService: nftables.TypeInetService,
	ruleset.SetIfname:      nftables.TypeIFName,
}

// ruleExprs encodes a model rule as nftables expressions. setIDs gives the
// ID of each set created in the same batch (none when decoding: the kernel
// does not echo set IDs); q the encoding of a gate rule's queue verdict.
func ruleExprs(r ruleset.Rule, setIDs map[string]uint32, q QueueEncoding) []expr.Any {
	lookup := func(set string) *expr.Lookup {
		return &expr.Lookup{SourceRegister: reg, SetName: set, SetID: setIDs[set]}
	}
	if r.Purpose == ruleset.PurposeGate {
		return gateExprs(r, q)
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
	}
	if r.RSTOnly {
		e = append(e,
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: offTCPFlags, Len: 1},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 1, Mask: []byte{tcpFlagRST}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: []byte{0}},
		)
	}
	e = append(e,
		&expr.Ct{Register: reg, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitINVALID), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: make([]byte, 4)},
	)
	if r.IifnameSet != "" {
		e = append(e, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg}, lookup(r.IifnameSet))
	}
	if r.NFProto != ruleset.NFProtoAny {
		proto, off, size := byte(unix.NFPROTO_IPV4), uint32(offIPv4Src), uint32(4)
		if r.AddrIsDest {
			off = offIPv4Dst
		}
		if r.NFProto == ruleset.NFProtoIPv6 {
			proto, off, size = unix.NFPROTO_IPV6, offIPv6Src, 16
			if r.AddrIsDest {
				off = offIPv6Dst
			}
		}
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
		)
		if r.AddrSet != "" {
			e = append(e, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size}, lookup(r.AddrSet))
		}
	}
	if r.PortSet != "" {
		off := uint32(offTCPSport)
		if r.PortIsDest {
			off = offTCPDport
		}
		e = append(e, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}, lookup(r.PortSet))
	}
	e = append(e, &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: r.Counter})
	if r.Purpose == ruleset.PurposeEvidence {
		// After the counter, so it counts every packet; the limit then
		// stops the rule for all but a sample, which is logged.
		e = append(e,
			&expr.Limit{Type: expr.LimitTypePkts, Rate: ruleset.EvidenceRate, Unit: expr.LimitTimeSecond, Burst: ruleset.EvidenceBurst},
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_SNAPLEN, Group: r.LogGroup, Snaplen: ruleset.EvidenceSnaplen},
		)
	}
	if r.Drop {
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	}
	return e
}

// commentData is the rule user data nft shows as comment "...".
func commentData(comment string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, comment)
}

// setElements encodes a model set's elements. Interval sets get a start
// element per range and an interval-end element just past it (none when the
// range reaches the top of the key space).
func setElements(s ruleset.Set) ([]nftables.SetElement, error) {
	var out []nftables.SetElement
	for _, e := range s.Elements {
		switch s.Type {
		case ruleset.SetIfname:
			if len(e) == 0 || len(e) >= unix.IFNAMSIZ {
				return nil, fmt.Errorf("set %s: interface name %q: %w", s.Name, e, ErrInvalidTable)
			}
			key := make([]byte, unix.IFNAMSIZ)
			copy(key, e)
			out = append(out, nftables.SetElement{Key: key})
		case ruleset.SetInetService:
			p, err := ruleset.ParsePortSpan(e)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w: %w", s.Name, ErrInvalidTable, err)
			}
			out = append(out, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p.First)})
			if p.Last != 0xffff {
				out = append(out, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p.Last + 1), IntervalEnd: true})
			}
		default:
			r, err := ruleset.ParseAddrRange(e)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w: %w", s.Name, ErrInvalidTable, err)
			}
			if want := s.Type == ruleset.SetIPv4Addr; r.First.Is4() != want {
				return nil, fmt.Errorf("set %s: element %s is not of type %s: %w", s.Name, e, s.Type, ErrInvalidTable)
			}
			out = append(out, nftables.SetElement{Key: r.First.AsSlice()})
			if next := r.Last.Next(); next.IsValid() {
				out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
			}
		}
	}
	return out, nil
}
