package flows

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/nlwire"
	"golang.org/x/sys/unix"
)

// TestBatchEncodingMatchesSingleUpdate checks that a batched update encodes
// the same attributes as the single update (liberalMessage, checked byte by
// byte in TestLiberalMessage).
func TestBatchEncodingMatchesSingleUpdate(t *testing.T) {
	f := Flow{Proto: ProtoTCP, Zone: 7, Orig: Tuple{
		Src: netip.MustParseAddr("2001:db8::2"), Dst: netip.MustParseAddr("2001:db8::10"),
		SrcPort: 40000, DstPort: 443,
	}}
	for _, set := range []bool{true, false} {
		for _, dirs := range []Directions{0, Original, Reply, Both} {
			for _, mark := range []MarkBit{0, DefaultMarkBit} {
				if dirs == 0 && mark == 0 {
					continue
				}
				flags := uint8(0)
				if set {
					flags = BeLiberal
				}
				want, err := liberalMessage(&f, dirs, flags, mark)
				if err != nil {
					t.Fatal(err)
				}
				var w nlwire.Writer
				AppendUpdate(&w, 9, unix.NLM_F_REQUEST, &Update{Key: f.Key(), Dirs: dirs, Set: set, Mark: mark})
				m, _, ok := nlwire.Next(w.B)
				if !ok || !bytes.Equal(w.B[nlwire.MsgHdrLen:], want.Data) || m.Seq != 9 {
					t.Errorf("set %v dirs %v mark %#x:\n got  %x\n want %x", set, dirs, mark, w.B[nlwire.MsgHdrLen:], want.Data)
				}
			}
		}
	}
}

// TestUpdateByReplyTuple checks the gate's form: the entry addressed by
// its reply tuple only, and that encoding allocates nothing.
func TestUpdateByReplyTuple(t *testing.T) {
	reply := Tuple{Src: netip.MustParseAddr("fd00:c7:8:2::2"), Dst: netip.MustParseAddr("fd00:c7:8:1::2"), SrcPort: 8080, DstPort: 40000}
	u := Update{Key: Key{Orig: reply}, ByReply: true, Dirs: Reply, Set: true, Mark: DefaultMarkBit}
	w := nlwire.Writer{B: make([]byte, 0, 512)}
	allocs := testing.AllocsPerRun(100, func() {
		w.B = w.B[:0]
		AppendUpdate(&w, 7, unix.NLM_F_REQUEST|unix.NLM_F_ACK, &u)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per update, want 0", allocs)
	}
	m, _, ok := nlwire.Next(w.B)
	if !ok || m.Type != subsysCtnetlink<<8|ipctnlMsgCtNew || m.Flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK || w.B[16] != unix.AF_INET6 {
		t.Fatalf("message %+v family %d: want an update (no create, no excl) for AF_INET6", m, w.B[16])
	}
	var f Flow
	a := nlwire.Attrs(m.Data)
	for {
		typ, v, more := a.Next()
		if !more {
			break
		}
		switch typ {
		case ctaTupleOrig:
			t.Error("the update must address the entry by its reply tuple only")
		case ctaTupleReply:
			if p, ok := DecodeTuple(v, &f.Reply); !ok || f.Reply != reply || p != ProtoTCP {
				t.Errorf("reply tuple %+v proto %d, want %+v", f.Reply, p, reply)
			}
		case ctaProtoInfo:
			decodeWireTCP(v, &f)
		}
	}
	if f.ReplyFlags != BeLiberal || f.OrigFlags != 0 {
		t.Errorf("flags original %#x reply %#x, want reply BE_LIBERAL only", f.OrigFlags, f.ReplyFlags)
	}
}

// TestPrivilegedUpdaterAndMarkDump flags thousands of flows in batches,
// reports a vanished flow as ENOENT, and checks the kernel-filtered dumps
// against conntrack -L.
func TestPrivilegedUpdaterAndMarkDump(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	const n = 3000
	for p := range uint16(n) {
		if err := ct.Create(testFlow(20000+p, 0)); err != nil {
			t.Fatal(err)
		}
	}
	u, err := NewUpdater(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	var ups []Update
	if err := c.DumpFunc(context.Background(), func(f *Flow) error {
		if f.Orig.SrcPort%3 != 0 { // a third stays unflagged
			ups = append(ups, Update{Key: f.Key(), Dirs: Reply, Set: true, Mark: DefaultMarkBit})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	gone := ups[0]
	gone.Key.Orig.SrcPort = 1 // no such flow
	ups = append(ups[:MaxBatch+7], append([]Update{gone}, ups[MaxBatch+7:]...)...)
	if err := u.Apply(ups); err != nil {
		t.Fatal(err)
	}
	for i, up := range ups {
		want := unix.Errno(0)
		if up.Key.Orig.SrcPort == 1 {
			want = unix.ENOENT
		}
		if up.Errno != want {
			t.Fatalf("update %d (%v): errno %v, want %v", i, up.Key.Orig, up.Errno, want)
		}
	}
	count := func(value uint32) (flagged, other int) {
		t.Helper()
		if err := c.DumpMark(context.Background(), value, uint32(DefaultMarkBit), func(f *Flow) error {
			if f.Mark&uint32(DefaultMarkBit) != value {
				t.Fatalf("filtered dump returned mark %#x", f.Mark)
			}
			if f.Liberal() == Reply {
				flagged++
			} else {
				other++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return flagged, other
	}
	wantFlagged := len(ups) - 1
	if f, o := count(uint32(DefaultMarkBit)); f != wantFlagged || o != 0 {
		t.Fatalf("dump of marked flows: %d flagged, %d not; want %d, 0", f, o, wantFlagged)
	}
	if f, o := count(0); f != 0 || o != n-wantFlagged {
		t.Fatalf("dump of unmarked flows: %d flagged, %d not; want 0, %d", f, o, n-wantFlagged)
	}
	out := string(ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", fmt.Sprint(DefaultMarkBit)))
	if got := strings.Count(out, "dport=443 "); got != wantFlagged {
		t.Fatalf("conntrack -L --mark lists %d flows, want %d", got, wantFlagged)
	}
	// Clearing in a batch restores every flow.
	for i := range ups {
		ups[i].Set = false
	}
	if err := u.Apply(ups); err != nil {
		t.Fatal(err)
	}
	if f, o := count(0); f != 0 || o != n {
		t.Fatalf("after clearing: %d flagged, %d not among unmarked flows; want 0, %d", f, o, n)
	}
}

// BenchmarkDecodeEvent shows the event decoder allocates nothing.
func BenchmarkDecodeEvent(b *testing.B) {
	var w nlwire.Writer
	f := Flow{Orig: Tuple{Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.19.0.10"), SrcPort: 1, DstPort: 443}}
	AppendUpdate(&w, 1, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, &Update{Key: f.Key(), Dirs: Both, Set: true, Mark: DefaultMarkBit})
	dst := make([]Event, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = decodeEvents(dst[:0], w.B); err != nil || len(dst) != 1 || dst[0].Type != EventNew {
			b.Fatal(err, dst)
		}
	}
}
