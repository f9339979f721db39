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
	n := 0
	err := c.DumpFunc(context.Background(), func(f *flows.Flow) error {
		if f.Liberal().Has(flows.Reply) && f.Mark&uint32(flows.DefaultMarkBit) != 0 {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
	if err := fc.SetLiberal(flowOf(t, fc, other), flows.Both, 0); err != nil {
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

	// A restarted ctguard: a new connection, nothing in memory.
	n, err := Rollback(context.Background(), FromFlows(openFlows(t, ns)), 0, flows.Reply)
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
func flowOf(t testing.TB, fc *flows.Conn, f conntrack.Flow) *flows.Flow {
	t.Helper()
	got, err := fc.Get(&flows.Flow{Proto: flows.ProtoTCP, Orig: flows.Tuple{
		Src: f.TupleOrig.IP.SourceAddress, Dst: f.TupleOrig.IP.DestinationAddress,
		SrcPort: f.TupleOrig.Proto.SourcePort, DstPort: f.TupleOrig.Proto.DestinationPort,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &got
}

// tryGet reads the client's flow from sport to the server's port 443, or
// nil when there is none.
func tryGet(ct *conntrack.Conn, sport uint16) *conntrack.ProtoInfoTCP {
	f := conntrack.NewFlow(flows.ProtoTCP, 0, netip.MustParseAddr(clientAddr), netip.MustParseAddr(serverAddr), sport, 443, 0, 0)
	got, err := ct.Get(f)
	if err != nil || got.ProtoInfo.TCP == nil {
		return nil
	}
	return got.ProtoInfo.TCP
}

func bothLiberal(pi *conntrack.ProtoInfoTCP) bool {
	return pi != nil && replyLiberal(pi) && pi.OriginalFlags>>8&flows.BeLiberal != 0
}

// pickUpMidStream makes nat's kernel pick c's connection up mid-stream: its
// conntrack entry is flushed and the next segment creates a new one, which
// the kernel itself makes liberal in both directions.
func pickUpMidStream(t *testing.T, tp *topology, ct *conntrack.Conn, c *net.TCPConn) {
	t.Helper()
	tp.nat.MustRun(t, "conntrack", "-D", "-p", "tcp", "--sport", fmt.Sprint(port(c)))
	if _, err := c.Write([]byte("mid-stream")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the mid-stream pickup", func() bool { return bothLiberal(tryGet(ct, port(c))) })
}

// TestPrivilegedKernelLiberalFlowsAreNotOwned: flows the kernel made liberal
// itself (mid-stream pickups, before the engine started and while it runs)
// are neither flagged nor marked, even by a policy wanting both directions,
// and a rollback clearing both directions leaves them liberal. A flow on
// which someone else set only ORIGINAL gets REPLY from ctguard, and the
// rollback clears REPLY only.
func TestPrivilegedKernelLiberalFlowsAreNotOwned(t *testing.T) {
	tp := newTopology(t)
	tp.listen(t, "443")
	ct := dialCT(t, tp.nat)
	fc := openFlows(t, tp.nat)

	before := tp.dial(t, "443")
	pickUpMidStream(t, tp, ct, before)
	half := tp.dial(t, "443")
	halfF := flowOf(t, fc, conntrack.NewFlow(flows.ProtoTCP, 0, netip.MustParseAddr(clientAddr), netip.MustParseAddr(serverAddr), port(half), 443, 0, 0))
	if err := fc.SetLiberal(halfF, flows.Original, 0); err != nil {
		t.Fatal(err)
	}

	all := withDirs(perFlow("all", policy.Match{}, true), policy.DirectionReply)
	e, stop := startEngine(t, Config{Policies: []policy.Policy{all}, Conn: FromFlows(fc)})
	waitFor(t, "the half-liberal flow's REPLY flag", func() bool { return bothLiberal(tryGet(ct, port(half))) })
	during := tp.dial(t, "443")
	waitFor(t, "the new flow's flag", func() bool { return replyLiberal(ctGet(t, ct, port(during), 443)) })
	pickUpMidStream(t, tp, ct, during) // a new entry, liberal from the kernel
	waitFor(t, "the pickup's NEW event", func() bool { return e.Stats().Policies["all"].AlreadyLiberal == 2 })
	stop()

	marked := string(tp.nat.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", fmt.Sprint(flows.DefaultMarkBit)))
	if strings.Count(marked, "dport=443 ") != 1 || !strings.Contains(marked, fmt.Sprintf("sport=%d ", port(half))) {
		t.Fatalf("ctguard marked more than the half-liberal flow:\n%s", marked)
	}
	// The worst case for the kernel's flags: clearing both directions.
	n, err := Rollback(context.Background(), FromFlows(fc), 0, flows.Reply)
	if err != nil || n != 1 {
		t.Fatalf("Rollback = %d, %v; want 1", n, err)
	}
	for _, c := range []*net.TCPConn{before, during} {
		if !bothLiberal(tryGet(ct, port(c))) {
			t.Fatalf("the kernel's liberal flow from port %d lost its flag", port(c))
		}
	}
	if pi := tryGet(ct, port(half)); replyLiberal(pi) || pi.OriginalFlags>>8&flows.BeLiberal == 0 {
		t.Fatalf("half-liberal flow after rollback: %+v, want ORIGINAL only", pi)
	}
	if out := string(tp.nat.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", fmt.Sprint(flows.DefaultMarkBit))); strings.Contains(out, "dport=443") {
		t.Fatalf("marks left after rollback:\n%s", out)
	}
}

// TestPrivilegedSwapAddsAndClearsDirections swaps a running engine from
// [reply] to [original, reply] (ORIGINAL added) and then to no policy
// (ctguard's flags and marks cleared).
func TestPrivilegedSwapAddsAndClearsDirections(t *testing.T) {
	ns := netnstest.NewNetNS(t, "swap")
	ct := dialCT(t, ns)
	fc := openFlows(t, ns)
	f := createFlow(t, ct, 1, 40000)
	lab := perFlow("lab", policy.Match{}, true)
	e, stop := startEngine(t, Config{Policies: []policy.Policy{lab}, Conn: FromFlows(fc)})
	defer stop()
	waitFor(t, "the REPLY flag", func() bool { return flowOf(t, fc, f).Liberal() == flows.Reply })
	if err := e.SetPolicies([]policy.Policy{withDirs(lab, policy.DirectionOriginal, policy.DirectionReply)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ORIGINAL flag", func() bool { return flowOf(t, fc, f).Liberal() == flows.Both })
	if err := e.SetPolicies(nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flags cleared", func() bool {
		got := flowOf(t, fc, f)
		return got.Liberal() == 0 && got.Mark&uint32(flows.DefaultMarkBit) == 0
	})
	if out := string(ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "-o", "extended")); strings.Contains(out, "mark=") && !strings.Contains(out, "mark=0 ") {
		t.Fatalf("mark left after the swap:\n%s", out)
	}
}

// reSubscriber records the event sources the engine opens.
type reSubscriber struct {
	Conn
	srcs chan EventSource
}

func (r reSubscriber) Subscribe(n int) (EventSource, error) {
	s, err := r.Conn.Subscribe(n)
	if err == nil {
		r.srcs <- s
	}
	return s, err
}

// TestPrivilegedResubscribesWhenSocketFails closes the engine's event socket
// underneath it: the engine subscribes again, resyncs, and flags new flows
// from events again.
func TestPrivilegedResubscribesWhenSocketFails(t *testing.T) {
	ns := netnstest.NewNetNS(t, "resub")
	ct := dialCT(t, ns)
	fc := openFlows(t, ns)
	conn := reSubscriber{Conn: FromFlows(fc), srcs: make(chan EventSource, 4)}
	lab := perFlow("lab", policy.Match{}, true)
	ready := make(chan struct{})
	e, stop := startEngine(t, Config{Policies: []policy.Policy{lab}, Conn: conn, OnReady: func() { close(ready) }})
	defer stop()
	<-ready
	(<-conn.srcs).Close()
	select {
	case <-conn.srcs:
	case <-time.After(10 * time.Second):
		t.Fatal("no new subscription after the event socket failed")
	}
	waitFor(t, "the resync", func() bool { return e.Stats().Resyncs == 1 })
	f := createFlow(t, ct, 1, 40000)
	waitFor(t, "the new flow's flag", func() bool { return flowOf(t, fc, f).Liberal() == flows.Reply })
	if s := e.Stats(); s.EventsLost != 1 || s.Resyncs != 1 {
		t.Fatalf("stats %+v, want one loss and one resync: the flag came from an event", s)
	}
}

// TestPrivilegedReusedTupleAfterStart: a connection the start dump flagged
// ends without any event (it was created while nobody listened); a new
// connection from the same client port must be flagged from its NEW event.
func TestPrivilegedReusedTupleAfterStart(t *testing.T) {
	tp := newTopology(t)
	tp.listen(t, "443")
	ct := dialCT(t, tp.nat)
	const sport = 41000
	dial := func() *net.TCPConn {
		var c net.Conn
		var err error
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientAddr), Port: sport}}
		tp.client.Do(t, func() { c, err = d.Dial("tcp4", net.JoinHostPort(serverAddr, "443")) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.TCPConn)
	}
	first := dial()
	e, stop := startEngine(t, Config{Policies: []policy.Policy{natWeb()}, Conn: FromFlows(openFlows(t, tp.nat))})
	defer stop()
	waitFor(t, "the start dump's flag", func() bool { return replyLiberal(ctGet(t, ct, sport, 443)) })
	first.SetLinger(0)
	first.Close()
	tp.nat.MustRun(t, "conntrack", "-D", "-p", "tcp", "--sport", fmt.Sprint(sport))
	dial()
	waitFor(t, "the reused tuple's flag", func() bool { return replyLiberal(ctGet(t, ct, sport, 443)) })
	// The new entry often reuses the old one's memory, hence its CTA_ID:
	// then its UPDATE at ESTABLISHED re-flags it (see handle), counted as
	// a reflag of the old flow.
	s := e.Stats().Policies["nat-web"]
	if s.Flagged != 2 {
		t.Fatalf("stats %+v, want both connections flagged", s)
	}
	t.Logf("stats %+v", s)
}
