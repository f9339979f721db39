// Package racetest builds, for kernel tests and benchmarks, the race of
// issue 8: a client behind a NAT box (source NAT, or destination NAT to a
// backend on the forward path) and an adversarial server that sends one
// segment beyond the client's window the instant each handshake completes.
// Without a per-flow flag already in force, the NAT box marks the segment
// invalid, and the connection is reset (by the box's own RST in the SNAT
// case, by the client's in the DNAT case).
//
// It builds on the lab: the topology is lab/topo's, the server is
// lab/handshake's adversarial server and segment injection with a handling
// of its own (settle, then greet); what it adds is the testing.TB wiring,
// that handling and a client that opens connections a given number at a
// time.
package racetest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netns"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/handshake"
	"github.com/ctguard/ctguard/lab/topo"
	"golang.org/x/sys/unix"
)

// Kind is the NAT the box does: the lab's topologies.
type Kind = topo.NAT

// The NAT kinds.
const (
	SNAT = topo.SNAT // masquerade toward the server
	DNAT = topo.DNAT // a service address DNATed to the backend
)

// Topo is client -- nat -- server in three namespaces of one test: the
// lab's topology (lab/topo), one family.
type Topo struct {
	Kind                Kind
	IPv6                bool
	Client, NAT, Server *netnstest.NS
	// Target is what the client dials: the server (SNAT) or the service
	// address (DNAT). Backend is where the server listens.
	Target, Backend netip.AddrPort
	// Addrs are the family's addresses (the client's, the NAT's, ...).
	Addrs topo.Addresses

	lab *topo.Topology
}

// New builds the lab's topology of kind for one family (topo.Build:
// addresses in 198.18.0.0/15 or fd00:c7::/32, forwarding on, the NAT in
// table inet ctguardlab of the NAT namespace) and removes it when the test
// ends.
func New(t testing.TB, kind Kind, ipv6 bool) *Topo {
	t.Helper()
	netnstest.RequirePrivileged(t)
	f := topo.IPv4
	if ipv6 {
		f = topo.IPv6
	}
	lt, err := topo.Build(context.Background(), kind, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lt.Close(); err != nil {
			t.Error(err)
		}
	})
	ns := func(n topo.Namespace) *netnstest.NS { return &netnstest.NS{Name: n.Name, Handle: n.Handle} }
	return &Topo{Kind: kind, IPv6: ipv6, Client: ns(lt.Client), NAT: ns(lt.NAT), Server: ns(lt.Server),
		Target: lt.ServiceAddr(f), Backend: lt.ListenAddr(f), Addrs: lt.Addrs(f), lab: lt}
}

// Adversary is the server, the lab's adversarial server (handshake.Server)
// with a handling of its own: it sends one segment beyond the client's
// window at once, waits, and looks whether its connection is still
// established; if so it greets the client and waits for the client to close.
// The client sends nothing before the greeting, so a reset caused by the
// segment always carries the sequence number the server expects (a client
// byte arriving first would turn it into a challenge ACK), and a reset that
// lands after Settle is still counted when the server reads the close.
type Adversary struct {
	srv      *handshake.Server
	survived atomic.Int64
	reset    atomic.Int64
	// Settle is how long the server waits after the segment before looking
	// at its connection.
	Settle time.Duration
	benign atomic.Bool
}

// greeting is what the server sends a connection that survived.
const greeting = "hello"

// SetBenign turns the adversary into a plain server (no segment, no wait),
// for measuring what a mitigation costs, or back.
func (a *Adversary) SetBenign(on bool) { a.benign.Store(on) }

// StartAdversary listens on the backend address in the server namespace.
func (tp *Topo) StartAdversary(t testing.TB) *Adversary {
	t.Helper()
	a := &Adversary{Settle: 30 * time.Millisecond}
	srv, err := handshake.ListenFunc(tp.lab.Server, tp.Backend, func(s *handshake.Server, c *net.TCPConn) {
		if a.handle(s, c) {
			a.survived.Add(1)
		} else {
			a.reset.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	a.srv = srv
	t.Cleanup(func() { srv.Close() })
	return a
}

// Counts returns how many connections survived and how many were reset,
// as the server saw them.
func (a *Adversary) Counts() (survived, reset int) {
	return int(a.survived.Load()), int(a.reset.Load())
}

// handle serves one connection and reports whether it survived.
func (a *Adversary) handle(s *handshake.Server, c *net.TCPConn) bool {
	if !a.benign.Load() {
		if err := s.Inject(c); err != nil {
			return false // cannot tell: count against the mitigation
		}
		time.Sleep(a.Settle)
		if !established(c) {
			return false
		}
	}
	return greet(c)
}

// greet sends the greeting and waits for the client's close: a clean end
// of stream means the connection survived; a reset means it did not.
func greet(c *net.TCPConn) bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(greeting)); err != nil {
		return false
	}
	_, err := io.Copy(io.Discard, c)
	return err == nil
}

// established reports whether the connection is still ESTABLISHED.
func established(c *net.TCPConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var info *unix.TCPInfo
	raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	return err == nil && info.State == 1 // TCP_ESTABLISHED
}

// Result is what a run of connections gave.
type Result struct {
	Connections int
	// Reset counts connections the server saw reset, or whose greeting
	// the client did not get.
	Reset int
	// Setup holds each connection's connect() duration, in order.
	Setup []time.Duration
}

// Run opens n connections from the client, one after the other, at most
// parallel open at a time, each reading the server's greeting and closing,
// and counts the resets.
func (tp *Topo) Run(t testing.TB, a *Adversary, n, parallel int) Result {
	t.Helper()
	return tp.run(t, a, n, parallel, 1)
}

// RunConcurrent is Run with parallel connections being opened at once: the
// SYN-ACKs of many handshakes reach the box together.
func (tp *Topo) RunConcurrent(t testing.TB, a *Adversary, n, parallel int) Result {
	t.Helper()
	return tp.run(t, a, n, parallel, parallel)
}

// run opens n connections from dialers goroutines, at most parallel open at
// a time.
func (tp *Topo) run(t testing.TB, a *Adversary, n, parallel, dialers int) Result {
	survived0, reset0 := a.Counts()
	res := Result{Connections: n, Setup: make([]time.Duration, n)}
	var failed, next atomic.Int64
	sem := make(chan struct{}, parallel)
	var readers sync.WaitGroup
	errs := make(chan error, dialers)
	for range dialers {
		go func() {
			// Sockets are created in the namespace of the thread that
			// creates them. (Errors go back to the test's goroutine: only
			// it may end the test.)
			errs <- netns.Do(tp.Client.Fd(), func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					sem <- struct{}{}
					start := time.Now()
					c, err := d.Dial("tcp", tp.Target.String())
					res.Setup[i] = time.Since(start)
					if err != nil {
						failed.Add(1)
						<-sem
						continue
					}
					readers.Add(1)
					go func() {
						defer readers.Done()
						defer func() { <-sem }()
						defer c.Close()
						c.SetDeadline(time.Now().Add(3 * time.Second))
						if _, err := io.ReadFull(c, make([]byte, len(greeting))); err != nil {
							failed.Add(1)
						}
					}()
				}
				return nil
			})
		}()
	}
	var err error
	for range dialers {
		err = errors.Join(err, <-errs)
	}
	readers.Wait() // every dialer has returned: no reader is added any more
	if err != nil {
		t.Fatalf("dial from the client namespace: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, r := a.Counts()
		if s+r-survived0-reset0 >= n-int(failed.Load()) || time.Now().After(deadline) {
			res.Reset = max(r-reset0, int(failed.Load()))
			return res
		}
		time.Sleep(10 * time.Millisecond)
	}
}
