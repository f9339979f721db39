package flows

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Conn is a conntrack connection bound to one network namespace. It is safe
// for concurrent use.
type Conn struct {
	netnsFd int
	mu      sync.Mutex      // serializes requests on req (Dump sets deadlines)
	req     *netlink.Conn   // dumps, gets and flags-only updates
	ct      *conntrack.Conn // statistics
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
	return &Conn{netnsFd: netnsFd, req: req, ct: ct}, nil
}

func nlConfig(netnsFd int) *netlink.Config {
	if netnsFd < 0 {
		return &netlink.Config{}
	}
	return &netlink.Config{NetNS: netnsFd}
}

// Close closes the connection's sockets (not the subscriptions).
func (c *Conn) Close() error {
	return errors.Join(c.req.Close(), c.ct.Close())
}

// Dump returns every TCP conntrack entry, both address families. The
// context's deadline bounds the dump; cancellation is seen between requests.
func (c *Conn) Dump(ctx context.Context) ([]Flow, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: ipctnlMsgCtGet,
		Family:      netfilter.ProtoUnspec, // both IPv4 and IPv6
		Flags:       netlink.Request | netlink.Dump,
	}, nil)
	if err != nil {
		return nil, err
	}
	msgs, err := c.dump(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("dump conntrack: %w", err)
	}
	out := make([]Flow, 0, len(msgs))
	for _, m := range msgs {
		// A dumped entry is an IPCTNL_MSG_CT_NEW message, which
		// Event.Unmarshal decodes (as an "update").
		var ev conntrack.Event
		if err := ev.Unmarshal(m); err != nil {
			return nil, fmt.Errorf("decode dumped flow: %w", err)
		}
		if ev.Flow == nil || ev.Flow.TupleOrig.Proto.Protocol != ProtoTCP {
			continue
		}
		out = append(out, fromConntrack(ev.Flow))
	}
	return out, nil
}

// dump runs a dump request bounded by ctx's deadline.
func (c *Conn) dump(ctx context.Context, msg netlink.Message) ([]netlink.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline, _ := ctx.Deadline() // zero: no deadline
	if err := c.req.SetDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.req.SetDeadline(time.Time{})
	return c.req.Execute(msg)
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
