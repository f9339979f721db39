package perflow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/policy"
	"github.com/ti-mo/conntrack"
)

// benchBase is the first source address of the benchmark's flows: flow i
// comes from benchBase+i (inside 198.18.0.0/15).
var benchBase = binary.BigEndian.Uint32(netip.MustParseAddr("198.18.0.0").AsSlice())

func benchFlow(i int) conntrack.Flow {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], benchBase+uint32(i))
	f := conntrack.NewFlow(flows.ProtoTCP, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured,
		netip.AddrFrom4(a), netip.MustParseAddr(serverAddr), 40000, 443, 300, 0)
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{
		State: uint8(flows.TCPEstablished), OriginalWindowScale: 7, ReplyWindowScale: 7,
		OriginalFlags: 0x0101, ReplyFlags: 0x0101,
	}
	return f
}

func benchIndex(f *flows.Flow) int {
	return int(binary.BigEndian.Uint32(f.Orig.Src.AsSlice()) - benchBase)
}

// watch records when an UPDATE event first shows each benchmark flow's REPLY
// flag, on its own event socket: an observer independent of the engine.
func watch(b *testing.B, fc *flows.Conn, n int) (flaggedAt []time.Time, lost func() uint64, stop func()) {
	sub, err := fc.Subscribe(64 << 20)
	if err != nil {
		b.Fatal(err)
	}
	flaggedAt = make([]time.Time, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]flows.Event, 0, 256)
		for {
			evs, err := sub.Receive(buf)
			now := time.Now()
			for i := range evs {
				f := &evs[i].Flow
				if evs[i].Type != flows.EventUpdate || !f.HasFlags || !f.Liberal().Has(flows.Reply) {
					continue
				}
				if j := benchIndex(f); j >= 0 && j < n && flaggedAt[j].IsZero() {
					flaggedAt[j] = now
				}
			}
			if err != nil && !errors.Is(err, flows.ErrEventsLost) {
				return
			}
		}
	}()
	return flaggedAt, sub.Lost, func() { sub.Close(); <-done }
}

// bareFlagRate measures flags-only updates per second in a plain loop over
// n existing flows: the ceiling the engine is compared with.
func bareFlagRate(b *testing.B, ct *conntrack.Conn, fc *flows.Conn, n int) float64 {
	fs := make([]flows.Flow, n)
	for i := range fs {
		c := benchFlow(100000 + i)
		if err := ct.Create(c); err != nil {
			b.Fatal(err)
		}
		fs[i] = flows.Flow{Proto: flows.ProtoTCP, Orig: flows.Tuple{
			Src: c.TupleOrig.IP.SourceAddress, Dst: c.TupleOrig.IP.DestinationAddress, SrcPort: 40000, DstPort: 443,
		}}
	}
	start := time.Now()
	for i := range fs {
		if err := fc.SetLiberal(&fs[i], flows.Reply, flows.DefaultMarkBit); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkPrivilegedEngine creates b.N ESTABLISHED flows through ctnetlink
// (in batches of up to createBatch per write: the creating loop outruns the
// engine) at a paced NEW rate (0: as fast as possible) in a fresh namespace with the
// engine running, and reports flows flagged per second, NEW-to-flagged
// latency (create call to the flag's UPDATE event, seen by an independent
// listener) p50/p99, the NEW rate achieved, events lost, resyncs, and the
// flag rate as a fraction of a bare loop of flags-only updates on the same
// kernel. Run it with a fixed count, e.g. -benchtime=20000x.
func BenchmarkPrivilegedEngine(b *testing.B) {
	netnstest.RequirePrivileged(b)
	for _, rate := range []int{1000, 5000, 20000, 0} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { benchEngine(b, rate, 0) })
	}
	// The kernel's default receive buffer: a burst overflows it.
	b.Run("rate=0/buf=208KiB", func(b *testing.B) { benchEngine(b, 0, 212992) })
}

func benchEngine(b *testing.B, rate, eventBuf int) {
	ns := netnstest.NewNetNS(b, "bench")
	ct := dialCT(b, ns)
	fc := openFlows(b, ns)
	bare := bareFlagRate(b, ct, fc, 5000)
	ct.Flush()

	lab := perFlow("lab", policy.Match{Sources: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}}, true)
	e, err := New(Config{Policies: []policy.Policy{lab}, Conn: FromFlows(openFlows(b, ns)), EventBuffer: eventBuf})
	if err != nil {
		b.Fatal(err)
	}
	// A warm-up flow made before the engine starts: its start dump, which
	// comes after the subscription, flags it, and no NEW event of it is
	// pending to count it again (see resyncFlow).
	if err := ct.Create(benchFlow(b.N)); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	// Once the warm-up flow is flagged, the engine has subscribed.
	waitFor(b, "the warm-up flag", func() bool { return e.Stats().Policies["lab"].Flagged == 1 })
	flaggedAt, watcherLost, stopWatch := watch(b, fc, b.N)

	cr := newCreator(b, ns)
	createdAt := make([]time.Time, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; {
		// Paced: create, in one batch, the flows due by now.
		n := b.N - i
		if rate > 0 {
			due := int(time.Since(start).Seconds()*float64(rate)) + 1
			if n = min(n, due-i); n <= 0 {
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
				continue
			}
		}
		n = min(n, createBatch)
		now := time.Now()
		for j := i; j < i+n; j++ {
			createdAt[j] = now
		}
		cr.create(b, i, i+n)
		i += n
	}
	created := time.Since(start)
	waitFor(b, "every flag", func() bool { return e.Stats().Policies["lab"].Flagged >= uint64(b.N)+1 })
	b.StopTimer()
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond) // let the watcher catch the last events
	stopWatch()

	var lat []time.Duration
	for i, at := range flaggedAt {
		if !at.IsZero() {
			lat = append(lat, at.Sub(createdAt[i]))
		}
	}
	slices.Sort(lat)
	s := e.Stats()
	flagRate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(float64(b.N)/created.Seconds(), "new/s")
	b.ReportMetric(flagRate, "flags/s")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(s.EventsLost), "lost")
	b.ReportMetric(float64(s.Resyncs), "resyncs")
	b.ReportMetric(float64(b.N-len(lat)), "unobserved")
	b.ReportMetric(float64(watcherLost()), "watcher-lost")
	b.ReportMetric(bare, "bare-flags/s")
	b.ReportMetric(flagRate/bare, "x-bare")
}
