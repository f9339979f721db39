package flows

import (
	"encoding/binary"
	"net/netip"

	"github.com/ctguard/ctguard/internal/nlwire"
	"golang.org/x/sys/unix"
)

// Wire format helpers that neither allocate nor go through
// ti-mo/conntrack's decoder: the bulk paths (dumps, events, batched
// updates) handle a million flows and must cost little per flow.

const (
	subsysCtnetlink = 1
	ipctnlMsgCtDel  = 2

	ctaStatus = 3
	ctaID     = 12

	ctaProtoInfoTCPState  = 1
	ctaProtoInfoTCPWScale = 2 // original; reply is 3
)

// AppendTuple appends a CTA_TUPLE_* nest of type typ for the TCP tuple t.
func AppendTuple(w *nlwire.Writer, typ uint16, t *Tuple) {
	n := w.Nest(typ)
	ip := w.Nest(ctaTupleIP)
	if t.Src.Is4() {
		s, d := t.Src.As4(), t.Dst.As4()
		w.AttrHeader(ctaIPv4Src, 4)
		w.B = append(w.B, s[:]...)
		w.AttrHeader(ctaIPv4Dst, 4)
		w.B = append(w.B, d[:]...)
	} else {
		s, d := t.Src.As16(), t.Dst.As16()
		w.AttrHeader(ctaIPv6Src, 16)
		w.B = append(w.B, s[:]...)
		w.AttrHeader(ctaIPv6Dst, 16)
		w.B = append(w.B, d[:]...)
	}
	w.Unnest(ip)
	p := w.Nest(ctaTupleProto)
	w.U8(ctaProtoNum, ProtoTCP)
	w.BE16(ctaProtoSrcPort, t.SrcPort)
	w.BE16(ctaProtoDstPort, t.DstPort)
	w.Unnest(p)
	w.Unnest(n)
}

// AppendUpdate appends the flags-only update u as one ctnetlink message
// with the given sequence number and header flags (see liberalMessage,
// which this encodes byte for byte, and Update.ByReply). The Updater sends
// these in batches; the gate sends them in the same write as its verdicts.
func AppendUpdate(w *nlwire.Writer, seq uint32, flags uint16, u *Update) {
	fam := uint8(unix.AF_INET6)
	if u.Key.Orig.Src.Is4() {
		fam = unix.AF_INET
	}
	m := w.Begin(subsysCtnetlink<<8|ipctnlMsgCtNew, flags, seq, fam, 0)
	if u.ByReply {
		AppendTuple(w, ctaTupleReply, &u.Key.Orig)
	} else {
		AppendTuple(w, ctaTupleOrig, &u.Key.Orig)
	}
	if u.Key.Zone != 0 {
		w.BE16(ctaZone, u.Key.Zone)
	}
	value := uint8(0)
	if u.Set {
		value = BeLiberal
	}
	if u.Dirs&Both != 0 {
		pi := w.Nest(ctaProtoInfo)
		tcp := w.Nest(ctaProtoInfoTCP)
		if u.Dirs.Has(Original) {
			w.Attr(ctaProtoInfoTCPFlagsOriginal, value, BeLiberal) // struct nf_ct_tcp_flags {flags, mask}
		}
		if u.Dirs.Has(Reply) {
			w.Attr(ctaProtoInfoTCPFlagsReply, value, BeLiberal)
		}
		w.Unnest(tcp)
		w.Unnest(pi)
	}
	if u.Mark != 0 {
		// The kernel computes (mark & ~CTA_MARK_MASK) ^ CTA_MARK.
		mv := uint32(0)
		if u.Set {
			mv = uint32(u.Mark)
		}
		w.BE32(ctaMark, mv)
		w.BE32(ctaMarkMask, uint32(u.Mark))
	}
	w.End(m)
}

// DecodeFlow decodes a ctnetlink entry message's attributes (a dump
// entry, an event or a GET's answer) into f, without allocating; ok is
// false for an entry that is not TCP or lacks its original tuple.
func DecodeFlow(data []byte, f *Flow) (ok bool) {
	*f = Flow{}
	a := nlwire.Attrs(data)
	var orig bool
	for {
		typ, v, more := a.Next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleOrig:
			f.Proto, orig = DecodeTuple(v, &f.Orig)
		case ctaTupleReply:
			DecodeTuple(v, &f.Reply)
		case ctaStatus:
			if len(v) == 4 {
				f.Status = binary.BigEndian.Uint32(v)
			}
		case ctaMark:
			if len(v) == 4 {
				f.Mark = binary.BigEndian.Uint32(v)
			}
		case ctaID:
			if len(v) == 4 {
				f.ID = binary.BigEndian.Uint32(v)
			}
		case ctaZone:
			if len(v) == 2 {
				f.Zone = binary.BigEndian.Uint16(v)
			}
		case ctaProtoInfo:
			decodeWireTCP(v, f)
		}
	}
	return orig && f.Proto == ProtoTCP
}

// DecodeTuple decodes a CTA_TUPLE_* nest into t and returns its protocol
// number; ok is true when it held both addresses and a protocol nest.
func DecodeTuple(b []byte, t *Tuple) (proto uint8, ok bool) {
	a := nlwire.Attrs(b)
	var ports bool
	for {
		typ, v, more := a.Next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleIP:
			ia := nlwire.Attrs(v)
			for {
				it, iv, more := ia.Next()
				if !more {
					break
				}
				switch {
				case it == ctaIPv4Src && len(iv) == 4:
					t.Src = netip.AddrFrom4([4]byte(iv))
				case it == ctaIPv4Dst && len(iv) == 4:
					t.Dst = netip.AddrFrom4([4]byte(iv))
				case it == ctaIPv6Src && len(iv) == 16:
					t.Src = netip.AddrFrom16([16]byte(iv))
				case it == ctaIPv6Dst && len(iv) == 16:
					t.Dst = netip.AddrFrom16([16]byte(iv))
				}
			}
		case ctaTupleProto:
			pa := nlwire.Attrs(v)
			for {
				pt, pv, more := pa.Next()
				if !more {
					break
				}
				switch {
				case pt == ctaProtoNum && len(pv) >= 1:
					proto = pv[0]
				case pt == ctaProtoSrcPort && len(pv) == 2:
					t.SrcPort = binary.BigEndian.Uint16(pv)
				case pt == ctaProtoDstPort && len(pv) == 2:
					t.DstPort = binary.BigEndian.Uint16(pv)
				}
			}
			ports = true
		}
	}
	return proto, ports && t.Src.IsValid() && t.Dst.IsValid()
}

// decodeWireTCP reads CTA_PROTOINFO_TCP: the state, window scales and each
// direction's flags (struct nf_ct_tcp_flags {flags, mask}).
func decodeWireTCP(b []byte, f *Flow) {
	a := nlwire.Attrs(b)
	for {
		typ, v, more := a.Next()
		if !more {
			return
		}
		if typ != ctaProtoInfoTCP {
			continue
		}
		ta := nlwire.Attrs(v)
		for {
			tt, tv, more := ta.Next()
			if !more {
				break
			}
			if len(tv) < 1 {
				continue
			}
			switch tt {
			case ctaProtoInfoTCPState:
				f.State, f.HasProtoInfo = TCPState(tv[0]), true
			case ctaProtoInfoTCPWScale:
				f.OrigWScale = tv[0]
			case ctaProtoInfoTCPWScale + 1:
				f.ReplyWScale = tv[0]
			case ctaProtoInfoTCPFlagsOriginal:
				f.OrigFlags, f.HasFlags = tv[0], true
			case ctaProtoInfoTCPFlagsReply:
				f.ReplyFlags, f.HasFlags = tv[0], true
			}
		}
	}
}
