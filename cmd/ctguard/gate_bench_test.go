package main

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/racetest"
)

// cpuTime returns the user+system CPU time a process used so far.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th of them, in clock ticks (100 Hz).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkPrivilegedHandshake measures what each handshake protection
// costs a NAT box (SNAT, IPv4) in one run: connection setup latency seen by
// the client (p50, p99; each op is one connection: connect, read the greeting, close) and
// the controller's CPU per new flow, with a plain server; the same latency
// under load, b.N connections opened 64 at a time (where the gate holds SYN-ACKs
// to batch them: gate-nohold runs it with --gate-hold 0); then the resets
// of 1000 connections to the adversarial server, 64 at a time, and the
// rate they went at. Compare the modes as ratios within one run: the
// machine is shared.
//
//	go test ./cmd/ctguard -run '^$' -bench PrivilegedHandshake -benchtime 2000x
func BenchmarkPrivilegedHandshake(b *testing.B) {
	for _, mode := range []string{"no-ctguard", "none", "guard", "gate", "gate-nohold"} {
		b.Run(mode, func(b *testing.B) {
			tp := racetest.New(b, racetest.SNAT, false)
			pid := 0
			if mode != "no-ctguard" {
				handshake, args := mode, []string{"--resync", "1m"}
				if mode == "gate-nohold" {
					handshake, args = "gate", append(args, "--gate-hold", "0")
				}
				pol := regexp.MustCompile(`workaround: liberal\n`).ReplaceAllString(gatePolicy(tp), "workaround: liberal\n  liberal:\n    handshake: "+handshake+"\n")
				p := startRun(b, tp.NAT, b.TempDir(), append(args, "-f", writePolicy(b, pol))...)
				p.waitReady()
				pid = p.cmd.Process.Pid
			}
			srv := tp.StartAdversary(b)
			srv.SetBenign(true)
			tp.Run(b, srv, 50, 1) // warm up
			var cpu0 time.Duration
			if pid != 0 {
				cpu0 = cpuTime(b, pid)
			}
			b.ResetTimer()
			res := tp.Run(b, srv, b.N, 1)
			b.StopTimer()
			b.ReportMetric(float64(percentile(res.Setup, 0.5).Microseconds()), "p50-setup-µs")
			b.ReportMetric(float64(percentile(res.Setup, 0.99).Microseconds()), "p99-setup-µs")
			if pid != 0 {
				b.ReportMetric(float64((cpuTime(b, pid)-cpu0).Microseconds())/float64(b.N), "ctguard-cpu-µs/flow")
			}
			loaded := tp.RunConcurrent(b, srv, b.N, 64)
			b.ReportMetric(float64(percentile(loaded.Setup, 0.5).Microseconds()), "loaded-p50-setup-µs")
			b.ReportMetric(float64(percentile(loaded.Setup, 0.99).Microseconds()), "loaded-p99-setup-µs")
			srv.SetBenign(false)
			start := time.Now()
			out := tp.Run(b, srv, 1000, 64)
			b.ReportMetric(float64(out.Reset), "resets/1000")
			b.ReportMetric(1000/time.Since(start).Seconds(), "adversarial-conn/s")
		})
	}
}
