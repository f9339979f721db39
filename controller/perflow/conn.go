package perflow

import (
	"context"

	"github.com/ctguard/ctguard/controller/flows"
)

// Conn is the conntrack access the engine needs. FromFlows adapts a
// *flows.Conn; tests use a fake.
type Conn interface {
	// Subscribe opens an event source with a receive buffer of bufBytes.
	Subscribe(bufBytes int) (EventSource, error)
	// DumpFunc calls fn on every TCP conntrack entry as the dump streams
	// in. An error from fn stops the dump.
	DumpFunc(ctx context.Context, fn func(*flows.Flow) error) error
	// DumpMark is DumpFunc over the entries whose mark has, in the bits
	// of mask, the bits of value (the kernel filters).
	DumpMark(ctx context.Context, value, mask uint32, fn func(*flows.Flow) error) error
	// Apply sends flags-only updates in batches and fills in each one's
	// Errno; it fails only when the socket does.
	Apply(ups []flows.Update) error
}

// EventSource delivers conntrack events to a single reader, as
// flows.Subscription does: Receive returns flows.ErrEventsLost when events
// were dropped (the source stays usable) and flows.ErrClosed after Close;
// after any other error the engine closes the source and subscribes again.
type EventSource interface {
	Receive(dst []flows.Event) ([]flows.Event, error)
	Close() error
}

// FromFlows adapts a kernel connection to Conn.
func FromFlows(c *flows.Conn) Conn { return kernelConn{c} }

type kernelConn struct{ *flows.Conn }

// Subscribe returns the *flows.Subscription as an EventSource (never a
// non-nil interface holding a nil pointer).
func (k kernelConn) Subscribe(bufBytes int) (EventSource, error) {
	s, err := k.Conn.Subscribe(bufBytes)
	if err != nil {
		return nil, err
	}
	return s, nil
}
