package flows

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/internal/nlwire"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Conn is a conntrack connection bound to one network namespace. It is safe
// for concurrent use.
type Conn struct {
	netnsFd int
	mu      sync.Mutex      // serializes requests on req
	req     *netlink.Conn   // gets and flags-only updates (dumps have their own)
	ct      *conntrack.Conn // statistics
	upd     *Updater        // batched updates
}

// Open opens a Conn in the network namespace netnsFd refers to, or in the
// calling thread's namespace when netnsFd < 0. The descriptor must stay open
// as long as Subscribe may be called.
func Open(netnsFd int) (*Conn, error) {
	req, err := netlink.Dial(unix.NETLINK_NETFILTER, nlConfig(netnsFd))
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink request socket: %w", err)
	}
	ct, err := conntrack.Dial(nlConfig(netnsFd))
	if err != nil {
		req.Close()
		return nil, fmt.Errorf("open conntrack socket: %w", err)
	}
	upd, err := NewUpdater(netnsFd)
	if err != nil {
		req.Close()
		ct.Close()
		return nil, err
	}
	return &Conn{netnsFd: netnsFd, req: req, ct: ct, upd: upd}, nil
}

// Apply sends the updates in batches on the Conn's Updater (see
// Updater.Apply).
func (c *Conn) Apply(ups []Update) error { return c.upd.Apply(ups) }

func nlConfig(netnsFd int) *netlink.Config {
	if netnsFd < 0 {
		return &netlink.Config{}
	}
	return &netlink.Config{NetNS: netnsFd}
}

// Close closes the connection's sockets (not the subscriptions).
func (c *Conn) Close() error {
	return errors.Join(c.req.Close(), c.ct.Close(), c.upd.Close())
}

// DumpFunc dumps every TCP conntrack entry, both address families, and
// calls fn on each as its netlink datagram arrives: memory stays bounded
// whatever the table's size (the kernel sends a few dozen entries per
// datagram, and builds the next one only once the previous one was read, so
// a slow fn loses nothing). The *Flow is only valid during the call. An
// error from fn stops the dump and is returned unwrapped. The dump runs on a
// socket of its own, so fn may call the Conn's other methods (SetLiberal,
// Get). ctx's deadline and cancellation interrupt the dump, even while it
// waits for the kernel. Entries created or destroyed during the dump may or
// may not be seen, as with any conntrack dump.
func (c *Conn) DumpFunc(ctx context.Context, fn func(*Flow) error) error {
	return c.dump(ctx, false, 0, 0, fn)
}

// DumpMark is DumpFunc over the entries whose mark has, in the bits of
// mask, the bits of value: the kernel filters (CTA_MARK, CTA_MARK_MASK), so
// the entries left out cost no copy to user space. value 0 with mask
// DefaultMarkBit dumps the entries without ctguard's bit; value and mask
// DefaultMarkBit those with it.
func (c *Conn) DumpMark(ctx context.Context, value, mask uint32, fn func(*Flow) error) error {
	return c.dump(ctx, true, value, mask, fn)
}

func (c *Conn) dump(ctx context.Context, filter bool, value, mask uint32, fn func(*Flow) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nlConfig(c.netnsFd))
	if err != nil {
		return fmt.Errorf("open ctnetlink dump socket: %w", err)
	}
	defer nl.Close()
	raw, err := nl.SyscallConn()
	if err != nil {
		return fmt.Errorf("ctnetlink dump socket: %w", err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := nl.SetReadDeadline(deadline); err != nil {
			return err
		}
	}
	// Registered after the deadline so that it wins: cancellation wakes a
	// blocked read with an expired deadline.
	stop := context.AfterFunc(ctx, func() { nl.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var w nlwire.Writer
	m := w.Begin(subsysCtnetlink<<8|ipctnlMsgCtGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1, unix.AF_UNSPEC, 0) // both IPv4 and IPv6
	if filter {
		w.BE32(ctaMark, value)
		w.BE32(ctaMarkMask, mask)
	}
	w.End(m)
	var werr error
	if err := raw.Write(func(fd uintptr) bool {
		_, werr = nlwire.Write(int(fd), w.B)
		return werr != unix.EAGAIN
	}); err != nil || werr != nil {
		return fmt.Errorf("dump conntrack: %w", errors.Join(err, werr))
	}
	d := dumpReader{raw: raw, buf: make([]byte, dumpBuffer)}
	var f Flow
	for {
		// Checked per datagram too: the deadline that stop sets comes from
		// another goroutine, and the datagrams already queued would
		// otherwise be read (to the end of the dump) before it lands.
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := d.next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("dump conntrack: %w", err)
		}
		for {
			m, rest, ok := nlwire.Next(b)
			if !ok {
				break
			}
			b = rest
			switch m.Type {
			case unix.NLMSG_DONE:
				if err := nlErrno(m.Data); err != nil {
					return fmt.Errorf("dump conntrack: %w", err)
				}
				return nil
			case unix.NLMSG_ERROR:
				err := nlErrno(m.Data)
				if err == nil { // an ack: nothing was asked for, nothing to do
					continue
				}
				return fmt.Errorf("dump conntrack: %w", err)
			case subsysCtnetlink<<8 | ipctnlMsgCtNew:
			default:
				continue
			}
			if !DecodeFlow(m.Data, &f) {
				continue
			}
			if err := fn(&f); err != nil {
				return err
			}
		}
	}
}

// dumpBuffer holds any dump datagram: the kernel sizes them to at most
// 32 KiB (netlink_dump).
const dumpBuffer = 64 << 10

// dumpReader reads a dump's datagrams one at a time.
type dumpReader struct {
	raw syscall.RawConn
	buf []byte
}

// next blocks until the next datagram (or the socket's read deadline) and
// returns it; it aliases the reader's buffer until the next call.
func (d *dumpReader) next() ([]byte, error) {
	var n int
	var rerr error
	err := d.raw.Read(func(fd uintptr) bool {
		n, rerr = nlwire.Recv(int(fd), d.buf, unix.MSG_TRUNC)
		return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
	})
	switch {
	case err != nil:
		return nil, err
	case rerr != nil:
		return nil, rerr
	case n > len(d.buf):
		return nil, fmt.Errorf("dump datagram of %d bytes exceeds the %d-byte buffer", n, len(d.buf))
	}
	return d.buf[:n], nil
}

// nlErrno decodes the error code leading an NLMSG_ERROR or NLMSG_DONE
// payload: nil for 0, the errno otherwise.
func nlErrno(b []byte) error {
	if len(b) < 4 {
		return nil // a DONE without payload
	}
	if e := nlwire.Errno(b); e != 0 {
		return e
	}
	return nil
}

// execute runs one request.
func (c *Conn) execute(msg netlink.Message) ([]netlink.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.req.Execute(msg)
}

// Get reads the flow's current entry, looked up by original tuple and zone.
// A vanished flow returns ErrFlowGone.
func (c *Conn) Get(f *Flow) (Flow, error) {
	ae := netfilter.NewAttributeEncoder()
	encodeKey(ae, f)
	return c.get(f, ae)
}

// GetReply reads the TCP entry (zone 0) whose REPLY tuple is t: for a
// packet the entry lost (ct state invalid), the packet's own addresses
// and ports are that tuple, so this finds the flow it belonged to, NATed
// or not. The kernel looks the tuple up in both directions: an entry whose
// ORIGINAL tuple is t is returned too. No such entry returns ErrFlowGone.
func (c *Conn) GetReply(t Tuple) (Flow, error) {
	ae := netfilter.NewAttributeEncoder()
	ae.Nested(ctaTupleReply, func(nae *netlink.AttributeEncoder) error {
		encodeTuple(nae, &t)
		return nil
	})
	return c.get(&Flow{Orig: Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort}}, ae)
}

// get runs a ctnetlink GET of the encoded key; f names the flow in errors
// and gives the family.
func (c *Conn) get(f *Flow, ae *netlink.AttributeEncoder) (Flow, error) {
	msg, err := netfilter.EncodeNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ipctnlMsgCtGet,
		Family:      family(f),
		Flags:       netlink.Request | netlink.Acknowledge,
	}, ae)
	if err != nil {
		return Flow{}, err
	}
	msgs, err := c.execute(msg)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Flow{}, fmt.Errorf("get %s: %w", f, ErrFlowGone)
		}
		return Flow{}, fmt.Errorf("get %s: %w", f, err)
	}
	if len(msgs) == 0 {
		return Flow{}, fmt.Errorf("get %s: empty reply", f)
	}
	var ev conntrack.Event
	if err := ev.Unmarshal(msgs[0]); err != nil {
		return Flow{}, fmt.Errorf("get %s: decode reply: %w", f, err)
	}
	if ev.Flow == nil {
		return Flow{}, fmt.Errorf("get %s: reply is not a flow", f)
	}
	return fromConntrack(ev.Flow), nil
}

// Stats returns conntrack's "invalid" statistic summed over all CPUs: the
// packets conntrack could not track, the incident's bad segments among them.
func (c *Conn) Stats() (invalid uint64, err error) {
	stats, err := c.ct.Stats()
	if err != nil {
		return 0, fmt.Errorf("conntrack statistics: %w", err)
	}
	for _, s := range stats {
		invalid += uint64(s.Invalid)
	}
	return invalid, nil
}
