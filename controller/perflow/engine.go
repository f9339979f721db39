// Package perflow is ctguard's per-flow liberal engine: it flags
// IP_CT_TCP_FLAG_BE_LIBERAL on every conntrack entry a per-flow liberal
// policy selects, for new flows from conntrack NEW events and for existing
// ones from a dump at start, confirms the flags from UPDATE events, re-flags
// flows whose flag an older kernel wiped, resyncs with a dump when events
// were lost, and counts the matching flows that end by a reset.
//
// Only the wanted directions a flow lacks are ever flagged, with ctguard's
// ownership mark bit (see package flows): a direction already liberal, e.g.
// set by the kernel, is never claimed, and Rollback clears only directions
// ctguard may have set.
//
// Every flag update comes back as an UPDATE event; handling is idempotent (a
// flow already carrying the flag in the wanted directions is never flagged
// again), so the engine cannot loop on its own updates.
//
// FlagExisting, Plan and Rollback are the one-shot forms for commands that
// do not run the engine; FlagExisting and the engine's start share the same
// per-flow decision.
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
	// OwnedDirections are the directions ctguard may have set on marked
	// flows before this engine started: the union of the directions of the
	// per-flow policies of every revision ctguard applied
	// (selector.Directions over the journal). The engine adds those of
	// every policy set it runs. After a policy swap, a marked flow no
	// policy selects any more loses BE_LIBERAL in those of them that are
	// set, and the mark (for the flows it flagged itself, the engine knows
	// the exact directions).
	OwnedDirections flows.Directions
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
	owned    flows.Directions // Config.OwnedDirections

	gen     atomic.Pointer[generation]
	swapped chan struct{} // a policy swap waits for a resync
	// gateActive is set while the gate listens on its queue: new flows of
	// gated policies are then the gate's to flag. gateChanged wakes Run.
	gateActive  atomic.Bool
	gateChanged chan struct{}
	global      counters

	mu       sync.Mutex // guards counters and serializes installs
	counters map[string]*counters

	// beat is the Unix nanosecond time Run last went round its loop idle
	// (see Heartbeat).
	beat atomic.Int64

	// Run's state, touched only by the Run goroutine. Nothing is kept per
	// flow but the outbox's bounded window and, for existingFlows=false
	// policies only, the hashes of the flows they must leave alone.
	out         *outbox
	failures    int               // refused updates since the last flush
	preexisting map[uint64]uint64 // entryHash -> the last resync that saw it
	swept       swept
	epoch       uint64 // resyncs started
}

// generation is one compiled policy set with its counters.
type generation struct {
	sel      *selector.Selector
	gated    selector.Mask // policies with handshake gate
	counters []*counters   // by selector index
	// owned is the union of the directions of this and every earlier
	// generation, and Config.OwnedDirections: what ctguard may have set.
	owned flows.Directions
	// prev is the generation this one replaced (its own prev cleared), for
	// the swap's resync: which policies applied to a flow before.
	prev *generation
}

// New returns an engine for cfg's per-flow policies.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		conn:        cfg.Conn,
		mark:        cfg.MarkBit,
		eventBuf:    cfg.EventBuffer,
		interval:    cfg.ResyncInterval,
		log:         cfg.Logger,
		obs:         cfg.Observer,
		onReady:     cfg.OnReady,
		preexisting: map[uint64]uint64{},
		owned:       cfg.OwnedDirections & flows.Both,
		swapped:     make(chan struct{}, 1),

		gateChanged: make(chan struct{}, 1),
		counters:    map[string]*counters{},
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
	e.out = newOutbox(e.conn, e.answered)
	e.out.failed = func(err error) { e.log.Warn("batched flag updates failed", "err", err) }
	if err := e.install(cfg.Policies); err != nil {
		return nil, err
	}
	return e, nil
}

// SetPolicies swaps the policy set while Run goes on: new events use it at
// once, and Run resyncs with a dump that re-matches every flow (honouring
// existingFlows: for a swapped-in policy, "existing" means existing at the
// swap; a policy keeps applying to the flows it applied to before, by
// name). Matching flows get the wanted directions they lack, directions
// ctguard set that no policy wants any more are cleared, and a flow
// carrying ctguard's mark that no policy selects any more loses what
// ctguard set and the mark. Counters of policies that keep their name carry
// over.
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
	g := &generation{sel: sel, gated: sel.Gated(), counters: make([]*counters, sel.Len()), owned: e.owned}
	e.mu.Lock()
	defer e.mu.Unlock()
	g.owned |= selector.Directions(ps)
	if prev := e.gen.Load(); prev != nil {
		g.owned |= prev.owned
		p := *prev
		p.prev = nil
		g.prev = &p
	}
	for i := range g.counters {
		c := e.counters[sel.Name(i)]
		if c == nil {
			c = &counters{}
			e.counters[sel.Name(i)] = c
		}
		g.counters[i] = c
	}
	e.gen.Store(g)
	return nil
}

// SetGateActive tells the engine whether the gate listens on its queue.
// While it does, the engine leaves the new flows of policies with handshake
// gate to it (it flags them before their SYN-ACK passes); dumps at start
// and periodically still flag whatever the gate missed (flows set up while
// ctguard was down, a queue overflow). When every per-flow policy is gated,
// the engine then stays off conntrack's event stream altogether: the kernel
// builds no events for it and it reads none (the event stream costs more
// CPU per new flow than the gate). When the gate stops, the engine
// subscribes again and resyncs.
func (e *Engine) SetGateActive(on bool) {
	if e.gateActive.Swap(on) != on {
		select {
		case e.gateChanged <- struct{}{}:
		default:
		}
	}
}

// eventsWanted reports whether the engine needs conntrack events: some
// per-flow policy's new flows are not left to an active gate.
func (e *Engine) eventsWanted() bool {
	g := e.gen.Load()
	all := selector.Mask(1)<<uint(g.sel.Len()) - 1
	return g.sel.Len() > 0 && !(e.gateActive.Load() && g.gated == all)
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

// start subscribes to events (unless the gate handles every new flow),
// then dumps and flags the existing flows. A policy swap already pending
// (SetPolicies before Run) still runs its own resync afterwards: it also
// releases flows an earlier ctguard flagged that no policy selects any
// more.
func (e *Engine) start(ctx context.Context) (*subscription, error) {
	var sub *subscription
	if e.eventsWanted() {
		var err error
		if sub, err = subscribe(ctx, e.conn, e.eventBuf); err != nil {
			return nil, err
		}
	}
	if err := e.resync(ctx, resyncStart); err != nil {
		sub.close()
		return nil, err
	}
	return sub, nil
}

// awaitPolicies returns true at once when there are per-flow policies.
// Without any, the engine stays off conntrack's event stream (a listener
// makes the kernel build and send events for every flow): it reports ready
// and waits for SetPolicies to bring some, returning false if ctx ends.
func (e *Engine) awaitPolicies(ctx context.Context, ready func()) bool {
	beat := time.NewTicker(HeartbeatPeriod)
	defer beat.Stop()
	for e.gen.Load().sel.Len() == 0 {
		ready()
		e.beat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return false
		case <-e.swapped:
		case <-beat.C:
		}
	}
	return true
}

// HeartbeatPeriod is how often a Run that waits for work shows it is not
// stuck (Heartbeat).
const HeartbeatPeriod = time.Second

// Heartbeat returns when Run last waited for work: every HeartbeatPeriod
// while it waits, and after each piece of work (an event batch, a resync).
// An old heartbeat means Run is stuck in one piece of work, e.g. a netlink
// call that never returns. Zero until Run starts.
func (e *Engine) Heartbeat() time.Time {
	n := e.beat.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Run subscribes to conntrack events first, then flags the matching flows
// that already exist (policies with existingFlows), then handles events until
// ctx ends (returning nil). On event loss it resyncs with a dump so that no
// matching flow stays unflagged; when the event socket fails otherwise (or
// an event does not decode) it counts a loss, subscribes again (every second
// until it works) and resyncs. A failed resync is retried every second while
// events go on being handled. Run fails only when it cannot subscribe or
// dump at start. Without per-flow policies it does not subscribe until
// SetPolicies brings some. Only one Run may be active per engine.
func (e *Engine) Run(ctx context.Context) error {
	ready := sync.OnceFunc(func() {
		if e.onReady != nil {
			e.onReady()
		}
	})
	sub, ok, err := e.startRetrying(ctx, ready)
	if !ok {
		return err
	}
	l := &runLoop{e: e, sub: sub}
	defer func() { l.sub.close() }()
	ready()
	if e.interval > 0 {
		l.ticker = time.NewTicker(e.interval)
		defer l.ticker.Stop()
	}
	beat := time.NewTicker(HeartbeatPeriod)
	defer beat.Stop()
	for {
		e.beat.Store(time.Now().UnixNano())
		var w wake
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			continue
		case <-e.swapped:
			w = wake{kind: resyncSwap, due: true}
		case <-e.gateChanged:
			w = wake{kind: resyncLoss}
		case <-l.tick():
			w = wake{kind: resyncPeriodic, due: true}
		case <-l.retry.C():
			w = wake{kind: resyncLoss, due: true}
		case <-l.resubscribe.C():
			w = l.resubscribed(ctx)
		case b, ok := <-l.sub.events():
			w = l.events(ctx, b, ok)
		}
		if ctx.Err() != nil {
			return nil
		}
		if w.skip {
			continue
		}
		if l.followGate(ctx) {
			w.due = true
		}
		if w.due {
			l.resync(ctx, w.kind)
		}
	}
}

// startRetrying waits for per-flow policies, then starts (subscribes and
// dumps). A failed start brought by SetPolicies must not end the
// controller: it is retried every retryDelay. ok is false when Run must
// return err (nil when ctx ended).
func (e *Engine) startRetrying(ctx context.Context, ready func()) (sub *subscription, ok bool, err error) {
	delayed := e.gen.Load().sel.Len() == 0
	for {
		if !e.awaitPolicies(ctx, ready) {
			return nil, false, nil
		}
		sub, err := e.start(ctx)
		switch {
		case err == nil:
			return sub, true, nil
		case ctx.Err() != nil:
			return nil, false, nil
		case !delayed:
			return nil, false, err
		}
		e.log.Error("starting the per-flow engine failed, retrying in a second", "err", err)
		select {
		case <-ctx.Done():
			return nil, false, nil
		case <-time.After(retryDelay):
		}
	}
}

// retryDelay is how long the engine waits before retrying a failed
// subscription, start or resync.
const retryDelay = time.Second

// retryTimer is a one-shot retry: armed after a failure, its channel fires
// once retryDelay later; a nil channel (never fires) when not armed.
type retryTimer struct{ c <-chan time.Time }

// arm schedules the retry.
func (r *retryTimer) arm() { r.c = time.After(retryDelay) }

// disarm cancels the retry.
func (r *retryTimer) disarm() { r.c = nil }

// armed reports whether a retry is scheduled.
func (r *retryTimer) armed() bool { return r.c != nil }

// C is the channel that fires when the retry is due.
func (r *retryTimer) C() <-chan time.Time { return r.c }

// wake is what one wakeup of Run's loop asks for.
type wake struct {
	kind resyncKind // why, if a resync is due
	due  bool       // a resync is due
	skip bool       // nothing more to do this time
}

// runLoop is the state of Run's loop.
type runLoop struct {
	e   *Engine
	sub *subscription // nil while off the event stream
	// ticker paces periodic resyncs (nil without ResyncInterval).
	ticker *time.Ticker
	// retry is a failed resync's retry, of kind pending.
	retry   retryTimer
	pending resyncKind
	// resubscribe is a failed subscription's retry.
	resubscribe retryTimer
}

// tick is the periodic resync's channel (nil without one).
func (l *runLoop) tick() <-chan time.Time {
	if l.ticker == nil {
		return nil
	}
	return l.ticker.C
}

// subscribe subscribes to events; on failure it arms the resubscription.
func (l *runLoop) subscribe(ctx context.Context) bool {
	var err error
	if l.sub, err = subscribe(ctx, l.e.conn, l.e.eventBuf); err != nil {
		l.e.log.Error("subscribing to conntrack events failed, retrying in a second", "err", err)
		l.resubscribe.arm()
		return false
	}
	return true
}

// resubscribed retries a failed subscription, if events are still wanted;
// a new subscription is followed by a resync.
func (l *runLoop) resubscribed(ctx context.Context) wake {
	l.resubscribe.disarm()
	if !l.e.eventsWanted() || !l.subscribe(ctx) {
		return wake{skip: true}
	}
	return wake{kind: resyncLoss, due: true}
}

// events handles a batch of events (ok false: the reader stopped). When the
// reader stopped, it subscribes again, then resyncs so that nothing that
// happened in between is missed.
func (l *runLoop) events(ctx context.Context, b batch, ok bool) wake {
	w := wake{kind: resyncLoss}
	var broken bool
	if ok {
		w.due, broken = l.e.handleBatch(ctx, b)
		l.sub.free <- b.evs[:0]
	}
	if ctx.Err() != nil || (ok && !broken) {
		return w
	}
	l.sub.close()
	if !l.subscribe(ctx) {
		return wake{skip: true}
	}
	w.due = true
	return w
}

// followGate keeps the engine off the event stream while the gate handles
// every new flow, and back on when it stops or a policy it does not gate
// arrives; it returns true when a new subscription needs a resync for what
// happened meanwhile.
func (l *runLoop) followGate(ctx context.Context) bool {
	switch want := l.e.eventsWanted(); {
	case want && l.sub == nil && !l.resubscribe.armed():
		return l.subscribe(ctx)
	case !want && l.sub != nil:
		l.sub.close()
		l.sub = nil
		l.resubscribe.disarm()
	}
	return false
}

// resync runs a resync of kind (merged with a failed one's), restarts the
// periodic interval from its end (on a large table events get their turn
// between dumps), and on failure arms its retry: events go on being
// handled meanwhile, a failed dump never stops the engine.
func (l *runLoop) resync(ctx context.Context, kind resyncKind) {
	if l.retry.armed() {
		kind = max(kind, l.pending)
	}
	l.retry.disarm()
	err := l.e.resync(ctx, kind)
	if l.ticker != nil {
		l.ticker.Reset(l.e.interval)
	}
	if err != nil && ctx.Err() == nil {
		l.e.log.Error("resync failed, retrying in a second", "err", err)
		l.retry.arm()
		l.pending = kind
	}
}

// handleBatch handles a batch of events. It reports whether events were
// lost (a resync is due) and whether the event source broke (it must be
// replaced, then a resync is due); both count as a loss.
func (e *Engine) handleBatch(ctx context.Context, b batch) (lost, broken bool) {
	for i := range b.evs {
		e.handle(&b.evs[i], b.at)
	}
	e.flush()
	switch {
	case b.err == nil || ctx.Err() != nil:
		return false, false
	case errors.Is(b.err, flows.ErrEventsLost):
		e.countGlobal(EventsLost)
		e.log.Warn("conntrack events lost, resyncing with a dump")
		return true, false
	default:
		e.countGlobal(EventsLost)
		e.log.Warn("conntrack event socket failed, subscribing again and resyncing", "err", b.err)
		return true, true
	}
}

// batch is what one Receive returned, and when.
type batch struct {
	evs []flows.Event
	err error
	at  time.Time
}

// subscription is an event source with its single reader. A nil
// subscription (while subscribing again) delivers nothing.
type subscription struct {
	src     EventSource
	cancel  context.CancelFunc
	batches <-chan batch
	free    chan<- []flows.Event
}

// subscribe opens an event source and starts its reader.
func subscribe(ctx context.Context, conn Conn, bufBytes int) (*subscription, error) {
	src, err := conn.Subscribe(bufBytes)
	if err != nil {
		return nil, fmt.Errorf("subscribe to conntrack events: %w", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	batches, free := read(rctx, src)
	return &subscription{src: src, cancel: cancel, batches: batches, free: free}, nil
}

// events returns the reader's batches (nil for a nil subscription).
func (s *subscription) events() <-chan batch {
	if s == nil {
		return nil
	}
	return s.batches
}

// close closes the source and waits for the reader to finish.
func (s *subscription) close() {
	if s == nil {
		return
	}
	s.cancel()
	s.src.Close()
	for range s.batches {
	}
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
