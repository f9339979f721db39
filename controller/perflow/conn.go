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
	// Dump returns every TCP conntrack entry.
	Dump(ctx context.Context) ([]flows.Flow, error)
	// Get reads one entry's current state.
	Get(f *flows.Flow) (flows.Flow, error)
	// SetLiberal flags the flow and sets the ownership mark bit.
	SetLiberal(f *flows.Flow, dirs flows.Directions, mark flows.MarkBit) error
	// ClearLiberal clears the flag and the ownership mark bit.
	ClearLiberal(f *flows.Flow, dirs flows.Directions, mark flows.MarkBit) error
}

// EventSource delivers conntrack events to a single reader, as
// flows.Subscription does: Receive returns flows.ErrEventsLost when events
// were dropped and flows.ErrClosed after Close.
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
