package main

import (
	"bytes"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/racetest"
)

// connRateWorkers is how many connections the client keeps in flight.
const connRateWorkers = 50

// connRateRounds is how many times every mode runs, interleaved, unless
// CTGUARD_BENCH_CONN_ROUNDS says otherwise.
const connRateRounds = 3

// httpResponse is the server's whole answer: a 3-byte body, then it closes.
var httpResponse = []byte("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

// httpRequest is what each client connection sends.
var httpRequest = []byte("GET / HTTP/1.0\r\nHost: bench\r\n\r\n")

// connRateMode is one box configuration of BenchmarkPrivilegedConnRate.
type connRateMode struct {
	name   string
	policy string   // "" with run: the embedded default policy
	run    bool     // whether ctguard run runs on the box
	binary string   // "": the binary under test
	args   []string // more flags of ctguard run
	tp     *racetest.Topo
	proc   *runProc
	pid    int
	conns  int
	errs   int
	wall   time.Duration
	cpu    time.Duration
	ctxsw  int
}

// BenchmarkPrivilegedConnRate measures new connections per second through a
// SNAT box (IPv4): client, box and server namespaces of their own on the
// same CPUs, connRateWorkers connections in flight, each a short HTTP/1.0
// exchange (request, a 3-byte response, the server closes). Modes: no
// ctguard (the anchor), `ctguard run` with a dropInvalid policy, with the
// default policy's perFlow liberal on conntrack events (`handshake: none`),
// the same with the guard rule (`handshake: guard`), and with the embedded
// default policy (the handshake gate), and that with --gate-hold 0
// (gate-nohold: the gate reads again at once after every batch). Every mode has its
// own topology and controller, all set up first; then each mode runs b.N
// connections per round, the modes interleaved, connRateRounds rounds, so
// that the machine's noise falls on all of them alike. It reports each
// mode's connections/s, its ratio to no ctguard, ctguard's CPU (user +
// system) and its threads' context switches per connection. CTGUARD_BENCH_CONN_MODES=no-ctguard,gate
// runs only the modes it names (no-ctguard always);
// CTGUARD_BENCH_BASE_BINARY=PATH adds the mode gate-base: the default
// policy run by another ctguard binary (e.g. built from main), to compare
// two versions in one run. CTGUARD_BENCH_CONN_CLIENT=ab makes the
// connections with ApacheBench (`ab -c 50`, the client: C, one
// thread, far less CPU per connection than the Go client) instead.
//
//	go test ./cmd/ctguard -run '^$' -bench PrivilegedConnRate -benchtime 20000x
func BenchmarkPrivilegedConnRate(b *testing.B) {
	none := `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: events
spec:
  workaround: liberal
  liberal:
    handshake: none
  match:
    nat: [snat]
`
	guard := strings.Replace(none, "handshake: none", "handshake: guard", 1)
	drop := `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: drop
spec:
  workaround: dropInvalid
`
	modes := []*connRateMode{
		{name: "no-ctguard"},
		{name: "dropInvalid", run: true, policy: drop},
		{name: "none", run: true, policy: none},
		{name: "guard", run: true, policy: guard},
		{name: "gate", run: true},
		{name: "gate-nohold", run: true, args: []string{"--gate-hold", "0"}},
	}
	if base := os.Getenv("CTGUARD_BENCH_BASE_BINARY"); base != "" {
		modes = append(modes, &connRateMode{name: "gate-base", run: true, binary: base})
	}
	if only := os.Getenv("CTGUARD_BENCH_CONN_MODES"); only != "" {
		modes = slices.DeleteFunc(modes, func(m *connRateMode) bool {
			return !slices.Contains(strings.Split(only, ","), m.name)
		})
	}
	if len(modes) == 0 || modes[0].name != "no-ctguard" {
		b.Fatal("CTGUARD_BENCH_CONN_MODES must name no-ctguard (the anchor)")
	}
	connect := connRate // makes n connections, returns how many failed
	if os.Getenv("CTGUARD_BENCH_CONN_CLIENT") == "ab" {
		connect = connRateAB
	}
	for _, m := range modes {
		m.tp = racetest.New(b, racetest.SNAT, false)
		m.tp.Client.MustRun(b, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
		startHTTPServer(b, m.tp)
		if m.run {
			args := append([]string{"--resync", "1m"}, m.args...)
			if m.policy != "" {
				args = append(args, "-f", writePolicy(b, m.policy))
			}
			under := binary
			if m.binary != "" {
				binary = m.binary
			}
			p := startRun(b, m.tp.NAT, b.TempDir(), args...)
			binary = under
			p.waitReady()
			m.proc, m.pid = p, p.cmd.Process.Pid
		}
		connect(b, m.tp, 500) // warm up
	}
	rounds := connRateRounds
	if r, err := strconv.Atoi(os.Getenv("CTGUARD_BENCH_CONN_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	batches := map[*connRateMode][2]float64{} // the gate's batches and packets before the rounds
	for _, m := range modes {
		if m.proc != nil {
			batches[m] = gateBatches(m.proc)
		}
	}
	b.ResetTimer()
	for r := range rounds {
		for k := range modes {
			// Each round starts with another mode: no order effect.
			m := modes[(r+k)%len(modes)]
			var cpu0 time.Duration
			var sw0 int
			if m.pid != 0 {
				cpu0 = cpuTime(b, m.pid)
				sw0 = contextSwitches(b, m.pid)
			}
			start := time.Now()
			m.errs += connect(b, m.tp, b.N)
			m.wall += time.Since(start)
			m.conns += b.N
			if m.pid != 0 {
				m.cpu += cpuTime(b, m.pid) - cpu0
				m.ctxsw += contextSwitches(b, m.pid) - sw0
			}
		}
	}
	b.StopTimer()
	anchor := float64(modes[0].conns) / modes[0].wall.Seconds()
	for _, m := range modes {
		rate := float64(m.conns) / m.wall.Seconds()
		b.ReportMetric(rate, m.name+"-conn/s")
		if m.pid != 0 {
			b.ReportMetric(rate/anchor, m.name+"-x-no-ctguard")
			b.ReportMetric(float64(m.cpu.Microseconds())/float64(m.conns), m.name+"-cpu-µs/conn")
			b.ReportMetric(float64(m.ctxsw)/float64(m.conns), m.name+"-switches/conn")
			if now, then := gateBatches(m.proc), batches[m]; now[0] > then[0] {
				b.ReportMetric((now[1]-then[1])/(now[0]-then[0]), m.name+"-packets/batch")
			}
		}
		if m.errs > 0 {
			b.Errorf("%s: %d of %d connections failed", m.name, m.errs, m.conns)
		}
	}
}

// startHTTPServer serves httpResponse on the topology's backend address
// until the benchmark ends.
func startHTTPServer(b *testing.B, tp *racetest.Topo) {
	var ln net.Listener
	var err error
	tp.Server.Do(b, func() { ln, err = net.Listen("tcp", tp.Backend.String()) })
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 512)
				for n := 0; !bytes.Contains(buf[:n], []byte("\r\n\r\n")); {
					k, err := c.Read(buf[n:])
					if err != nil || k == 0 {
						return
					}
					n += k
				}
				c.Write(httpResponse)
			}()
		}
	}()
}

// connRate makes n connections from the client to the server through the
// box, connRateWorkers at a time, each a whole HTTP exchange, and returns
// how many failed.
func connRate(b *testing.B, tp *racetest.Topo, n int) int {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range connRateWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Sockets are made in the namespace of the thread that makes
			// them. (A locked thread must not die with its goroutine: a
			// ctguard run started from it would get its death signal.)
			tp.Client.Do(b, func() {
				buf := make([]byte, 256)
				for next.Add(1) <= int64(n) {
					if !exchange(tp, buf) {
						failed.Add(1)
					}
				}
			})
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// connRateAB is connRate with ApacheBench as the client.
func connRateAB(b *testing.B, tp *racetest.Topo, n int) int {
	out := tp.Client.MustRun(b, "ab", "-q", "-r", "-s", "5", "-c", strconv.Itoa(min(connRateWorkers, n)), "-n", strconv.Itoa(n),
		"http://"+tp.Target.String()+"/")
	complete, failed := -1, -1
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "Complete" && f[1] == "requests:":
			complete, _ = strconv.Atoi(f[2])
		case len(f) >= 3 && f[0] == "Failed" && f[1] == "requests:":
			failed, _ = strconv.Atoi(f[2])
		}
	}
	if complete != n || failed < 0 {
		b.Fatalf("ab: %d of %d requests complete, %d failed:\n%s", complete, n, failed, out)
	}
	return failed
}

// exchange makes one connection, sends the request and reads the whole
// response; it reports whether the response came.
func exchange(tp *racetest.Topo, buf []byte) bool {
	c, err := net.DialTimeout("tcp", tp.Target.String(), 3*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(httpRequest); err != nil {
		return false
	}
	n := 0
	for {
		k, err := c.Read(buf[n:])
		n += k
		if err == io.EOF {
			return bytes.Equal(buf[:n], httpResponse)
		}
		if err != nil || n == len(buf) {
			return false
		}
	}
}

// gateBatches returns how many batches the gate of p has handled and how
// many packets they held (its ctguard_gate_batch_size histogram).
func gateBatches(p *runProc) [2]float64 {
	f := p.scrape()["ctguard_gate_batch_size"]
	if f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].Histogram == nil {
		return [2]float64{}
	}
	h := f.GetMetric()[0].Histogram
	return [2]float64{float64(h.GetSampleCount()), h.GetSampleSum()}
}

// contextSwitches returns how many times the threads of a process were
// switched out so far (voluntary and not).
func contextSwitches(b *testing.B, pid int) int {
	b.Helper()
	dirs, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + d.Name() + "/status")
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) == 2 && strings.HasSuffix(f[0], "ctxt_switches:") {
				k, _ := strconv.Atoi(f[1])
				n += k
			}
		}
	}
	return n
}
