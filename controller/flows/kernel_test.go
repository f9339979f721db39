package flows

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ti-mo/conntrack"
)

// Conntrack TCP protoinfo flag bits other than BE_LIBERAL.
const (
	flagWindowScale = 0x01
	flagSackPerm    = 0x04
)

// testFlow is an ESTABLISHED TCP flow from 198.18.1.2:sport to
// 198.19.0.10:443, source-NATed to 198.18.0.1 in the reply tuple.
func testFlow(sport uint16, mark uint32) conntrack.Flow {
	f := conntrack.NewFlow(ProtoTCP, conntrack.StatusAssured|conntrack.StatusSeenReply|conntrack.StatusConfirmed,
		netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.19.0.10"), sport, 443, 120, mark)
	f.TupleReply.IP.DestinationAddress = netip.MustParseAddr("198.18.0.1")
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{
		State:               uint8(TCPEstablished),
		OriginalWindowScale: 7,
		ReplyWindowScale:    9,
		// {flags, mask} pairs.
		OriginalFlags: (flagWindowScale|flagSackPerm)<<8 | 0xff,
		ReplyFlags:    (flagWindowScale|flagSackPerm)<<8 | 0xff,
	}
	return f
}

func dialCT(t *testing.T, ns *netnstest.NS) *conntrack.Conn {
	t.Helper()
	ct, err := conntrack.Dial(nlConfig(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Close() })
	return ct
}

func openConn(t *testing.T, ns *netnstest.NS) *Conn {
	t.Helper()
	c, err := Open(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t *testing.T, ct *conntrack.Conn, f conntrack.Flow) Flow {
	t.Helper()
	got, err := ct.Get(f)
	if err != nil {
		t.Fatalf("get %v: %v", f.TupleOrig, err)
	}
	return fromConntrack(&got)
}

func TestPrivilegedSetLiberalFlagsOnly(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	const otherMark = 0x1
	tf := testFlow(40000, otherMark)
	if err := ct.Create(tf); err != nil {
		t.Fatalf("create: %v", err)
	}
	before := get(t, ct, tf)
	if !before.HasFlags || before.Liberal() != 0 || before.State != TCPEstablished {
		t.Fatalf("created flow: %+v", before)
	}

	if err := c.SetLiberal(&before, Reply, DefaultMarkBit); err != nil {
		t.Fatalf("SetLiberal: %v", err)
	}
	after := get(t, ct, tf)
	want := before
	want.ReplyFlags |= BeLiberal
	want.Mark |= uint32(DefaultMarkBit)
	if after != want {
		t.Fatalf("after SetLiberal:\n got  %+v\n want %+v", after, want)
	}
	if own, err := c.Get(&before); err != nil || own != after {
		t.Fatalf("Get = %+v, %v; want %+v", own, err, after)
	}
	// Cross-check the mark with conntrack-tools.
	out := string(ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "--sport", "40000", "-o", "extended"))
	if !strings.Contains(out, fmt.Sprintf("mark=%d", otherMark|uint32(DefaultMarkBit))) {
		t.Fatalf("conntrack -L does not show the mark bit:\n%s", out)
	}

	if err := c.ClearLiberal(&after, Reply, DefaultMarkBit); err != nil {
		t.Fatalf("ClearLiberal: %v", err)
	}
	if cleared := get(t, ct, tf); cleared != before {
		t.Fatalf("after ClearLiberal:\n got  %+v\n want %+v", cleared, before)
	}

	gone := before
	gone.Orig.SrcPort = 40001
	if err := c.SetLiberal(&gone, Reply, DefaultMarkBit); !errors.Is(err, ErrFlowGone) {
		t.Fatalf("SetLiberal on a missing flow: %v, want ErrFlowGone", err)
	}
	if _, err := c.Get(&gone); !errors.Is(err, ErrFlowGone) {
		t.Fatalf("Get of a missing flow: %v, want ErrFlowGone", err)
	}
}

func TestPrivilegedDump(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	for _, p := range []uint16{40000, 40001} {
		if err := ct.Create(testFlow(p, 0)); err != nil {
			t.Fatal(err)
		}
	}
	udp := conntrack.NewFlow(17, 0, netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.19.0.10"), 5000, 53, 60, 0)
	if err := ct.Create(udp); err != nil {
		t.Fatal(err)
	}
	six := conntrack.NewFlow(ProtoTCP, 0, netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::10"), 40002, 443, 60, 0)
	six.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: uint8(TCPEstablished)}
	if err := ct.Create(six); err != nil {
		t.Fatal(err)
	}
	got := dumpAll(t, c)
	var names []string
	for _, f := range got {
		names = append(names, f.String())
	}
	if len(got) != 3 {
		t.Fatalf("dump: %v, want the 3 TCP flows", names)
	}
	if !strings.Contains(strings.Join(names, ","), "[2001:db8::2]:40002 -> [2001:db8::10]:443") {
		t.Fatalf("dump misses the IPv6 flow: %v", names)
	}
}

// dumpAll collects a whole dump.
func dumpAll(t *testing.T, c *Conn) []Flow {
	t.Helper()
	var out []Flow
	if err := c.DumpFunc(context.Background(), func(f *Flow) error {
		out = append(out, *f)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPrivilegedDumpFuncStreams dumps a table spanning many datagrams while
// the callback flags every flow through the same Conn (the dump has its own
// socket: no deadlock), then checks a callback error and a cancelled
// context stop a dump.
func TestPrivilegedDumpFuncStreams(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	const n = 2000
	for p := range uint16(n) {
		if err := ct.Create(testFlow(20000+p, 0)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]bool{}
	err := c.DumpFunc(context.Background(), func(f *Flow) error {
		seen[f.Orig.SrcPort] = true
		return c.SetLiberal(f, Reply, DefaultMarkBit)
	})
	if err != nil || len(seen) != n {
		t.Fatalf("DumpFunc saw %d of %d flows: %v", len(seen), n, err)
	}
	flagged := 0
	for _, f := range dumpAll(t, c) {
		if f.Liberal() == Reply && f.Mark == uint32(DefaultMarkBit) {
			flagged++
		}
	}
	if flagged != n {
		t.Fatalf("%d of %d flows flagged during the dump", flagged, n)
	}
	// Cross-check the count with conntrack-tools.
	out := string(ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", fmt.Sprint(DefaultMarkBit)))
	if got := strings.Count(out, "dport=443 "); got != n {
		t.Fatalf("conntrack -L --mark lists %d flows, want %d", got, n)
	}

	stopErr := errors.New("stop")
	calls := 0
	if err := c.DumpFunc(context.Background(), func(*Flow) error { calls++; return stopErr }); err != stopErr || calls != 1 {
		t.Fatalf("callback error: DumpFunc = %v after %d calls, want the callback's error after 1", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = c.DumpFunc(ctx, func(*Flow) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls >= n {
		t.Fatalf("cancelled dump: %v after %d of %d flows, want context.Canceled early", err, calls, n)
	}
	// The Conn is still usable after interrupted dumps.
	if got := len(dumpAll(t, c)); got != n {
		t.Fatalf("dump after interrupted dumps: %d flows, want %d", got, n)
	}
}

// TestPrivilegedClearMarkOnly clears the ownership bit of a flow without
// touching its flags.
func TestPrivilegedClearMarkOnly(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	tf := testFlow(40000, 0x1)
	if err := ct.Create(tf); err != nil {
		t.Fatal(err)
	}
	f := get(t, ct, tf)
	if err := c.SetLiberal(&f, Both, DefaultMarkBit); err != nil {
		t.Fatal(err)
	}
	flagged := get(t, ct, tf)
	if err := c.ClearLiberal(&flagged, 0, DefaultMarkBit); err != nil {
		t.Fatal(err)
	}
	want := flagged
	want.Mark = 0x1
	if got := get(t, ct, tf); got != want {
		t.Fatalf("after a mark-only clear:\n got  %+v\n want %+v", got, want)
	}
}

func TestPrivilegedEvents(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	sub, err := c.Subscribe(0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if n, err := sub.ReadBuffer(); err != nil || n < DefaultEventBuffer {
		t.Fatalf("ReadBuffer = %d, %v; want >= %d", n, err, DefaultEventBuffer)
	}
	tf := testFlow(40000, 0)
	if err := ct.Create(tf); err != nil {
		t.Fatal(err)
	}
	ev := receiveOne(t, sub)
	if ev.Type != EventNew || ev.Flow.Orig.SrcPort != 40000 {
		t.Fatalf("first event %v %+v, want NEW of the flow", ev.Type, ev.Flow)
	}
	if err := c.SetLiberal(&ev.Flow, Reply, DefaultMarkBit); err != nil {
		t.Fatal(err)
	}
	ev = receiveOne(t, sub)
	if ev.Type != EventUpdate || !ev.Flow.HasFlags || ev.Flow.Liberal() != Reply || ev.Flow.Mark != uint32(DefaultMarkBit) {
		t.Fatalf("event after SetLiberal %v %+v, want UPDATE with the REPLY flag and the mark", ev.Type, ev.Flow)
	}
	if err := ct.Delete(tf); err != nil {
		t.Fatal(err)
	}
	ev = receiveOne(t, sub)
	if ev.Type != EventDestroy || ev.Flow.HasFlags {
		t.Fatalf("event after delete %v %+v, want DESTROY without flags", ev.Type, ev.Flow)
	}
	sub.Close()
	if _, err := sub.Receive(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Receive after Close: %v, want ErrClosed", err)
	}
}

func receiveOne(t *testing.T, sub *Subscription) Event {
	t.Helper()
	evs, err := sub.Receive(make([]Event, 0, 1))
	if err != nil || len(evs) != 1 {
		t.Fatalf("Receive: %v, %v", evs, err)
	}
	return evs[0]
}

// TestPrivilegedEventLoss overflows a tiny receive buffer: Receive reports
// ErrEventsLost once the queue is drained, counts it, and the socket keeps
// delivering events and reporting later overflows.
func TestPrivilegedEventLoss(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	sub, err := c.Subscribe(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for p := range uint16(500) {
		if err := ct.Create(testFlow(40000+p, 0)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]Event, 0, 64)
	var lost bool
	for !lost {
		_, err := sub.Receive(buf)
		switch {
		case errors.Is(err, ErrEventsLost):
			lost = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if sub.Lost() != 1 {
		t.Fatalf("Lost() = %d, want 1", sub.Lost())
	}
	// ErrEventsLost came with the queue drained: the socket must still
	// deliver new events, and report a new overflow again.
	if err := ct.Create(testFlow(50000, 0)); err != nil {
		t.Fatal(err)
	}
	if ev := receiveOne(t, sub); ev.Flow.Orig.SrcPort != 50000 {
		t.Fatalf("event after the loss: %+v, want the new flow's NEW", ev)
	}
	for p := range uint16(500) {
		if err := ct.Create(testFlow(41000+p, 0)); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if _, err := sub.Receive(buf); errors.Is(err, ErrEventsLost) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if sub.Lost() != 2 {
		t.Fatalf("Lost() = %d after a second overflow, want 2", sub.Lost())
	}
}

// TestPrivilegedNetlinkPin fails instead of hanging when
// github.com/mdlayher/netlink is no longer v1.9.0: with v1.10.0+
// ti-mo/conntrack's Get and StatsGlobal never return.
func TestPrivilegedNetlinkPin(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	tf := testFlow(40000, 0)
	if err := ct.Create(tf); err != nil {
		t.Fatal(err)
	}
	c := openConn(t, ns)
	done := make(chan error, 1)
	go func() {
		if _, err := ct.StatsGlobal(); err != nil {
			done <- fmt.Errorf("StatsGlobal: %w", err)
			return
		}
		if _, err := ct.Get(tf); err != nil {
			done <- fmt.Errorf("conntrack Get: %w", err)
			return
		}
		f := fromConntrack(&tf)
		_, err := c.Get(&f) // the same request shape as conntrack's Get
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("conntrack StatsGlobal/Get hang: github.com/mdlayher/netlink must stay pinned to v1.9.0")
	}
	if _, err := c.Stats(); err != nil {
		t.Fatal(err)
	}
}

// TestPrivilegedSetLiberalFamiliesAndZones flags an IPv6 flow and flows in a
// non-default zone next to a same-tuple flow in zone 0, which must stay
// untouched.
func TestPrivilegedSetLiberalFamiliesAndZones(t *testing.T) {
	ns := netnstest.NewNetNS(t, "flows")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	v6 := conntrack.NewFlow(ProtoTCP, conntrack.StatusConfirmed, netip.MustParseAddr("2001:db8::2"),
		netip.MustParseAddr("2001:db8::10"), 40000, 443, 120, 0)
	v6.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: uint8(TCPEstablished)}
	zoned := testFlow(40000, 0)
	zoned.Zone = 7
	plain := testFlow(40000, 0)
	for _, f := range []conntrack.Flow{v6, zoned, plain} {
		if err := ct.Create(f); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		f    conntrack.Flow
	}{{"ipv6", v6}, {"zone 7", zoned}} {
		t.Run(tt.name, func(t *testing.T) {
			f := get(t, ct, tt.f)
			if err := c.SetLiberal(&f, Both, DefaultMarkBit); err != nil {
				t.Fatal(err)
			}
			if got := get(t, ct, tt.f); got.Liberal() != Both || got.Zone != tt.f.Zone {
				t.Fatalf("after SetLiberal: %+v", got)
			}
		})
	}
	if got := get(t, ct, plain); got.Liberal() != 0 || got.Mark != 0 {
		t.Fatalf("the zone-0 twin of the zone-7 flow changed: %+v", got)
	}
}

// BenchmarkPrivilegedDumpFunc streams a 20000-flow table. B/op counts
// everything allocated (mostly ti-mo/conntrack's decoding garbage); what
// stays live at once is one datagram's flows, not the table.
func BenchmarkPrivilegedDumpFunc(b *testing.B) {
	ns := netnstest.NewNetNS(b, "flows")
	ct, err := conntrack.Dial(nlConfig(ns.Fd()))
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	c, err := Open(ns.Fd())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const n = 20000
	for i := range n {
		if err := ct.Create(testFlow(uint16(10000+i), 0)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		seen := 0
		if err := c.DumpFunc(context.Background(), func(*Flow) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("dump saw %d of %d flows: %v", seen, n, err)
		}
	}
}

func TestPrivilegedGetReply(t *testing.T) {
	ns := netnstest.NewNetNS(t, "d14gr")
	ct := dialCT(t, ns)
	c := openConn(t, ns)
	tf := testFlow(40002, 0)
	if err := ct.Create(tf); err != nil {
		t.Fatalf("create: %v", err)
	}
	want := get(t, ct, tf)
	// The reply tuple: server -> the box's address, the original source port.
	got, err := c.GetReply(Tuple{Src: netip.MustParseAddr("198.19.0.10"), Dst: netip.MustParseAddr("198.18.0.1"), SrcPort: 443, DstPort: 40002})
	if err != nil || got != want {
		t.Fatalf("GetReply = %+v, %v; want %+v", got, err, want)
	}
	// The kernel finds a tuple in either direction.
	if got, err := c.GetReply(want.Orig); err != nil || got != want {
		t.Fatalf("GetReply of the original tuple = %+v, %v", got, err)
	}
	if _, err := c.GetReply(Tuple{Src: want.Orig.Src, Dst: want.Orig.Dst, SrcPort: 1, DstPort: 443}); !errors.Is(err, ErrFlowGone) {
		t.Fatalf("GetReply of an unknown tuple: %v, want ErrFlowGone", err)
	}
}
