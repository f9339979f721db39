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
	// in; fn may use the other methods. An error from fn stops the dump.
	DumpFunc(ctx context.Context, fn func(*flows.Flow) error) error
	// Get reads one entry's current state.
	Get(f *flows.Flow) (flows.Flow, error)
	// SetLiberal flags the flow and sets the ownership mark bit.
	SetLiberal(f *flows.Flow, dirs flows.Directions, mark flows.MarkBit) error
	// ClearLiberal clears the flag in dirs (none: the mark bit only) and
	// the ownership mark bit (none when mark is 0).
	ClearLiberal(f *flows.Flow, dirs flows.Directions, mark flows.MarkBit) error
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
