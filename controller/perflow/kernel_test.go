package perflow

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/policy"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// natWeb selects source-NATed flows to port 443.
func natWeb() policy.Policy {
	yes := true
	return perFlow("nat-web", policy.Match{
		Family:           policy.FamilyIPv4,
		Sources:          []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
		NATOnly:          &yes,
	}, true)
}

func openFlows(t testing.TB, ns *netnstest.NS) *flows.Conn {
	t.Helper()
	c, err := flows.Open(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialCT(t testing.TB, ns *netnstest.NS) *conntrack.Conn {
	t.Helper()
	ct, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Close() })
	return ct
}

// ctGet reads the client's flow from sport to the server's port through
// ti-mo/conntrack, independently of package flows.
func ctGet(t *testing.T, ct *conntrack.Conn, sport, dport uint16) *conntrack.ProtoInfoTCP {
	t.Helper()
	f := conntrack.NewFlow(flows.ProtoTCP, 0, netip.MustParseAddr(clientAddr), netip.MustParseAddr(serverAddr), sport, dport, 0, 0)
	got, err := ct.Get(f)
	if err != nil {
		t.Fatalf("conntrack get %d->%d: %v", sport, dport, err)
	}
	if got.ProtoInfo.TCP == nil {
		t.Fatalf("flow %d->%d has no TCP protoinfo", sport, dport)
	}
	got.ProtoInfo.TCP.ReplyFlags &^= 0xff // keep the flags byte, drop the mask byte
	got.ProtoInfo.TCP.OriginalFlags &^= 0xff
	return got.ProtoInfo.TCP
}

func replyLiberal(pi *conntrack.ProtoInfoTCP) bool { return pi.ReplyFlags>>8&flows.BeLiberal != 0 }

func startEngine(t *testing.T, cfg Config) (*Engine, func()) {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return e, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func port(c interface{ LocalAddr() net.Addr }) uint16 {
	return uint16(c.LocalAddr().(*net.TCPAddr).Port)
}

func TestPrivilegedFlagsRealFlows(t *testing.T) {
	tp := newTopology(t)
	tp.listen(t, "443")
	tp.listen(t, "80")
	ct := dialCT(t, tp.nat)

	existing := tp.dial(t, "443")
	existingHTTP := tp.dial(t, "80")
	before := ctGet(t, ct, port(existing), 443)
	if before.State != uint8(flows.TCPEstablished) || replyLiberal(before) {
		t.Fatalf("existing flow before the engine: %+v", before)
	}

	e, stop := startEngine(t, Config{Policies: []policy.Policy{natWeb()}, Conn: FromFlows(openFlows(t, tp.nat))})
	defer stop()
	waitFor(t, "the existing flow's flag", func() bool { return replyLiberal(ctGet(t, ct, port(existing), 443)) })
	after := ctGet(t, ct, port(existing), 443)
	want := *before
	want.ReplyFlags |= flows.BeLiberal << 8
	if *after != want {
		t.Fatalf("flagging changed more than the REPLY flag:\n before %+v\n after  %+v", before, after)
	}

	http := tp.dial(t, "80")
	start := time.Now()
	fresh := tp.dial(t, "443")
	waitFor(t, "the new flow's flag", func() bool { return replyLiberal(ctGet(t, ct, port(fresh), 443)) })
	t.Logf("new flow flagged within %v of its connect", time.Since(start))
	for _, c := range []*net.TCPConn{existingHTTP, http} {
		if pi := ctGet(t, ct, port(c), 80); pi.ReplyFlags>>8&flows.BeLiberal != 0 || pi.OriginalFlags>>8&flows.BeLiberal != 0 {
			t.Fatalf("non-matching flow from port %d flagged: %+v", port(c), pi)
		}
	}
	// Cross-check with conntrack-tools: the ownership mark is on exactly the
	// two flagged flows.
	out := string(tp.nat.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", fmt.Sprint(flows.DefaultMarkBit)))
	if !strings.Contains(out, fmt.Sprintf("sport=%d ", port(existing))) || !strings.Contains(out, fmt.Sprintf("sport=%d ", port(fresh))) ||
		strings.Count(out, "dport=443 ") != 2 {
		t.Fatalf("conntrack -L --mark %d:\n%s", flows.DefaultMarkBit, out)
	}

	// The server's kernel resets the fresh connection (SO_LINGER 0 on the
	// client): ESTABLISHED -> CLOSE.
	fresh.SetLinger(0)
	fresh.Close()
	waitFor(t, "the reset flow's end", func() bool { return e.Stats().Policies["nat-web"].EndedByReset == 1 })
	waitFor(t, "both confirmations", func() bool { return e.Stats().Policies["nat-web"].Confirmed == 2 })
	s := e.Stats().Policies["nat-web"]
	if s.Matched != 2 || s.Flagged != 2 || s.Failed != 0 || s.Ended != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// createFlow creates an ESTABLISHED TCP flow from 198.18.x.y:sport to the
// server through ctnetlink, with window scaling on both sides.
func createFlow(t testing.TB, ct *conntrack.Conn, i int, sport uint16) conntrack.Flow {
	t.Helper()
	src := netip.AddrFrom4([4]byte{198, 18, byte(2 + i>>8), byte(i)})
	f := conntrack.NewFlow(flows.ProtoTCP, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured,
		src, netip.MustParseAddr(serverAddr), sport, 443, 300, 0)
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{
		State: uint8(flows.TCPEstablished), OriginalWindowScale: 7, ReplyWindowScale: 7,
		OriginalFlags: 0x0101, ReplyFlags: 0x0101, // {WINDOW_SCALE, mask}
	}
	if err := ct.Create(f); err != nil {
		t.Fatalf("create flow %d: %v", i, err)
	}
	return f
}

// flagged counts the dumped flows carrying the REPLY flag and the mark bit.
func flagged(t testing.TB, c *flows.Conn) int {
	t.Helper()
	fs, err := c.Dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fs {
		if f.Liberal().Has(flows.Reply) && f.Mark&uint32(flows.DefaultMarkBit) != 0 {
			n++
		}
	}
	return n
}

// TestPrivilegedResyncAfterLoss overflows a tiny event buffer with a burst of
// flows: the engine sees ENOBUFS and its resync flags every flow.
func TestPrivilegedResyncAfterLoss(t *testing.T) {
	ns := netnstest.NewNetNS(t, "loss")
	ct := dialCT(t, ns)
	fc := openFlows(t, ns)
	lab := perFlow("lab", policy.Match{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}}, true)
	e, stop := startEngine(t, Config{Policies: []policy.Policy{lab}, Conn: FromFlows(fc), EventBuffer: 4096})
	defer stop()
	// Once a first flow is flagged, the engine has subscribed.
	createFlow(t, ct, 0, 40000)
	waitFor(t, "the engine's start", func() bool { return flagged(t, fc) == 1 })
	const burst = 3000
	for i := 1; i < burst; i++ {
		createFlow(t, ct, i, 40000)
	}
	waitFor(t, "every flow flagged", func() bool {
		time.Sleep(20 * time.Millisecond) // a dump of the whole table per poll
		return flagged(t, fc) == burst
	})
	s := e.Stats()
	if s.EventsLost == 0 || s.Resyncs == 0 {
		t.Fatalf("no loss seen with a %d-byte buffer and %d flows: %+v", 4096, burst, s)
	}
	t.Logf("events lost %d times, %d resyncs, %+v", s.EventsLost, s.Resyncs, s.Policies["lab"])
}

// TestPrivilegedRollbackKeepsOthersFlags: after a restart (a new engine),
// Rollback clears the flag only on the flow ctguard flagged; a flow flagged
// without the mark bit and one flagged by conntrack-tools keep theirs.
func TestPrivilegedRollbackKeepsOthersFlags(t *testing.T) {
	ns := netnstest.NewNetNS(t, "rollback")
	ct := dialCT(t, ns)
	fc := openFlows(t, ns)
	ours := createFlow(t, ct, 1, 40000)
	other := createFlow(t, ct, 2, 40000)
	tools := createFlow(t, ct, 3, 40000)
	otherF := flowOf(t, fc, other)
	if err := fc.SetLiberal(&otherF, flows.Both, 0); err != nil {
		t.Fatal(err)
	}
	// conntrack-tools 1.4.7 sets BE_LIBERAL on both directions of the flows it
	// updates (see TRAPS.md).
	ns.MustRun(t, "conntrack", "-U", "-f", "ipv4", "-p", "tcp", "-s", "198.18.2.3", "--sport", "40000", "-m", "1")
	if f := flowOf(t, fc, tools); f.Liberal() != flows.Both {
		t.Fatalf("conntrack -U did not flag the flow: %+v", f)
	}

	lab := perFlow("lab", policy.Match{}, true)
	e, stop := startEngine(t, Config{Policies: []policy.Policy{lab}, Conn: FromFlows(fc)})
	waitFor(t, "ctguard's flag", func() bool { return e.Stats().Policies["lab"].Confirmed == 1 })
	stop()
	if s := e.Stats().Policies["lab"]; s.AlreadyLiberal != 2 || s.Flagged != 1 {
		t.Fatalf("stats %+v, want 2 already liberal, 1 flagged", s)
	}

	restarted, err := New(Config{Policies: []policy.Policy{lab}, Conn: FromFlows(openFlows(t, ns))})
	if err != nil {
		t.Fatal(err)
	}
	n, err := restarted.Rollback(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Rollback = %d, %v; want 1", n, err)
	}
	for _, tt := range []struct {
		name string
		f    conntrack.Flow
		want flows.Directions
	}{{"ctguard's", ours, 0}, {"unmarked", other, flows.Both}, {"conntrack-tools'", tools, flows.Both}} {
		got := flowOf(t, fc, tt.f)
		if got.Liberal() != tt.want || got.Mark&uint32(flows.DefaultMarkBit) != 0 {
			t.Errorf("%s flow after rollback: flags %v mark %#x, want flags %v and no mark bit", tt.name, got.Liberal(), got.Mark, tt.want)
		}
	}
}

// flowOf reads a flow back by its original tuple.
func flowOf(t testing.TB, fc *flows.Conn, f conntrack.Flow) flows.Flow {
	t.Helper()
	got, err := fc.Get(&flows.Flow{Proto: flows.ProtoTCP, Orig: flows.Tuple{
		Src: f.TupleOrig.IP.SourceAddress, Dst: f.TupleOrig.IP.DestinationAddress,
		SrcPort: f.TupleOrig.Proto.SourcePort, DstPort: f.TupleOrig.Proto.DestinationPort,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
