package flows

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// DefaultEventBuffer is the default receive buffer of an event subscription.
// The kernel's default (about 208 KiB) holds only a few hundred events.
const DefaultEventBuffer = 8 << 20

// ErrEventsLost reports that the kernel dropped events because the receive
// buffer was full (ENOBUFS). It comes once the socket's queue has drained
// (see Receive); the subscription stays usable and the caller must resync
// with a dump.
var ErrEventsLost = errors.New("conntrack events lost (ENOBUFS)")

// ErrClosed reports that the subscription was closed.
var ErrClosed = errors.New("conntrack event subscription closed")

// EventType is the kind of a conntrack event.
type EventType uint8

// The conntrack event types ctguard subscribes to.
const (
	EventNew EventType = iota + 1
	EventUpdate
	EventDestroy
)

// String returns "new", "update" or "destroy".
func (t EventType) String() string {
	switch t {
	case EventNew:
		return "new"
	case EventUpdate:
		return "update"
	case EventDestroy:
		return "destroy"
	}
	return fmt.Sprintf("event(%d)", uint8(t))
}

// Event is one conntrack event.
type Event struct {
	Type EventType
	Flow Flow
}

// Subscription is a conntrack event socket (groups NEW, UPDATE, DESTROY)
// with a single reader: Receive must not be called concurrently.
type Subscription struct {
	nl          *netlink.Conn
	raw         syscall.RawConn
	batch       *nlwire.Batch // eventSlots datagrams per recvmmsg, into bufs
	bufs        []byte
	lossPending bool // ENOBUFS seen, queue not drained yet
	lost        atomic.Uint64
	closed      atomic.Bool
}

// Subscribe opens an event subscription in the Conn's namespace with its
// receive buffer forced (SO_RCVBUFFORCE) to bufBytes (DefaultEventBuffer when
// bufBytes <= 0). Reliable delivery is never enabled.
func (c *Conn) Subscribe(bufBytes int) (*Subscription, error) {
	if bufBytes <= 0 {
		bufBytes = DefaultEventBuffer
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nlConfig(c.netnsFd))
	if err != nil {
		return nil, fmt.Errorf("open conntrack event socket: %w", err)
	}
	s, err := newSubscription(nl, bufBytes)
	if err != nil {
		nl.Close()
		return nil, err
	}
	return s, nil
}

func newSubscription(nl *netlink.Conn, bufBytes int) (*Subscription, error) {
	raw, err := nl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("conntrack event socket: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufBytes)
	}); err != nil {
		return nil, fmt.Errorf("conntrack event socket: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("set event receive buffer to %d bytes: %w", bufBytes, serr)
	}
	for _, g := range netfilter.GroupsCT {
		if err := nl.JoinGroup(uint32(g)); err != nil {
			return nil, fmt.Errorf("join conntrack event group %d: %w", g, err)
		}
	}
	s := &Subscription{nl: nl, raw: raw, batch: nlwire.NewBatch(eventSlots), bufs: make([]byte, eventSlots*eventSlotSize)}
	for i := range eventSlots {
		s.batch.Buffer(i, s.slot(i))
	}
	return s, nil
}

// A Subscription reads up to eventSlots event datagrams per system call
// (recvmmsg), each into a slot of eventSlotSize bytes: the kernel sends
// every event as a datagram of its own, sized to fit (well under 1 KiB).
const (
	eventSlots    = 64
	eventSlotSize = 4 << 10
)

// slot returns the buffer of datagram i.
func (s *Subscription) slot(i int) []byte {
	return s.bufs[i*eventSlotSize : (i+1)*eventSlotSize]
}

// ReadBuffer returns the receive buffer size the kernel granted (it doubles
// the requested value for its bookkeeping).
func (s *Subscription) ReadBuffer() (int, error) { return s.nl.ReadBuffer() }

// Lost returns how many times the kernel reported lost events (ENOBUFS).
func (s *Subscription) Lost() uint64 { return s.lost.Load() }

// Close closes the subscription; a blocked Receive returns ErrClosed.
func (s *Subscription) Close() error {
	s.closed.Store(true)
	return s.nl.Close()
}

// Receive blocks until at least one event is available, then appends every
// event already queued (up to cap(dst)) to dst[:0] and returns it. Non-TCP
// events are skipped. It returns ErrClosed after Close.
//
// It returns ErrEventsLost (with the events read along) when the kernel
// dropped events, but only once it has read the socket's queue empty. The
// kernel reports ENOBUFS once per overflow and then drops events silently
// until the queue is empty (NETLINK_S_CONGESTED): a dump taken after that
// moment covers every lost event, a dump taken at the ENOBUFS would not.
func (s *Subscription) Receive(dst []Event) ([]Event, error) {
	dst = dst[:0]
	limit := max(cap(dst), 1)
	var rerr error
	err := s.raw.Read(func(fd uintptr) bool {
		for len(dst) < limit {
			n, err := s.batch.Recv(int(fd), min(eventSlots, limit-len(dst)), unix.MSG_TRUNC)
			switch {
			case err == unix.EAGAIN || err == unix.EWOULDBLOCK: // queue empty
				if s.lossPending {
					s.lossPending = false
					rerr = ErrEventsLost
					return true
				}
				return len(dst) > 0 // otherwise wait for readiness
			case err == unix.EINTR:
				continue
			case err == unix.ENOBUFS:
				s.lost.Add(1)
				s.lossPending = true
				continue
			case err != nil:
				rerr = err
				return true
			}
			for i := range n {
				size := s.batch.Len(i)
				if size > eventSlotSize {
					rerr = fmt.Errorf("a %d-byte event datagram exceeds its %d-byte buffer", size, eventSlotSize)
					return true
				}
				if dst, err = decodeEvents(dst, s.slot(i)[:size]); err != nil {
					rerr = err
					return true
				}
			}
		}
		return true
	})
	if s.closed.Load() {
		return dst, ErrClosed
	}
	if err != nil {
		return dst, fmt.Errorf("receive conntrack events: %w", err)
	}
	if rerr != nil && !errors.Is(rerr, ErrEventsLost) {
		rerr = fmt.Errorf("receive conntrack events: %w", rerr)
	}
	return dst, rerr
}

// decodeEvents appends the TCP flow events of one datagram to dst,
// without allocating.
func decodeEvents(dst []Event, b []byte) ([]Event, error) {
	for len(b) > 0 {
		m, rest, ok := nlwire.Next(b)
		if !ok {
			return dst, fmt.Errorf("parse netlink message: truncated datagram")
		}
		b = rest
		var typ EventType
		switch {
		case m.Type == subsysCtnetlink<<8|ipctnlMsgCtDel:
			typ = EventDestroy
		case m.Type != subsysCtnetlink<<8|ipctnlMsgCtNew:
			continue
		case m.Flags&(unix.NLM_F_CREATE|unix.NLM_F_EXCL) != 0:
			typ = EventNew
		default:
			typ = EventUpdate
		}
		dst = append(dst, Event{Type: typ})
		e := &dst[len(dst)-1]
		if !DecodeFlow(m.Data, &e.Flow) {
			dst = dst[:len(dst)-1]
			continue
		}
		if typ == EventDestroy {
			e.Flow.HasFlags = false // DESTROY protoinfo carries only the state
		}
	}
	return dst, nil
}
