package flows

import (
	"net/netip"
	"testing"

	"github.com/ctguard/ctguard/internal/nlwire"
)

// TestDecodeTuple checks AppendTuple and DecodeTuple against each other and
// what DecodeTuple accepts: both addresses and a protocol nest.
func TestDecodeTuple(t *testing.T) {
	v4 := Tuple{Src: netip.MustParseAddr("198.18.8.2"), Dst: netip.MustParseAddr("198.19.8.2"), SrcPort: 40000, DstPort: 443}
	v6 := Tuple{Src: netip.MustParseAddr("fd00:c7:8:1::2"), Dst: netip.MustParseAddr("fd00:c7:8:2::2"), SrcPort: 40000, DstPort: 8080}
	nest := func(fill func(w *nlwire.Writer)) []byte {
		var w nlwire.Writer
		fill(&w)
		return w.B
	}
	tuple := func(t Tuple) []byte {
		var w nlwire.Writer
		AppendTuple(&w, ctaTupleOrig, &t)
		return w.B[nlwire.AttrHdrLen:] // the nest's contents
	}
	tests := []struct {
		name  string
		b     []byte
		want  Tuple
		proto uint8
		ok    bool
	}{
		{"ipv4", tuple(v4), v4, ProtoTCP, true},
		{"ipv6", tuple(v6), v6, ProtoTCP, true},
		{"no protocol nest", nest(func(w *nlwire.Writer) {
			n := w.Nest(ctaTupleIP)
			w.Attr(ctaIPv4Src, 198, 18, 8, 2)
			w.Attr(ctaIPv4Dst, 198, 19, 8, 2)
			w.Unnest(n)
		}), Tuple{Src: v4.Src, Dst: v4.Dst}, 0, false},
		{"no destination", nest(func(w *nlwire.Writer) {
			n := w.Nest(ctaTupleIP)
			w.Attr(ctaIPv4Src, 198, 18, 8, 2)
			w.Unnest(n)
			p := w.Nest(ctaTupleProto)
			w.U8(ctaProtoNum, 17)
			w.Unnest(p)
		}), Tuple{Src: v4.Src}, 17, false},
		{"empty", nil, Tuple{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Tuple
			proto, ok := DecodeTuple(tt.b, &got)
			if got != tt.want || proto != tt.proto || ok != tt.ok {
				t.Errorf("DecodeTuple = %+v, %d, %v; want %+v, %d, %v", got, proto, ok, tt.want, tt.proto, tt.ok)
			}
		})
	}
}

// TestDecodeFlow decodes an entry as a GET answers it (the gate's reads)
// and rejects a truncated one.
func TestDecodeFlow(t *testing.T) {
	orig := Tuple{Src: netip.MustParseAddr("198.18.8.2"), Dst: netip.MustParseAddr("198.18.9.1"), SrcPort: 40000, DstPort: 80}
	reply := Tuple{Src: netip.MustParseAddr("198.19.8.2"), Dst: netip.MustParseAddr("198.18.8.2"), SrcPort: 8080, DstPort: 40000}
	var w nlwire.Writer
	AppendTuple(&w, ctaTupleOrig, &orig)
	AppendTuple(&w, ctaTupleReply, &reply)
	w.BE32(ctaStatus, StatusDstNAT|0x8)
	w.BE32(ctaMark, 0x800000)
	pi := w.Nest(ctaProtoInfo)
	tcp := w.Nest(ctaProtoInfoTCP)
	w.Attr(ctaProtoInfoTCPFlagsOriginal, 0x03, 0)
	w.Attr(ctaProtoInfoTCPFlagsReply, BeLiberal|0x01, 0)
	w.Unnest(tcp)
	w.Unnest(pi)
	var f Flow
	want := Flow{Orig: orig, Reply: reply, Proto: ProtoTCP, Status: StatusDstNAT | 0x8, Mark: 0x800000, OrigFlags: 0x03, ReplyFlags: BeLiberal | 0x01, HasFlags: true}
	if !DecodeFlow(w.B, &f) || f != want {
		t.Errorf("DecodeFlow = %+v; want %+v", f, want)
	}
	if DecodeFlow(w.B[:20], &f) {
		t.Error("a truncated entry decoded")
	}
}
