package flows

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Wire format helpers that neither allocate nor go through
// ti-mo/conntrack's decoder: the bulk paths (dumps, events, batched
// updates) handle a million flows and must cost little per flow.

const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	nfgenLen    = 4  // struct nfgenmsg
	nlaHdrLen   = 4  // struct nlattr
	nlaNested   = 0x8000

	subsysCtnetlink = 1
	ipctnlMsgCtDel  = 2

	ctaStatus = 3
	ctaID     = 12

	ctaProtoInfoTCPState  = 1
	ctaProtoInfoTCPWScale = 2 // original; reply is 3
)

// wireWriter appends netlink messages to a reusable buffer.
type wireWriter struct{ b []byte }

// begin starts a ctnetlink message and returns its offset, for end.
func (w *wireWriter) begin(typ, flags uint16, seq uint32, family uint8) int {
	start := len(w.b)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // length, set by end
	w.b = binary.NativeEndian.AppendUint16(w.b, subsysCtnetlink<<8|typ)
	w.b = binary.NativeEndian.AppendUint16(w.b, flags)
	w.b = binary.NativeEndian.AppendUint32(w.b, seq)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // port: the kernel fills it in
	w.b = append(w.b, family, 0, 0, 0)             // nfgenmsg: family, version 0, res_id 0
	return start
}

// end sets the length of the message started at start.
func (w *wireWriter) end(start int) {
	binary.NativeEndian.PutUint32(w.b[start:], uint32(len(w.b)-start))
}

func (w *wireWriter) attrHdr(typ uint16, n int) {
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(nlaHdrLen+n))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
}

func (w *wireWriter) pad() {
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *wireWriter) u8(typ uint16, v uint8) {
	w.attrHdr(typ, 1)
	w.b = append(w.b, v)
	w.pad()
}

func (w *wireWriter) be16(typ uint16, v uint16) {
	w.attrHdr(typ, 2)
	w.b = binary.BigEndian.AppendUint16(w.b, v)
	w.pad()
}

func (w *wireWriter) be32(typ uint16, v uint32) {
	w.attrHdr(typ, 4)
	w.b = binary.BigEndian.AppendUint32(w.b, v)
}

func (w *wireWriter) bytes2(typ uint16, a, b byte) {
	w.attrHdr(typ, 2)
	w.b = append(w.b, a, b)
	w.pad()
}

// nest starts a nested attribute and returns its offset, for unnest.
func (w *wireWriter) nest(typ uint16) int {
	start := len(w.b)
	w.attrHdr(typ|nlaNested, 0)
	return start
}

// unnest sets the length of the nested attribute started at start.
func (w *wireWriter) unnest(start int) {
	binary.NativeEndian.PutUint16(w.b[start:], uint16(len(w.b)-start))
}

// tuple appends a CTA_TUPLE_* nest for t (TCP).
func (w *wireWriter) tuple(typ uint16, t *Tuple) {
	n := w.nest(typ)
	ip := w.nest(ctaTupleIP)
	if t.Src.Is4() {
		s, d := t.Src.As4(), t.Dst.As4()
		w.attrHdr(ctaIPv4Src, 4)
		w.b = append(w.b, s[:]...)
		w.attrHdr(ctaIPv4Dst, 4)
		w.b = append(w.b, d[:]...)
	} else {
		s, d := t.Src.As16(), t.Dst.As16()
		w.attrHdr(ctaIPv6Src, 16)
		w.b = append(w.b, s[:]...)
		w.attrHdr(ctaIPv6Dst, 16)
		w.b = append(w.b, d[:]...)
	}
	w.unnest(ip)
	p := w.nest(ctaTupleProto)
	w.u8(ctaProtoNum, ProtoTCP)
	w.be16(ctaProtoSrcPort, t.SrcPort)
	w.be16(ctaProtoDstPort, t.DstPort)
	w.unnest(p)
	w.unnest(n)
}

// liberal appends the flags-only update u (see liberalMessage, which this
// encodes byte for byte, and Update.ByReply) with the given header flags.
func (w *wireWriter) liberal(seq uint32, flags uint16, u *Update) {
	fam := uint8(unix.AF_INET6)
	if u.Key.Orig.Src.Is4() {
		fam = unix.AF_INET
	}
	m := w.begin(ipctnlMsgCtNew, flags, seq, fam)
	if u.ByReply {
		w.tuple(ctaTupleReply, &u.Key.Orig)
	} else {
		w.tuple(ctaTupleOrig, &u.Key.Orig)
	}
	if u.Key.Zone != 0 {
		w.be16(ctaZone, u.Key.Zone)
	}
	value := uint8(0)
	if u.Set {
		value = BeLiberal
	}
	if u.Dirs&Both != 0 {
		pi := w.nest(ctaProtoInfo)
		tcp := w.nest(ctaProtoInfoTCP)
		if u.Dirs.Has(Original) {
			w.bytes2(ctaProtoInfoTCPFlagsOriginal, value, BeLiberal) // struct nf_ct_tcp_flags {flags, mask}
		}
		if u.Dirs.Has(Reply) {
			w.bytes2(ctaProtoInfoTCPFlagsReply, value, BeLiberal)
		}
		w.unnest(tcp)
		w.unnest(pi)
	}
	if u.Mark != 0 {
		// The kernel computes (mark & ~CTA_MARK_MASK) ^ CTA_MARK.
		mv := uint32(0)
		if u.Set {
			mv = uint32(u.Mark)
		}
		w.be32(ctaMark, mv)
		w.be32(ctaMarkMask, uint32(u.Mark))
	}
	w.end(m)
}

// wireMsg is one netlink message of a datagram.
type wireMsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	data  []byte // after the nfgenmsg header, or the NLMSG_ERROR/DONE payload
}

// nextMsg splits the first message off b; ok is false when b holds no whole
// message.
func nextMsg(b []byte) (m wireMsg, rest []byte, ok bool) {
	if len(b) < nlmsgHdrLen {
		return m, nil, false
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < nlmsgHdrLen || n > len(b) {
		return m, nil, false
	}
	m.typ = binary.NativeEndian.Uint16(b[4:])
	m.flags = binary.NativeEndian.Uint16(b[6:])
	m.seq = binary.NativeEndian.Uint32(b[8:])
	body := b[nlmsgHdrLen:n]
	switch {
	case m.typ == unix.NLMSG_ERROR || m.typ == unix.NLMSG_DONE:
		m.data = body
	case len(body) >= nfgenLen:
		m.data = body[nfgenLen:]
	}
	aligned := min((n+3)&^3, len(b))
	return m, b[aligned:], true
}

// wireAttrs iterates over netlink attributes without allocating.
type wireAttrs struct{ b []byte }

// next returns the next attribute's type (without flags) and data.
func (a *wireAttrs) next() (typ uint16, data []byte, ok bool) {
	if len(a.b) < nlaHdrLen {
		return 0, nil, false
	}
	n := int(binary.NativeEndian.Uint16(a.b))
	if n < nlaHdrLen || n > len(a.b) {
		return 0, nil, false
	}
	typ = binary.NativeEndian.Uint16(a.b[2:]) &^ (nlaNested | 0x4000)
	data = a.b[nlaHdrLen:n]
	a.b = a.b[min((n+3)&^3, len(a.b)):]
	return typ, data, true
}

// decodeWireFlow decodes a ctnetlink entry message's attributes (a dump
// entry or an event) into f; ok is false for an entry that is not TCP or
// lacks its original tuple.
func decodeWireFlow(data []byte, f *Flow) (ok bool) {
	*f = Flow{}
	a := wireAttrs{data}
	var orig bool
	for {
		typ, v, more := a.next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleOrig:
			orig = decodeWireTuple(v, &f.Orig, &f.Proto)
		case ctaTupleReply:
			var p uint8
			decodeWireTuple(v, &f.Reply, &p)
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

func decodeWireTuple(b []byte, t *Tuple, proto *uint8) bool {
	a := wireAttrs{b}
	for {
		typ, v, more := a.next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleIP:
			ia := wireAttrs{v}
			for {
				it, iv, more := ia.next()
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
			pa := wireAttrs{v}
			for {
				pt, pv, more := pa.next()
				if !more {
					break
				}
				switch {
				case pt == ctaProtoNum && len(pv) >= 1:
					*proto = pv[0]
				case pt == ctaProtoSrcPort && len(pv) == 2:
					t.SrcPort = binary.BigEndian.Uint16(pv)
				case pt == ctaProtoDstPort && len(pv) == 2:
					t.DstPort = binary.BigEndian.Uint16(pv)
				}
			}
		}
	}
	return t.Src.IsValid() && t.Dst.IsValid()
}

// decodeWireTCP reads CTA_PROTOINFO_TCP: the state, window scales and each
// direction's flags (struct nf_ct_tcp_flags {flags, mask}).
func decodeWireTCP(b []byte, f *Flow) {
	a := wireAttrs{b}
	for {
		typ, v, more := a.next()
		if !more {
			return
		}
		if typ != ctaProtoInfoTCP {
			continue
		}
		ta := wireAttrs{v}
		for {
			tt, tv, more := ta.next()
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
