package gate

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func tuple(src, dst string) Tuple {
	s, d := ap(src), ap(dst)
	return Tuple{Src: s.Addr(), Dst: d.Addr(), SrcPort: s.Port(), DstPort: d.Port()}
}

// ipv4 returns an IPv4 header of ihl words (options zeroed) and a TCP header.
func ipv4(ihl int, proto byte, src, dst string) []byte {
	s, d := ap(src), ap(dst)
	p := make([]byte, ihl*4+20)
	p[0] = 0x40 | byte(ihl)
	p[9] = proto
	copy(p[12:], s.Addr().AsSlice())
	copy(p[16:], d.Addr().AsSlice())
	binary.BigEndian.PutUint16(p[ihl*4:], s.Port())
	binary.BigEndian.PutUint16(p[ihl*4+2:], d.Port())
	return p
}

// ipv6 returns an IPv6 header, the extension headers (next header, length
// in 8-byte units beyond the first 8) and a TCP header.
func ipv6(src, dst string, ext ...byte) []byte {
	s, d := ap(src), ap(dst)
	p := make([]byte, 40)
	p[0] = 0x60
	copy(p[8:], s.Addr().AsSlice())
	copy(p[24:], d.Addr().AsSlice())
	next := byte(protoTCP)
	if len(ext) > 0 {
		next = ext[0]
	}
	p[6] = next
	for i := 0; i < len(ext); i++ {
		after := byte(protoTCP)
		if i+1 < len(ext) {
			after = ext[i+1]
		}
		h := make([]byte, 8)
		h[0] = after
		p = append(p, h...)
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp, s.Port())
	binary.BigEndian.PutUint16(tcp[2:], d.Port())
	return append(p, tcp...)
}

func TestReplyTuple(t *testing.T) {
	frag := ipv4(5, protoTCP, "198.19.8.2:8080", "198.18.8.2:40000")
	binary.BigEndian.PutUint16(frag[6:], 10) // fragment offset 10
	tests := []struct {
		name string
		p    []byte
		want Tuple
		ok   bool
	}{
		{"ipv4", ipv4(5, protoTCP, "198.19.8.2:443", "198.19.8.1:40000"), tuple("198.19.8.2:443", "198.19.8.1:40000"), true},
		{"ipv4 with options", ipv4(7, protoTCP, "198.19.8.2:443", "198.19.8.1:40000"), tuple("198.19.8.2:443", "198.19.8.1:40000"), true},
		{"ipv4 udp", ipv4(5, 17, "198.19.8.2:443", "198.19.8.1:40000"), Tuple{}, false},
		{"ipv4 later fragment", frag, Tuple{}, false},
		{"ipv4 truncated", ipv4(5, protoTCP, "198.19.8.2:443", "198.19.8.1:40000")[:22], Tuple{}, false},
		{"ipv6", ipv6("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000"), tuple("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000"), true},
		{"ipv6 hop-by-hop and destination options", ipv6("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000", ipv6HopByHop, ipv6DestOpts),
			tuple("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000"), true},
		{"ipv6 fragment header", ipv6("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000", 44), Tuple{}, false},
		{"ipv6 truncated", ipv6("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000")[:42], Tuple{}, false},
		{"empty", nil, Tuple{}, false},
		{"version 5", []byte{0x50, 0, 0, 0}, Tuple{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := replyTuple(tt.p)
			if ok != tt.ok || (ok && got != tt.want) {
				t.Errorf("replyTuple = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// parse returns the messages of b.
func parse(t *testing.T, b []byte) []nlwire.Message {
	t.Helper()
	var out []nlwire.Message
	for len(b) > 0 {
		m, rest, ok := nlwire.Next(b)
		if !ok {
			t.Fatalf("%d bytes left that are no message", len(b))
		}
		out = append(out, m)
		b = rest
	}
	return out
}

// find returns the data of the first attribute of type typ in b.
func find(b []byte, typ uint16) []byte {
	a := nlwire.Attrs(b)
	for {
		at, v, ok := a.Next()
		if !ok {
			return nil
		}
		if at == typ {
			return v
		}
	}
}

func TestVerdictsCoverEachQueueRun(t *testing.T) {
	var w writer
	w.verdicts([]slot{{queue: 5, id: 3}, {queue: 5, id: 9}, {queue: 5, id: 4}, {queue: 6, id: 1}, {queue: 5, id: 10}})
	ms := parse(t, w.B)
	type verdict struct {
		queue uint16
		id    uint32
	}
	var got []verdict
	for _, m := range ms {
		if m.Type != subsysQueue<<8|nfqnlMsgVerdictBatch {
			t.Fatalf("message type %#x", m.Type)
		}
		h := find(m.Data, nfqaVerdictHdr)
		if binary.BigEndian.Uint32(h) != nfAccept {
			t.Errorf("verdict %d, want NF_ACCEPT", binary.BigEndian.Uint32(h))
		}
		got = append(got, verdict{m.ResID, binary.BigEndian.Uint32(h[4:])})
	}
	want := []verdict{{5, 9}, {6, 1}, {5, 10}}
	if len(got) != len(want) {
		t.Fatalf("verdicts %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("verdicts %v, want %v", got, want)
		}
	}
}

func TestBindMessage(t *testing.T) {
	var w writer
	w.bind(1, 7301, copyRange, queueMaxLen)
	ms := parse(t, w.B)
	if len(ms) != 1 || ms[0].ResID != 7301 {
		t.Fatalf("messages %+v", ms)
	}
	m := ms[0].Data
	if cmd := find(m, nfqaCfgCmd); len(cmd) != 4 || cmd[0] != nfqnlCfgCmdBind {
		t.Errorf("command %v", cmd)
	}
	if p := find(m, nfqaCfgParams); len(p) != 5 || binary.BigEndian.Uint32(p) != copyRange || p[4] != nfqnlCopyPacket {
		t.Errorf("params %v: want copy range %d, copy packet", p, copyRange)
	}
	if f := find(m, nfqaCfgFlags); binary.BigEndian.Uint32(f) != nfqaCfgFFailOpen {
		t.Errorf("flags %v: want fail-open", f)
	}
}

func TestErrno(t *testing.T) {
	code := -int32(unix.ENOENT)
	b := binary.NativeEndian.AppendUint32(nil, uint32(code))
	if nlwire.Errno(b) != unix.ENOENT || nlwire.Errno(make([]byte, 4)) != 0 || nlwire.Errno(nil) != unix.EPROTO {
		t.Error("errno decodes wrongly")
	}
}

func TestSetPoliciesFastPath(t *testing.T) {
	perFlow := func(name string, m policy.Match, h policy.Handshake, dirs ...policy.Direction) policy.Policy {
		return policytest.New(policy.Document{Metadata: policy.Metadata{Name: name}, Spec: policy.Spec{Workaround: policy.WorkaroundLiberal,
			Liberal: &policy.Liberal{Scope: policy.ScopePerFlow, Handshake: h, Directions: dirs}, Match: m}})
	}
	scoped := policy.Match{DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}
	tests := []struct {
		name string
		ps   []policy.Policy
		fast bool
		dirs flows.Directions
	}{
		{"unscoped", []policy.Policy{perFlow("a", policy.Match{}, "")}, true, flows.Reply},
		{"same directions", []policy.Policy{perFlow("a", policy.Match{Family: policy.FamilyIPv4}, policy.HandshakeGate), perFlow("b", policy.Match{NAT: []policy.NATKind{policy.NATDest}}, "")}, true, flows.Reply},
		{"scoped", []policy.Policy{perFlow("a", scoped, "")}, false, flows.Reply},
		{"guard policies are not the gate's", []policy.Policy{perFlow("a", scoped, policy.HandshakeGuard), perFlow("b", policy.Match{}, "", policy.DirectionOriginal)}, true, flows.Original},
		{"different directions", []policy.Policy{perFlow("a", policy.Match{}, ""), perFlow("b", policy.Match{}, "", policy.DirectionOriginal, policy.DirectionReply)}, false, flows.Both},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gate{}
			if err := g.SetPolicies(tt.ps); err != nil {
				t.Fatal(err)
			}
			pl := g.pols.Load()
			if pl.fast != tt.fast || (tt.fast && pl.dirs != tt.dirs) {
				t.Errorf("fast %v dirs %v, want %v %v", pl.fast, pl.dirs, tt.fast, tt.dirs)
			}
		})
	}
}

// TestPerPacketPathDoesNotAllocate covers what the gate does per packet:
// parse the headers, append the GET, the update and the verdict.
func TestPerPacketPathDoesNotAllocate(t *testing.T) {
	p4 := ipv4(5, protoTCP, "198.19.8.2:443", "198.19.8.1:40000")
	p6 := ipv6("[fd00:c7:8:2::2]:8080", "[fd00:c7:8:1::2]:40000", ipv6HopByHop)
	w := writer{nlwire.Writer{B: make([]byte, 0, 4096)}}
	batch := []slot{{queue: 1, id: 1}}
	allocs := testing.AllocsPerRun(100, func() {
		w.B = w.B[:0]
		for _, p := range [][]byte{p4, p6} {
			tp, ok := replyTuple(p)
			if !ok {
				t.Fatal("parse failed")
			}
			w.get(2, &tp)
			u := flows.Update{Key: flows.Key{Orig: tp}, ByReply: true, Dirs: flows.Reply, Set: true, Mark: flows.DefaultMarkBit}
			flows.AppendUpdate(&w.Writer, 3, unix.NLM_F_REQUEST, &u)
		}
		w.verdicts(batch)
		for b := w.B; len(b) > 0; {
			_, rest, _ := nlwire.Next(b)
			b = rest
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet pair, want 0", allocs)
	}
}

// TestCountAck checks how the updates' outcomes are counted: an update
// answered by its error code (a refusal, or an ack), any other message
// (the bind's ack) not at all, and the unanswered ones as flagged once the
// socket is read empty.
func TestCountAck(t *testing.T) {
	ack := func(errno unix.Errno, typ uint16) []byte {
		b := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
		b = binary.NativeEndian.AppendUint32(b, nlwire.MsgHdrLen) // the echoed header
		b = binary.NativeEndian.AppendUint16(b, typ)
		return append(b, make([]byte, nlwire.MsgHdrLen-6)...)
	}
	update := uint16(subsysCtnetlink<<8 | ipctnlMsgCtNew)
	g := &Gate{obs: noObserver{}, unsettled: 5}
	for _, data := range [][]byte{
		ack(0, update), ack(0, update), ack(unix.ENOENT, update), ack(unix.EPERM, update),
		ack(0, subsysQueue<<8|nfqnlMsgConfig), ack(0, update)[:10],
	} {
		g.countAck(data)
	}
	if st := g.Stats(); st.Flagged != 2 || st.Gone != 1 || st.Errors != 1 || g.unsettled != 1 {
		t.Errorf("flagged %d gone %d errors %d unsettled %d, want 2 1 1 1", st.Flagged, st.Gone, st.Errors, g.unsettled)
	}
	g.settle() // read the socket empty
	if st := g.Stats(); st.Flagged != 3 || g.unsettled != 0 {
		t.Errorf("settled: flagged %d unsettled %d, want 3 0", st.Flagged, g.unsettled)
	}
}

func TestHoldFor(t *testing.T) {
	const hold = 200 * time.Microsecond
	for _, tc := range []struct {
		name    string
		hold    time.Duration
		n       int
		waited  bool
		elapsed time.Duration
		want    time.Duration
	}{
		{"off", 0, 5, false, 0, 0},
		{"only acks: nothing to pace", hold, 0, false, 0, 0},
		{"one packet waited for: low rate, read again at once", hold, 1, true, 0, 0},
		{"one packet already queued: load, hold", hold, 1, false, 50 * time.Microsecond, 150 * time.Microsecond},
		{"a full batch: more may be queued, read again at once", hold, 64, false, 0, 0},
		{"two packets: hold the rest of the period", hold, 2, true, 30 * time.Microsecond, 170 * time.Microsecond},
		{"handling took longer than the hold", hold, 10, true, 250 * time.Microsecond, 0},
	} {
		if got := holdFor(tc.hold, tc.n, 64, tc.waited, tc.elapsed); got != tc.want {
			t.Errorf("%s: holdFor(%s, %d, 64, %t, %s) = %s, want %s", tc.name, tc.hold, tc.n, tc.waited, tc.elapsed, got, tc.want)
		}
	}
}
