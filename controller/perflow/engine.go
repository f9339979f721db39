// Package perflow is ctguard's per-flow liberal engine: it flags
// IP_CT_TCP_FLAG_BE_LIBERAL on every conntrack entry a per-flow liberal
// policy selects, for new flows from conntrack NEW events and for existing
// ones from a dump at start, confirms the flags from UPDATE events, re-flags
// flows whose flag an older kernel wiped, resyncs with a dump when events
// were lost, and counts the matching flows that end by a reset.
//
// Every flag update comes back as an UPDATE event; handling is idempotent (a
// flow already carrying the flag in the wanted directions is never flagged
// again), so the engine cannot loop on its own updates.
package perflow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/policy"
)

// Config configures an Engine.
type Config struct {
	// Policies are all policies; the engine keeps the per-flow liberal ones.
	Policies []policy.Policy
	// Conn is the conntrack connection, e.g. FromFlows(c).
	Conn Conn
	// MarkBit is the ownership mark bit (flows.DefaultMarkBit when 0).
	MarkBit flows.MarkBit
	// EventBuffer is the event socket's receive buffer in bytes
	// (flows.DefaultEventBuffer when 0).
	EventBuffer int
	// Logger receives the engine's logs (discarded when nil).
	Logger *slog.Logger
	// Observer receives counters and latencies as they happen (optional).
	Observer Observer
	// ResyncInterval, when positive, resyncs with a dump that often besides
	// after event loss: it re-flags flows whose flag something cleared and
	// forgets flows that ended without events (flows created while nobody
	// listened to events never produce any, not even DESTROY).
	ResyncInterval time.Duration
	// OnReady is called once Run listens to events and has handled the
	// flows that already existed (optional).
	OnReady func()
}

// Engine flags the flows the per-flow liberal policies select.
type Engine struct {
	conn     Conn
	mark     flows.MarkBit
	eventBuf int
	interval time.Duration
	log      *slog.Logger
	obs      Observer
	onReady  func()

	gen     atomic.Pointer[generation]
	swapped chan struct{} // a policy swap waits for a resync
	global  counters

	mu       sync.Mutex // guards counters
	counters map[string]*counters

	// Run's state, touched only by the Run goroutine.
	tracked     map[flows.Key]*track
	preexisting map[flows.Key]struct{}
}

// generation is one compiled policy set with its counters.
type generation struct {
	sel      *selector.Selector
	counters []*counters // by selector index
}

// New returns an engine for cfg's per-flow policies.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		conn:     cfg.Conn,
		mark:     cfg.MarkBit,
		eventBuf: cfg.EventBuffer,
		interval: cfg.ResyncInterval,
		log:      cfg.Logger,
		obs:      cfg.Observer,
		onReady:  cfg.OnReady,
		swapped:  make(chan struct{}, 1),
		counters: map[string]*counters{},
	}
	if e.mark == 0 {
		e.mark = flows.DefaultMarkBit
	}
	if e.eventBuf <= 0 {
		e.eventBuf = flows.DefaultEventBuffer
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.obs == nil {
		e.obs = noObserver{}
	}
	if err := e.install(cfg.Policies); err != nil {
		return nil, err
	}
	return e, nil
}

// SetPolicies swaps the policy set while Run goes on: new events use it at
// once, and Run resyncs existing flows with a dump (honouring
// existingFlows: for a swapped-in policy, "existing" means existing at the
// swap). Flows the engine already tracks keep the policies and directions
// they matched until they end. Counters of policies that keep their name
// carry over.
func (e *Engine) SetPolicies(ps []policy.Policy) error {
	if err := e.install(ps); err != nil {
		return err
	}
	select {
	case e.swapped <- struct{}{}:
	default:
	}
	return nil
}

func (e *Engine) install(ps []policy.Policy) error {
	sel, err := selector.Compile(ps)
	if err != nil {
		return fmt.Errorf("compile per-flow policies: %w", err)
	}
	g := &generation{sel: sel, counters: make([]*counters, sel.Len())}
	e.mu.Lock()
	for i := range g.counters {
		c := e.counters[sel.Name(i)]
		if c == nil {
			c = &counters{}
			e.counters[sel.Name(i)] = c
		}
		g.counters[i] = c
	}
	e.mu.Unlock()
	e.gen.Store(g)
	return nil
}

// Stats returns the engine's counters for the current policies.
func (e *Engine) Stats() Snapshot {
	s := Snapshot{
		FlowsSeen:  e.global[FlowsSeen].Load(),
		EventsLost: e.global[EventsLost].Load(),
		Resyncs:    e.global[Resyncs].Load(),
		Policies:   map[string]PolicyStats{},
	}
	g := e.gen.Load()
	for i, c := range g.counters {
		s.Policies[g.sel.Name(i)] = c.policyStats()
	}
	return s
}

// Run subscribes to conntrack events first, then flags the matching flows
// that already exist (policies with existingFlows), then handles events until
// ctx ends (returning nil). On event loss it resyncs with a dump so that no
// matching flow stays unflagged; a failed resync is retried every second
// while events go on being handled. Run fails when it cannot subscribe, when
// the start dump fails, or when the event socket fails. Only one Run may be
// active per engine.
func (e *Engine) Run(ctx context.Context) error {
	src, err := e.conn.Subscribe(e.eventBuf)
	if err != nil {
		return fmt.Errorf("subscribe to conntrack events: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	batches, free := read(rctx, src)
	defer func() {
		cancel()
		src.Close()
		for range batches { // wait for the reader to finish
		}
	}()

	e.tracked = map[flows.Key]*track{}
	e.preexisting = map[flows.Key]struct{}{}
	if err := e.resync(ctx, resyncStart); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if e.onReady != nil {
		e.onReady()
	}
	var tick, retry <-chan time.Time
	if e.interval > 0 {
		t := time.NewTicker(e.interval)
		defer t.Stop()
		tick = t.C
	}
	retryKind := resyncLoss
	for {
		kind, due := resyncLoss, false
		select {
		case <-ctx.Done():
			return nil
		case <-e.swapped:
			kind, due = resyncSwap, true
		case <-tick:
			kind, due = resyncPeriodic, true
		case <-retry:
			kind, due = retryKind, true
		case b, ok := <-batches:
			if !ok { // the reader stopped after delivering its error
				return nil
			}
			lost, err := e.handleBatch(ctx, b)
			free <- b.evs[:0]
			if err != nil {
				return err
			}
			due = lost
		}
		if !due {
			continue
		}
		retry = nil
		if err := e.resync(ctx, kind); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Keep flagging new flows meanwhile; never stop on a failed dump.
			e.log.Error("resync failed, retrying in a second", "err", err)
			retry, retryKind = time.After(time.Second), kind
		}
	}
}

// handleBatch handles a batch of events and reports whether the error that
// ended it is an event loss; other errors (but the end of ctx) end Run.
func (e *Engine) handleBatch(ctx context.Context, b batch) (lost bool, err error) {
	for i := range b.evs {
		e.handle(&b.evs[i], b.at)
	}
	switch {
	case b.err == nil:
		return false, nil
	case errors.Is(b.err, flows.ErrEventsLost):
		e.countGlobal(EventsLost)
		e.log.Warn("conntrack events lost, resyncing with a dump")
		return true, nil
	case ctx.Err() != nil:
		return false, nil
	default:
		return false, fmt.Errorf("conntrack events: %w", b.err)
	}
}

// batch is what one Receive returned, and when.
type batch struct {
	evs []flows.Event
	err error
	at  time.Time
}

// read runs the single reader of src until src fails or closes. It reuses a
// few buffers the loop hands back on free: when the loop falls behind, the
// reader waits and the kernel's socket buffer absorbs the burst (or
// overflows, which the loop then sees as event loss).
func read(ctx context.Context, src EventSource) (<-chan batch, chan<- []flows.Event) {
	const buffers, batchSize = 4, 256
	batches := make(chan batch)
	free := make(chan []flows.Event, buffers)
	for range buffers {
		free <- make([]flows.Event, 0, batchSize)
	}
	go func() {
		defer close(batches)
		for {
			var buf []flows.Event
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			evs, err := src.Receive(buf)
			b := batch{evs: evs, err: err, at: time.Now()}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if err != nil && !errors.Is(err, flows.ErrEventsLost) {
				return
			}
		}
	}()
	return batches, free
}

func (e *Engine) countGlobal(c Counter) {
	e.global[c].Add(1)
	e.obs.Count(c, "")
}

// count adds one to counter c of every policy in m.
func (e *Engine) count(g *generation, m selector.Mask, c Counter) {
	for i, pc := range g.counters {
		if m.Has(i) {
			pc[c].Add(1)
			e.obs.Count(c, g.sel.Name(i))
		}
	}
}
