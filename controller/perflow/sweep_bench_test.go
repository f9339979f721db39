package perflow

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/policy"
	"github.com/ti-mo/conntrack"
)

// sweepFlow is ESTABLISHED flow i of a sweep benchmark: 60,000 source
// ports per client address from 198.18.0.0 on.
func sweepFlow(i int) conntrack.Flow {
	a := netip.AddrFrom4([4]byte{198, 18, byte(i / 60000 >> 8), byte(i / 60000)})
	f := conntrack.NewFlow(flows.ProtoTCP, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured,
		a, netip.MustParseAddr(serverAddr), uint16(1024+i%60000), 443, 3600, 0)
	f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{
		State: uint8(flows.TCPEstablished), OriginalWindowScale: 7, ReplyWindowScale: 7,
		OriginalFlags: 0x0101, ReplyFlags: 0x0101,
	}
	return f
}

// sweepSizes are the table sizes BenchmarkPrivilegedSweep runs:
// CTGUARD_BENCH_FLOWS (comma-separated) or 100,000 and 1,000,000.
func sweepSizes() []int {
	v := os.Getenv("CTGUARD_BENCH_FLOWS")
	if v == "" {
		return []int{100000, 1000000}
	}
	var out []int
	for _, s := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// raiseConntrackMax raises the global nf_conntrack_max (child namespaces
// cannot set their own on this kernel) to at least n, restoring it after.
func raiseConntrackMax(b *testing.B, n int) {
	const path = "/proc/sys/net/netfilter/nf_conntrack_max"
	old, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	cur, _ := strconv.Atoi(strings.TrimSpace(string(old)))
	if cur >= n {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.WriteFile(path, old, 0o644) })
}

// fillTable creates n sweep flows, on two sockets in parallel.
func fillTable(b *testing.B, ns *netnstest.NS, n int) {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for w := range 2 {
		ct := dialCT(b, ns)
		wg.Go(func() {
			for i := w; i < n; i += 2 {
				if err := ct.Create(sweepFlow(i)); err != nil {
					errs <- fmt.Errorf("create flow %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// dumpSeconds times `conntrack -L > /dev/null` in the namespace: the anchor.
func dumpSeconds(b *testing.B, ns *netnstest.NS) float64 {
	start := time.Now()
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "sh", "-c", "conntrack -L >/dev/null 2>&1").CombinedOutput(); err != nil {
		b.Fatalf("conntrack -L: %v %s", err, out)
	}
	return time.Since(start).Seconds()
}

// markedCount counts, with conntrack -L, the TCP flows carrying ctguard's
// bit and BE_LIBERAL... conntrack-tools prints no TCP flags, so it counts
// the flows with the mark, which ctguard sets with the flag atomically.
func markedCount(b *testing.B, ns *netnstest.NS) int {
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "sh", "-c",
		fmt.Sprintf("conntrack -L -p tcp --mark %d/%d 2>/dev/null | wc -l", flows.DefaultMarkBit, flows.DefaultMarkBit)).Output()
	if err != nil {
		b.Fatal(err)
	}
	n, _ := strconv.Atoi(string(bytes.TrimSpace(out)))
	return n
}

// bareLoop times a plain loop of single flags-only updates (set, then
// clear again) over up to 20,000 of the flows: the per-update anchor.
func bareLoop(b *testing.B, fc *flows.Conn, n int) float64 {
	var fs []flows.Flow
	err := fc.DumpFunc(context.Background(), func(f *flows.Flow) error {
		if len(fs) < min(n, 20000) {
			fs = append(fs, *f)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range fs {
		if err := fc.SetLiberal(&fs[i], flows.Reply, flows.DefaultMarkBit); err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(len(fs)) / time.Since(start).Seconds()
	for i := range fs {
		if err := fc.ClearLiberal(&fs[i], flows.Reply, flows.DefaultMarkBit); err != nil {
			b.Fatal(err)
		}
	}
	return rate
}

func memMiB() (heap, rss float64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapInuse) / (1 << 20)
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				rss = float64(kb) / 1024
			}
		}
	}
	return heap, rss
}

// BenchmarkPrivilegedSweep measures the sweeps over a table of n
// ESTABLISHED flows made with ctnetlink in a fresh namespace, policy
// liberal perFlow nat [any], against anchors measured in the same run:
// `conntrack -L > /dev/null` (dump-s) and a bare loop of single flags-only
// updates (bare-flags/s). In order: the engine's start (start-s, from New
// to ready, every flow flagged; heap and RSS after it; flagged-mismatch is
// the engine's Flagged counter minus conntrack -L's count of marked
// flows), Rollback (rollback-s; left-marked must be 0) and the one-shot
// apply's FlagExisting (apply-s). Run it once per size:
//
//	CTGUARD_BENCH_FLOWS=100000,1000000 go test ./controller/perflow -run '^$' -bench PrivilegedSweep -benchtime 1x
func BenchmarkPrivilegedSweep(b *testing.B) {
	netnstest.RequirePrivileged(b)
	for _, n := range sweepSizes() {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) { benchSweep(b, n) })
	}
}

func benchSweep(b *testing.B, n int) {
	raiseConntrackMax(b, n+10000)
	ns := netnstest.NewNetNS(b, "f9sweep")
	fillTable(b, ns, n)
	fc := openFlows(b, ns)
	dump := dumpSeconds(b, ns)
	bare := bareLoop(b, fc, n)
	heap0, rss0 := memMiB()
	all := perFlow("all", policy.Match{}, true)
	for b.Loop() {
		ready := make(chan struct{})
		start := time.Now()
		e, err := New(Config{Policies: []policy.Policy{all}, Conn: FromFlows(fc), OnReady: func() { close(ready) }})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		<-ready
		startS := time.Since(start).Seconds()
		heap, rss := memMiB()
		flagged := e.Stats().Policies["all"].Flagged
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		marked := markedCount(b, ns)

		start = time.Now()
		cleared, err := Rollback(context.Background(), FromFlows(fc), 0, flows.Reply)
		if err != nil {
			b.Fatal(err)
		}
		rollbackS := time.Since(start).Seconds()
		left := markedCount(b, ns)

		sel := compile(b, all)
		start = time.Now()
		applied, err := FlagExisting(context.Background(), FromFlows(fc), sel, 0)
		if err != nil {
			b.Fatal(err)
		}
		applyS := time.Since(start).Seconds()
		if _, err := Rollback(context.Background(), FromFlows(fc), 0, flows.Reply); err != nil {
			b.Fatal(err)
		}

		b.ReportMetric(dump, "dump-s")
		b.ReportMetric(bare, "bare-flags/s")
		b.ReportMetric(startS, "start-s")
		b.ReportMetric(startS/dump, "start-x-dump")
		b.ReportMetric(heap-heap0, "heap-MiB")
		b.ReportMetric(rss, "rss-MiB")
		b.ReportMetric(rss-rss0, "rss-growth-MiB")
		b.ReportMetric(float64(int(flagged)-marked), "flagged-mismatch")
		b.ReportMetric(float64(n-marked), "unflagged")
		b.ReportMetric(rollbackS, "rollback-s")
		b.ReportMetric(rollbackS/dump, "rollback-x-dump")
		b.ReportMetric(float64(marked-cleared), "rollback-missed")
		b.ReportMetric(float64(left), "left-marked")
		b.ReportMetric(applyS, "apply-s")
		b.ReportMetric(applyS/dump, "apply-x-dump")
		b.ReportMetric(float64(n-applied), "apply-unflagged")
	}
}
