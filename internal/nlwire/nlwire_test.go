package nlwire

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// ne16 and ne32 return host-order bytes: netlink headers are in host order.
func ne16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestWriter(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer)
		want  []byte
	}{
		{"attr padded", func(w *Writer) { w.Attr(7, 1, 2, 3) },
			cat(ne16(7), ne16(7), []byte{1, 2, 3, 0})},
		{"attr empty", func(w *Writer) { w.Attr(2) },
			cat(ne16(4), ne16(2))},
		{"u8", func(w *Writer) { w.U8(1, 6) },
			cat(ne16(5), ne16(1), []byte{6, 0, 0, 0})},
		{"be16", func(w *Writer) { w.BE16(2, 0x1f90) },
			cat(ne16(6), ne16(2), []byte{0x1f, 0x90, 0, 0})},
		{"be32", func(w *Writer) { w.BE32(8, 0x01020304) },
			cat(ne16(8), ne16(8), []byte{1, 2, 3, 4})},
		{"header and data", func(w *Writer) { w.AttrHeader(3, 2); w.B = append(w.B, 9, 9); w.Pad() },
			cat(ne16(6), ne16(3), []byte{9, 9, 0, 0})},
		{"nest", func(w *Writer) {
			n := w.Nest(4)
			w.U8(1, 0xaa)
			w.BE16(2, 1)
			w.Unnest(n)
		}, cat(ne16(20), ne16(4|AttrNested), ne16(5), ne16(1), []byte{0xaa, 0, 0, 0}, ne16(6), ne16(2), []byte{0, 1, 0, 0})},
		{"message", func(w *Writer) {
			m := w.Begin(1<<8|2, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 0x01020304, unix.AF_INET6, 0x0506)
			w.BE32(1, 0xdeadbeef)
			w.End(m)
		}, cat(ne32(28), ne16(1<<8|2), ne16(unix.NLM_F_REQUEST|unix.NLM_F_ACK), ne32(0x01020304), ne32(0),
			[]byte{unix.AF_INET6, 0, 5, 6}, ne16(8), ne16(1), []byte{0xde, 0xad, 0xbe, 0xef})},
		{"two messages", func(w *Writer) {
			w.End(w.Begin(1, 0, 1, 0, 0))
			w.End(w.Begin(2, 0, 2, 0, 0))
		}, cat(ne32(20), ne16(1), ne16(0), ne32(1), ne32(0), []byte{0, 0, 0, 0},
			ne32(20), ne16(2), ne16(0), ne32(2), ne32(0), []byte{0, 0, 0, 0})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := Writer{B: []byte{}}
			tt.write(&w)
			if !bytes.Equal(w.B, tt.want) {
				t.Errorf("got  %x\nwant %x", w.B, tt.want)
			}
		})
	}
}

func TestWriterDoesNotAllocate(t *testing.T) {
	w := Writer{B: make([]byte, 0, 256)}
	allocs := testing.AllocsPerRun(100, func() {
		w.B = w.B[:0]
		m := w.Begin(1, 0, 1, 0, 0)
		n := w.Nest(1)
		w.Attr(2, 1, 2)
		w.U8(3, 1)
		w.BE16(4, 1)
		w.BE32(5, 1)
		w.Unnest(n)
		w.End(m)
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

func TestNext(t *testing.T) {
	hdr := func(n uint32, typ uint16, seq uint32) []byte {
		return cat(ne32(n), ne16(typ), ne16(unix.NLM_F_MULTI), ne32(seq), ne32(0))
	}
	errMsg := cat(hdr(20, unix.NLMSG_ERROR, 3), ne32(uint32(0xfffffffe))) // -ENOENT
	ctMsg := cat(hdr(26, 1<<8, 4), []byte{unix.AF_INET, 0, 0, 7}, ne16(6), ne16(2), []byte{1, 2})
	tests := []struct {
		name string
		b    []byte
		want Message
		rest []byte
		ok   bool
	}{
		{"error", errMsg, Message{Type: unix.NLMSG_ERROR, Flags: unix.NLM_F_MULTI, Seq: 3, Data: ne32(uint32(0xfffffffe))}, []byte{}, true},
		{"done without payload", hdr(16, unix.NLMSG_DONE, 5), Message{Type: unix.NLMSG_DONE, Flags: unix.NLM_F_MULTI, Seq: 5, Data: []byte{}}, []byte{}, true},
		{"nfgenmsg skipped, rest aligned", cat(ctMsg, []byte{0, 0}, errMsg),
			Message{Type: 1 << 8, Flags: unix.NLM_F_MULTI, Seq: 4, ResID: 7, Data: cat(ne16(6), ne16(2), []byte{1, 2})}, errMsg, true},
		{"last message unpadded", ctMsg,
			Message{Type: 1 << 8, Flags: unix.NLM_F_MULTI, Seq: 4, ResID: 7, Data: cat(ne16(6), ne16(2), []byte{1, 2})}, []byte{}, true},
		{"body shorter than nfgenmsg", cat(hdr(18, 1<<8, 1), []byte{2, 0}), Message{Type: 1 << 8, Flags: unix.NLM_F_MULTI, Seq: 1}, []byte{}, true},
		{"short header", hdr(16, 1, 1)[:15], Message{}, nil, false},
		{"length beyond data", hdr(40, 1, 1), Message{}, nil, false},
		{"length below header", hdr(8, 1, 1), Message{}, nil, false},
		{"empty", nil, Message{}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rest, ok := Next(tt.b)
			if ok != tt.ok || m.Type != tt.want.Type || m.Flags != tt.want.Flags || m.Seq != tt.want.Seq ||
				m.ResID != tt.want.ResID || !bytes.Equal(m.Data, tt.want.Data) || !bytes.Equal(rest, tt.rest) {
				t.Errorf("Next = %+v, rest %x, %v; want %+v, rest %x, %v", m, rest, ok, tt.want, tt.rest, tt.ok)
			}
		})
	}
}

func TestErrno(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want unix.Errno
	}{
		{"ack", ne32(0), 0},
		{"ENOENT", ne32(uint32(0xfffffffe)), unix.ENOENT},
		{"EBUSY (-16) with the request echoed", cat(ne32(0xfffffff0), make([]byte, 16)), unix.EBUSY},
		{"short", []byte{1, 2, 3}, unix.EPROTO},
		{"empty", nil, unix.EPROTO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Errno(tt.b); got != tt.want {
				t.Errorf("Errno = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAttrs(t *testing.T) {
	type attr struct {
		typ  uint16
		data []byte
	}
	tests := []struct {
		name string
		b    []byte
		want []attr
	}{
		{"padded then unpadded", cat(ne16(5), ne16(1), []byte{9, 0, 0, 0}, ne16(6), ne16(2), []byte{1, 2}),
			[]attr{{1, []byte{9}}, {2, []byte{1, 2}}}},
		{"nested and byte-order flags cleared", cat(ne16(8), ne16(3|AttrNested|0x4000), []byte{1, 2, 3, 4}),
			[]attr{{3, []byte{1, 2, 3, 4}}}},
		{"empty attribute", cat(ne16(4), ne16(7)), []attr{{7, []byte{}}}},
		{"stops at length beyond data", cat(ne16(5), ne16(1), []byte{9, 0, 0, 0}, ne16(12), ne16(2), []byte{1, 2}),
			[]attr{{1, []byte{9}}}},
		{"stops at length below header", cat(ne16(3), ne16(1), []byte{0, 0}), nil},
		{"stops at a partial header", []byte{8, 0}, nil},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []attr
			a := Attrs(tt.b)
			for {
				typ, v, ok := a.Next()
				if !ok {
					break
				}
				got = append(got, attr{typ, v})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i].typ != tt.want[i].typ || !bytes.Equal(got[i].data, tt.want[i].data) {
					t.Errorf("attribute %d: got %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}
