// Package handshake is the lab's adversarial server and its client. The
// server sends one crafted segment beyond the client's receive window the
// instant each TCP handshake completes (accept returns), then a short
// response: the shape of kubernetes' regression test for issue 74839, with
// a sequence number beyond the window so the segment is invalid to
// conntrack on every kernel. Unmitigated, a NAT box between the two resets
// the connection (SNAT: the box's own RST; DNAT: the client's RST to the
// un-DNATed segment). The client opens connections at a given rate and
// counts how many did not get the whole response.
package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/lab/topo"
	"golang.org/x/sys/unix"
)

// Response is what the server sends on every connection after the crafted
// segment; the client checks it byte for byte.
var Response = bytes.Repeat([]byte("ctguard handshake lab response\n"), 16)

// serverLinger bounds how long the server waits for the client to close
// after the response (the client's deadline ends it first).
const serverLinger = 5 * time.Second

// Server is the adversarial server. Its counters may be read while it runs.
type Server struct {
	ln     net.Listener
	raw    *Injector
	handle func(*Server, *net.TCPConn)
	wg     sync.WaitGroup
	done   chan struct{}

	accepted, injected, resets atomic.Int64
	mu                         sync.Mutex
	injectErr                  error // the first failed injection
}

// Stats are a server's counters.
type Stats struct {
	Accepted int64 // connections accepted
	Injected int64 // crafted segments sent, one per accepted connection
	// Resets counts connections whose server socket was reset (write or
	// read failed with ECONNRESET or EPIPE): a cross-check of the client's
	// count from the other end.
	Resets int64
	// InjectErr is the first injection that failed; nil when all worked.
	InjectErr error
}

// Listen starts the lab's server on addr in namespace ns: each connection
// gets the crafted segment at once, then Response, and the server waits
// for the client to close (Respond). The listening socket and the raw
// socket that sends the crafted segments are created in ns.
func Listen(ns topo.Namespace, addr netip.AddrPort) (*Server, error) {
	return ListenFunc(ns, addr, func(s *Server, c *net.TCPConn) {
		_ = s.Inject(c) // counted in Stats
		s.Respond(c)
	})
}

// ListenFunc is Listen with another way of serving a connection: handle
// runs on a goroutine of its own for each accepted connection (Inject sends
// the crafted segment); the server closes the connection afterwards.
// internal/racetest's adversary is one.
func ListenFunc(ns topo.Namespace, addr netip.AddrPort, handle func(s *Server, c *net.TCPConn)) (*Server, error) {
	s := &Server{done: make(chan struct{}), handle: handle}
	err := ns.Do(func() (err error) {
		if s.raw, err = NewInjector(addr.Addr().Is6()); err != nil {
			return err
		}
		s.ln, err = net.Listen("tcp", addr.String())
		if err != nil {
			s.raw.Close()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("adversarial server on %s in %s: %w", addr, ns.Name, err)
	}
	go s.serve()
	return s, nil
}

// serve accepts connections until the listener is closed.
func (s *Server) serve() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(s, c.(*net.TCPConn))
		}()
	}
}

// Inject sends the crafted segment beyond the client's window on c and
// counts it (Stats.Injected, or Stats.InjectErr for the first failure).
func (s *Server) Inject(c *net.TCPConn) error {
	err := s.raw.Inject(c)
	if err != nil {
		s.mu.Lock()
		if s.injectErr == nil {
			s.injectErr = err
		}
		s.mu.Unlock()
		return err
	}
	s.injected.Add(1)
	return nil
}

// Respond sends Response, then waits for the client to close, counting a
// reset (Stats.Resets).
func (s *Server) Respond(c *net.TCPConn) {
	_ = c.SetDeadline(time.Now().Add(serverLinger))
	_, err := c.Write(Response)
	if err == nil {
		err = c.CloseWrite()
	}
	if err == nil {
		_, err = io.Copy(io.Discard, c)
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		s.resets.Add(1)
	}
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Accepted: s.accepted.Load(), Injected: s.injected.Load(), Resets: s.resets.Load(), InjectErr: s.injectErr}
}

// Close stops accepting, waits for the open connections to end and closes
// the raw socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	<-s.done
	s.wg.Wait()
	return errors.Join(err, s.raw.Close())
}

// The kernel's TCP_REPAIR_QUEUE values (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// sequences returns the connection's next send sequence number (the
// server's snd_nxt: nothing is sent yet) and next expected receive sequence
// number, read with TCP_REPAIR (CAP_NET_ADMIN). Repair mode is left without
// the window probe the kernel would otherwise send, where the kernel knows
// how (Linux 4.19+).
func sequences(c *net.TCPConn) (snd, rcv uint32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	cerr := rc.Control(func(fd uintptr) {
		snd, rcv, err = repairSequences(int(fd))
	})
	if err = errors.Join(cerr, err); err != nil {
		return 0, 0, fmt.Errorf("read sequence numbers (TCP_REPAIR): %w", err)
	}
	return snd, rcv, nil
}

func repairSequences(fd int) (snd, rcv uint32, err error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return 0, 0, err
	}
	defer func() {
		if unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP) != nil {
			err = errors.Join(err, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF))
		}
	}()
	read := func(queue int) (uint32, error) {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
			return 0, err
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		return uint32(v), err
	}
	if snd, err = read(tcpSendQueue); err != nil {
		return 0, 0, err
	}
	rcv, err = read(tcpRecvQueue)
	return snd, rcv, err
}
