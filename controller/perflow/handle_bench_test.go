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

func (nopConn) Subscribe(int) (EventSource, error)                              { return nil, nil }
func (nopConn) DumpFunc(context.Context, func(*flows.Flow) error) error         { return nil }
func (nopConn) Get(f *flows.Flow) (flows.Flow, error)                           { return *f, nil }
func (nopConn) SetLiberal(*flows.Flow, flows.Directions, flows.MarkBit) error   { return nil }
func (nopConn) ClearLiberal(*flows.Flow, flows.Directions, flows.MarkBit) error { return nil }

// BenchmarkHandleFlowLifecycle measures the engine's CPU cost per flow
// (NEW, flag, confirming UPDATE, DESTROY) without the kernel.
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
		e.handle(&flows.Event{Type: flows.EventUpdate, Flow: f}, now)
		e.handle(&flows.Event{Type: flows.EventDestroy, Flow: f}, now)
	}
}
