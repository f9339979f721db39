package handshake_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/handshake"
	"github.com/ctguard/ctguard/lab/mitigate"
	"github.com/ctguard/ctguard/lab/topo"
)

// benchWorkarounds are the ways of running the box the benchmarks compare:
// no ctguard, "ctguard run" with each per-flow variant, and dropInvalid.
func benchWorkarounds(withNone bool) []string {
	var out []string
	if withNone {
		out = append(out, "none")
	}
	return append(out, mitigate.Liberal, mitigate.LiberalGate, mitigate.LiberalGuard, mitigate.LiberalEvents, mitigate.DropInvalid)
}

func workaroundArg(name string) string {
	if name == "none" {
		return ""
	}
	return name
}

// BenchmarkHandshakeTable reproduces issue 8's table: 40 connections to
// the adversarial server per topology and workaround, and how many were
// reset, with connection setup latency. Run it once per build to put
// before and after side by side:
//
//	go test ./lab/handshake -run '^$' -bench HandshakeTable -benchtime 1x
func BenchmarkHandshakeTable(b *testing.B) {
	netnstest.RequirePrivileged(b)
	for _, kind := range []topo.NAT{topo.SNAT, topo.DNAT} {
		for _, f := range []topo.Family{topo.IPv4, topo.IPv6} {
			for _, w := range benchWorkarounds(true) {
				b.Run(fmt.Sprintf("%s-%s/%s", kind, f, w), func(b *testing.B) {
					var resets, failed, conns int
					var p50, p99, cpu time.Duration
					for range b.N {
						out := race(b, kind, f, workaroundArg(w), handshake.Load{Conns: 40, Rate: handshake.DefaultRate})
						resets += out.Reset
						failed += out.ConnectFailed
						conns += out.Conns
						cpu += out.cpu
						p50, p99 = max(p50, out.SetupP50), max(p99, out.SetupP99)
					}
					b.ReportMetric(float64(resets)/float64(b.N), "resets/40")
					b.ReportMetric(float64(failed)/float64(b.N), "noconnect/40")
					b.ReportMetric(float64(p50.Microseconds()), "setup-p50-µs")
					b.ReportMetric(float64(p99.Microseconds()), "setup-p99-µs")
					b.ReportMetric(float64(cpu.Microseconds())/float64(conns), "ctguard-cpu-µs/conn")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// maxRateSteps are the connection rates BenchmarkHandshakeMaxRate tries,
// in order, until one loses a connection.
var maxRateSteps = []float64{250, 500, 1000, 2000, 4000, 8000}

// BenchmarkHandshakeMaxRate finds, per topology and ctguard workaround,
// the highest rate of new connections (500 per step, rates doubling from
// 250/s) at which none was reset or failed to connect, and the setup
// latency there:
//
//	go test ./lab/handshake -run '^$' -bench HandshakeMaxRate -benchtime 1x
func BenchmarkHandshakeMaxRate(b *testing.B) {
	netnstest.RequirePrivileged(b)
	for _, kind := range []topo.NAT{topo.SNAT, topo.DNAT} {
		for _, w := range benchWorkarounds(false) {
			b.Run(fmt.Sprintf("%s-ipv4/%s", kind, w), func(b *testing.B) {
				var held, p50, p99 float64
				for _, rate := range maxRateSteps {
					out := race(b, kind, topo.IPv4, w, handshake.Load{Conns: 500, Rate: rate})
					b.Logf("%.0f/s asked, %.0f/s achieved: %d/%d reset, %d never connected, setup p50 %v p99 %v, ctguard CPU %v/conn",
						rate, out.Rate, out.Reset, out.Conns, out.ConnectFailed, out.SetupP50, out.SetupP99, out.cpu/time.Duration(out.Conns))
					if out.Reset > 0 || out.ConnectFailed > 0 {
						break
					}
					held = out.Rate
					p50, p99 = float64(out.SetupP50.Microseconds()), float64(out.SetupP99.Microseconds())
				}
				if held > 0 && held >= maxRateSteps[len(maxRateSteps)-1]*0.9 {
					b.Logf("held the highest step: the limit is above %.0f/s (or is the client's)", held)
				}
				b.ReportMetric(held, "max-conn/s")
				b.ReportMetric(p50, "setup-p50-µs")
				b.ReportMetric(p99, "setup-p99-µs")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}
