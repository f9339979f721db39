package main

import (
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/racetest"
	"github.com/ctguard/ctguard/lab/handshake"
	"golang.org/x/sys/unix"
)

// floodRate is the invalid packets a second the flood aims at.
const floodRate = 100_000

// floodSenders is how many threads send the flood.
const floodSenders = 2

// flood sends, from the server namespace, segments of the NATed flow
// server -> box:natPort at floodRate a second for d, each invalid at the
// box's input: beyond the window (the box answers each with its own RST,
// the incident at flood scale), or with rst, RSTs outside the window (the
// box answers nothing). It returns the packets sent a second.
func flood(b *testing.B, tp *racetest.Topo, server, box netip.AddrPort, rst bool, d time.Duration) float64 {
	b.Helper()
	// An IPv4 packet (20-byte header) for an IPPROTO_RAW socket.
	seg, err := handshake.Craft(server, box, 1<<31, 1)
	if err != nil {
		b.Error(err) // flood runs on a goroutine of its own
		return 0
	}
	tcp := seg[20:]
	// The benchmark's window, 65535: with the lab's (502) this kernel's
	// conntrack does not count the beyond-window segments invalid
	// (measured: 0 invalid a second instead of twice the flood's rate).
	setWord(tcp, 14, 65535)
	if rst {
		setWord(tcp, 12, uint16(tcp[12])<<8|0x04) // flags: RST only
	}
	to := &unix.SockaddrInet4{Addr: box.Addr().As4()}
	counts := make(chan int, floodSenders)
	start := time.Now()
	for range floodSenders {
		go tp.Server.Do(b, func() {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
			if err != nil {
				b.Error(err)
				counts <- 0
				return
			}
			defer unix.Close(fd)
			sent := 0
			for tick := 1; ; tick++ {
				for sent < tick*floodRate/floodSenders/1000 {
					if err := unix.Sendto(fd, seg, 0, to); err == nil {
						sent++
					} else if err != unix.ENOBUFS {
						b.Error(err)
						counts <- sent
						return
					}
				}
				elapsed := time.Since(start)
				if elapsed >= d {
					counts <- sent
					return
				}
				if wait := time.Duration(tick)*time.Millisecond - elapsed; wait > 0 {
					time.Sleep(wait)
				}
			}
		})
	}
	total := 0
	for range floodSenders {
		total += <-counts
	}
	return float64(total) / time.Since(start).Seconds()
}

// setWord replaces the 16-bit word at off of a TCP header and updates its
// checksum (RFC 1624).
func setWord(tcp []byte, off int, v uint16) {
	old := uint16(tcp[off])<<8 | uint16(tcp[off+1])
	tcp[off], tcp[off+1] = byte(v>>8), byte(v)
	sum := uint32(^(uint16(tcp[16])<<8 | uint16(tcp[17]))) + uint32(^old) + uint32(v)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	tcp[16], tcp[17] = byte(c>>8), byte(c)
}

// download reads from the stream server for d and returns MB/s.
func download(b *testing.B, tp *racetest.Topo, addr string, d time.Duration) float64 {
	b.Helper()
	var n int64
	tp.Client.Do(b, func() {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(d))
		n, _ = io.Copy(io.Discard, c)
	})
	return float64(n) / d.Seconds() / 1e6
}

// streamServer serves an endless stream on port 9000 and holds connections
// on port 9001, in the server namespace.
func streamServer(b *testing.B, ns *netnstest.NS, host netip.Addr) {
	b.Helper()
	buf := make([]byte, 64<<10)
	for _, port := range []int{9000, 9001} {
		var ln net.Listener
		var err error
		ns.Do(b, func() { ln, err = net.Listen("tcp", netip.AddrPortFrom(host, uint16(port)).String()) })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					if port == 9000 {
						for {
							if _, err := c.Write(buf); err != nil {
								return
							}
						}
					}
					io.Copy(io.Discard, c)
				}()
			}
		}()
	}
}

// BenchmarkPrivilegedEvidenceFlood floods a SNAT box with 100,000 invalid
// segments a second (beyond the window of one NATed flow, so the box also
// answers each with a RST) while a client downloads through the box, and
// measures, in one run: the download's throughput without flood, with the
// flood and no ctguard, and with the flood while "ctguard detect" reads
// the evidence rules; detect's CPU; and what it logged and lost. Each
// config runs once whatever b.N.
//
//	go test ./cmd/ctguard -run '^$' -bench PrivilegedEvidenceFlood -benchtime 1x
func BenchmarkPrivilegedEvidenceFlood(b *testing.B) {
	const d = 5 * time.Second
	tp := racetest.New(b, racetest.SNAT, false)
	server := tp.Backend.Addr()
	streamServer(b, tp.Server, server)
	// The flow whose window the flood misses.
	var held net.Conn
	var err error
	tp.Client.Do(b, func() { held, err = net.Dial("tcp", netip.AddrPortFrom(server, 9001).String()) })
	if err != nil {
		b.Fatal(err)
	}
	defer held.Close()
	out := string(tp.NAT.MustRun(b, "conntrack", "-L", "-p", "tcp", "--dport", "9001"))
	m := regexp.MustCompile(`src=\S+ dst=(\S+) sport=9001 dport=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no NATed flow to port 9001:\n%s", out)
	}
	port, _ := strconv.Atoi(m[2])
	box := netip.AddrPortFrom(netip.MustParseAddr(m[1]), uint16(port))
	stream := netip.AddrPortFrom(server, 9000).String()
	srv := netip.AddrPortFrom(server, 9001)

	for _, cfg := range []string{"no-flood", "flood-no-ctguard", "flood-detect", "rstflood-no-ctguard", "rstflood-detect"} {
		b.Run(cfg, func(b *testing.B) {
			var p *detectProc
			var cpu0 time.Duration
			if strings.HasSuffix(cfg, "-detect") {
				p = startDetect(b, tp.NAT, b.TempDir())
				cpu0 = cpuTime(b, p.cmd.Process.Pid)
			}
			invalid0 := conntrackInvalid(b, tp.NAT)
			rate := 0.0
			done := make(chan struct{})
			if cfg != "no-flood" {
				go func() { rate = flood(b, tp, srv, box, strings.HasPrefix(cfg, "rst"), d); close(done) }()
			} else {
				close(done)
			}
			mbps := download(b, tp, stream, d)
			<-done
			b.ReportMetric(mbps, "MB/s")
			b.ReportMetric(rate, "invalid/s")
			b.ReportMetric(float64(conntrackInvalid(b, tp.NAT)-invalid0)/d.Seconds(), "ct_invalid/s")
			if p != nil {
				cpu := cpuTime(b, p.cmd.Process.Pid) - cpu0
				b.ReportMetric(float64(cpu.Milliseconds())/d.Seconds(), "detect_cpu_ms/s")
				_, summary := p.stop()
				b.Logf("%s", strings.TrimSpace(summary))
				for _, f := range []struct{ re, unit string }{
					{`(\d+) packets logged`, "logged"},
					{`(\d+) log messages lost`, "lost"},
					{`(\d+) buffer overruns`, "overruns"},
					{`seen on input (\d+)`, "counted_input"},
				} {
					if m := regexp.MustCompile(f.re).FindStringSubmatch(summary); m != nil {
						v, _ := strconv.Atoi(m[1])
						b.ReportMetric(float64(v), f.unit)
					}
				}
			}
		})
	}
}

// conntrackInvalid sums conntrack's invalid statistic in ns.
func conntrackInvalid(b *testing.B, ns *netnstest.NS) uint64 {
	b.Helper()
	var sum uint64
	for _, m := range regexp.MustCompile(`invalid=(\d+)`).FindAllStringSubmatch(string(ns.MustRun(b, "conntrack", "-S")), -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		sum += v
	}
	return sum
}
