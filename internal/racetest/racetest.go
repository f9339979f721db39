// Package racetest builds, for kernel tests and benchmarks, the race of
// issue 8: a client behind a NAT box (source NAT, or destination NAT to a
// backend on the forward path) and an adversarial server that sends one
// segment beyond the client's window the instant each handshake completes.
// Without a per-flow flag already in force, the NAT box marks the segment
// invalid, and the connection is reset (by the box's own RST in the SNAT
// case, by the client's in the DNAT case).
package racetest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/handshake"
	"golang.org/x/sys/unix"
)

// Kind is the NAT the box does.
type Kind string

// The NAT kinds.
const (
	SNAT Kind = "snat" // masquerade toward the server
	DNAT Kind = "dnat" // a service address DNATed to the backend
)

// Topo is client -- nat -- server in three namespaces of one test.
type Topo struct {
	Kind                Kind
	IPv6                bool
	Client, NAT, Server *netnstest.NS
	// Target is what the client dials: the server (SNAT) or the service
	// address (DNAT). Backend is where the server listens.
	Target, Backend netip.AddrPort
}

// New builds the topology: addresses in 198.18.0.0/15 or fd00:c7::/32,
// forwarding on, and the NAT in a table "g8nat" of the NAT namespace.
func New(t testing.TB, kind Kind, ipv6 bool) *Topo {
	t.Helper()
	tp := &Topo{Kind: kind, IPv6: ipv6,
		Client: netnstest.NewNetNS(t, "g8c"), NAT: netnstest.NewNetNS(t, "g8n"), Server: netnstest.NewNetNS(t, "g8s")}
	cliAddr, natIn, natOut, srvAddr, vip, plen, fam := "198.18.8.2", "198.18.8.1", "198.19.8.1", "198.19.8.2", "198.18.9.1", "24", "ip"
	if ipv6 {
		cliAddr, natIn, natOut, srvAddr, vip, plen, fam = "fd00:c7:8:1::2", "fd00:c7:8:1::1", "fd00:c7:8:2::1", "fd00:c7:8:2::2", "fd00:c7:8:9::1", "64", "ip6"
	}
	tp.NAT.MustRun(t, "ip", "link", "add", "g8in", "type", "veth", "peer", "name", "g8cli", "netns", tp.Client.Name)
	tp.NAT.MustRun(t, "ip", "link", "add", "g8out", "type", "veth", "peer", "name", "g8srv", "netns", tp.Server.Name)
	nodad := []string{}
	if ipv6 {
		nodad = []string{"nodad"}
	}
	for _, c := range []struct {
		ns        *netnstest.NS
		dev, addr string
	}{{tp.NAT, "g8in", natIn}, {tp.NAT, "g8out", natOut}, {tp.Client, "g8cli", cliAddr}, {tp.Server, "g8srv", srvAddr}} {
		c.ns.MustRun(t, "ip", append([]string{"addr", "add", c.addr + "/" + plen, "dev", c.dev}, nodad...)...)
		c.ns.MustRun(t, "ip", "link", "set", c.dev, "up")
	}
	tp.Client.MustRun(t, "ip", "route", "add", "default", "via", natIn)
	tp.Server.MustRun(t, "ip", "route", "add", "default", "via", natOut)
	if ipv6 {
		tp.NAT.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	} else {
		tp.NAT.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	tp.Backend = netip.AddrPortFrom(netip.MustParseAddr(srvAddr), 8080)
	nat := fmt.Sprintf("add table inet g8nat; add chain inet g8nat post { type nat hook postrouting priority srcnat; }; add rule inet g8nat post oifname g8out meta nfproto %s masquerade", map[bool]string{false: "ipv4", true: "ipv6"}[ipv6])
	tp.Target = tp.Backend
	if kind == DNAT {
		tp.Target = netip.AddrPortFrom(netip.MustParseAddr(vip), 80)
		nat = fmt.Sprintf("add table inet g8nat; add chain inet g8nat pre { type nat hook prerouting priority dstnat; }; add rule inet g8nat pre %s daddr %s tcp dport 80 dnat %s to %s", fam, vip, fam, netip.AddrPortFrom(tp.Backend.Addr(), 8080))
	}
	tp.NAT.MustRun(t, "nft", nat)
	return tp
}

// Adversary is the server: it accepts, sends one segment beyond the
// client's window at once (the lab's handshake.Injector), waits, and looks whether its connection is still
// established; if so it greets the client and waits for the client to close.
// The client sends nothing before the greeting, so a reset caused by the
// segment always carries the sequence number the server expects (a client
// byte arriving first would turn it into a challenge ACK), and a reset that
// lands after Settle is still counted when the server reads the close.
type Adversary struct {
	ln       net.Listener
	inj      *handshake.Injector
	survived atomic.Int64
	reset    atomic.Int64
	wg       sync.WaitGroup
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
	var err error
	tp.Server.Do(t, func() {
		if a.ln, err = net.Listen("tcp", tp.Backend.String()); err != nil {
			return
		}
		if a.inj, err = handshake.NewInjector(tp.IPv6); err != nil {
			a.ln.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	go a.serve()
	t.Cleanup(func() { a.ln.Close(); a.wg.Wait(); a.inj.Close() })
	return a
}

// Counts returns how many connections survived and how many were reset,
// as the server saw them.
func (a *Adversary) Counts() (survived, reset int) {
	return int(a.survived.Load()), int(a.reset.Load())
}

func (a *Adversary) serve() {
	for {
		c, err := a.ln.Accept()
		if err != nil {
			return
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer c.Close()
			if a.handle(c.(*net.TCPConn)) {
				a.survived.Add(1)
			} else {
				a.reset.Add(1)
			}
		}()
	}
}

// handle serves one connection and reports whether it survived.
func (a *Adversary) handle(c *net.TCPConn) bool {
	if !a.benign.Load() {
		if err := a.inj.Inject(c); err != nil {
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

// Segment returns a TCP header (ACK|PSH) and n bytes of payload from src to
// dst. The checksum is filled in for IPv4; an IPv6 raw socket sums it.
func Segment(src, dst netip.AddrPort, seq, ack uint32, n int) []byte {
	b := make([]byte, 20+n)
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(b[14:], 65535)
	for i := 20; i < len(b); i++ {
		b[i] = 'x'
	}
	if s, d := src.Addr().Unmap(), dst.Addr().Unmap(); s.Is4() {
		var sum uint32
		s4, d4 := s.As4(), d.As4()
		for _, w := range [][]byte{s4[:], d4[:], {0, unix.IPPROTO_TCP}, {byte(len(b) >> 8), byte(len(b))}, b} {
			for i := 0; i+1 < len(w); i += 2 {
				sum += uint32(w[i])<<8 | uint32(w[i+1])
			}
			if len(w)%2 == 1 {
				sum += uint32(w[len(w)-1]) << 8
			}
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	}
	return b
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

// Run opens n connections from the client, at most parallel at a time, each
// reading the server's greeting and closing, and counts the resets.
func (tp *Topo) Run(t testing.TB, a *Adversary, n, parallel int) Result {
	t.Helper()
	survived0, reset0 := a.Counts()
	res := Result{Connections: n, Setup: make([]time.Duration, n)}
	var failed atomic.Int64
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	// Sockets are created in the namespace of the thread that creates them.
	tp.Client.Do(t, func() {
		d := net.Dialer{Timeout: 3 * time.Second}
		for i := range n {
			sem <- struct{}{}
			start := time.Now()
			c, err := d.Dial("tcp", tp.Target.String())
			res.Setup[i] = time.Since(start)
			if err != nil {
				failed.Add(1)
				<-sem
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.ReadFull(c, make([]byte, len(greeting))); err != nil {
					failed.Add(1)
				}
			}()
		}
	})
	wg.Wait()
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
