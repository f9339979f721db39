package perflow

import (
	"context"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// nopConn accepts every update and has no table: it isolates the engine's
// own per-event cost.
type nopConn struct{}

func (nopConn) Subscribe(int) (EventSource, error)                                      { return nil, nil }
func (nopConn) DumpFunc(context.Context, func(*flows.Flow) error) error                 { return nil }
func (nopConn) DumpMark(context.Context, uint32, uint32, func(*flows.Flow) error) error { return nil }
func (nopConn) Apply([]flows.Update) error                                              { return nil }

// BenchmarkHandleFlowLifecycle measures the engine's CPU cost per flow
// (NEW, flag, the flag's own UPDATE, the end's UPDATE, DESTROY) without the
// kernel; the steady path allocates nothing.
func BenchmarkHandleFlowLifecycle(b *testing.B) {
	e := newEngine(b, nopConn{}, nil, web, perFlow("other", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, true))
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := tcpFlow(uint16(i), 443, flows.TCPSynSent)
		i++
		e.handle(&flows.Event{Type: flows.EventNew, Flow: f}, now)
		f.ReplyFlags |= flows.BeLiberal
		f.Mark = uint32(flows.DefaultMarkBit)
		e.handle(&flows.Event{Type: flows.EventUpdate, Flow: f}, now)
		f.State = flows.TCPTimeWait
		e.handle(&flows.Event{Type: flows.EventUpdate, Flow: f}, now)
		e.handle(&flows.Event{Type: flows.EventDestroy, Flow: f}, now)
		if i%64 == 0 {
			e.flush()
		}
	}
}
