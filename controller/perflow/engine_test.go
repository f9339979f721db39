package perflow

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

// perFlow is a per-flow policy; without nat or natOnly it selects any flow
// (flows made through ctnetlink carry no NAT status).
func perFlow(name string, m policy.Match, existing bool) policy.Policy {
	if m.NAT == nil && m.NATOnly == nil {
		m.NAT = []policy.NATKind{policy.NATAny}
	}
	return policytest.New(policy.Document{
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow, ExistingFlows: &existing},
			Match:      m,
		},
	})
}

// web selects flows to port 443.
var web = perFlow("web", policy.Match{DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}, true)

func tcpFlow(sport, dport uint16, state flows.TCPState) flows.Flow {
	return flows.Flow{
		Proto: flows.ProtoTCP,
		Orig: flows.Tuple{Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.19.0.10"),
			SrcPort: sport, DstPort: dport},
		Reply: flows.Tuple{Src: netip.MustParseAddr("198.19.0.10"), Dst: netip.MustParseAddr("198.18.0.1"),
			SrcPort: dport, DstPort: sport},
		Status:       flows.StatusSrcNAT,
		HasProtoInfo: true, HasFlags: true, State: state,
		OrigFlags: 0x05, ReplyFlags: 0x05, // WINDOW_SCALE | SACK_PERM
	}
}

func ev(t flows.EventType, f flows.Flow) *flows.Event {
	if t == flows.EventDestroy {
		f.HasFlags = false
	}
	return &flows.Event{Type: t, Flow: f}
}

// newEngine returns an engine over conn whose Run state is initialised, for
// tests that call handle directly.
func newEngine(t testing.TB, conn Conn, obs Observer, ps ...policy.Policy) *Engine {
	t.Helper()
	e, err := New(Config{Policies: ps, Conn: conn, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// step handles one event and sends the updates it queued, as Run does at
// the end of each event batch.
func step(e *Engine, ev *flows.Event) {
	e.handle(ev, time.Now())
	e.flush()
}

func sets(calls []string) int {
	n := 0
	for _, c := range calls {
		if strings.HasPrefix(c, "set ") {
			n++
		}
	}
	return n
}

// echo feeds the UPDATE events the fake kernel queued back to the engine.
func echo(e *Engine, c *fakeConn) {
	for {
		select {
		case b := <-c.src.ch:
			for i := range b.evs {
				step(e, &b.evs[i])
			}
		default:
			return
		}
	}
}

func TestHandleNewFlagsConfirmsOnce(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPSynSent)
	c := newFakeConn(f)
	c.Subscribe(0)
	e := newEngine(t, c, nil, web)
	step(e, ev(flows.EventNew, f))
	echo(e, c) // the flag's own UPDATE: confirmed, not flagged again
	echo(e, c)
	if got := c.callLog(); !slices.Equal(got, []string{"subscribe", "set 198.18.1.2:40000 -> 198.19.0.10:443 reply"}) {
		t.Fatalf("calls %q", got)
	}
	got := c.get(f.Key())
	if got.Liberal() != flows.Reply || got.Mark != uint32(flows.DefaultMarkBit) || got.OrigFlags != 0x05 {
		t.Fatalf("flow after flag: %+v", got)
	}
	want := PolicyStats{Matched: 1, Flagged: 1, Confirmed: 1}
	if s := e.Stats(); s.Policies["web"] != want || s.FlowsSeen != 1 {
		t.Fatalf("stats %+v, want web %+v", s, want)
	}
}

func TestHandleNew(t *testing.T) {
	liberal := tcpFlow(40000, 443, flows.TCPEstablished)
	liberal.OrigFlags |= flows.BeLiberal
	liberal.ReplyFlags |= flows.BeLiberal
	tests := []struct {
		name   string
		f      flows.Flow
		setErr error
		want   PolicyStats
		sets   int
	}{
		{"not matching", tcpFlow(40000, 80, flows.TCPSynSent), nil, PolicyStats{}, 0},
		{"already liberal (mid-stream pickup)", liberal, nil, PolicyStats{Matched: 1, AlreadyLiberal: 1}, 0},
		{"refused", tcpFlow(40000, 443, flows.TCPSynSent), errRefused, PolicyStats{Matched: 1, Failed: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeConn(tt.f)
			c.setErr = tt.setErr
			e := newEngine(t, c, nil, web)
			step(e, ev(flows.EventNew, tt.f))
			if s := e.Stats().Policies["web"]; s != tt.want {
				t.Fatalf("stats %+v, want %+v", s, tt.want)
			}
			if n := sets(c.callLog()); n != tt.sets {
				t.Fatalf("%d flag updates, want %d", n, tt.sets)
			}
		})
	}
}

func TestHandleGoneIsNotAnError(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPSynSent)
	c := newFakeConn() // the flow already vanished
	e := newEngine(t, c, nil, web)
	step(e, ev(flows.EventNew, f))
	if s := e.Stats().Policies["web"]; s != (PolicyStats{Matched: 1, Gone: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

// TestReflagWhenKernelWipesFlag plays an older kernel (before "preserve
// liberal flag in tcp options"): the SYN-ACK wipes the REPLY flag set at NEW.
func TestReflagWhenKernelWipesFlag(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPSynSent)
	c := newFakeConn(f)
	c.Subscribe(0)
	e := newEngine(t, c, nil, web)
	step(e, ev(flows.EventNew, f))

	// An UPDATE queued before the flag update still shows no flag: no reflag
	// while the flag is pending.
	step(e, ev(flows.EventUpdate, tcpFlow(40000, 443, flows.TCPEstablished)))
	echo(e, c) // confirmation
	if n := sets(c.callLog()); n != 1 {
		t.Fatalf("%d flag updates before the wipe, want 1", n)
	}

	wiped := c.get(f.Key())
	wiped.ReplyFlags = 0x05
	wiped.State = flows.TCPSynRecv
	c.put(*wiped)
	step(e, ev(flows.EventUpdate, *wiped)) // not ESTABLISHED yet: wait
	if n := sets(c.callLog()); n != 1 {
		t.Fatalf("re-flagged in SYN_RECV")
	}
	wiped.State = flows.TCPEstablished
	c.put(*wiped)
	step(e, ev(flows.EventUpdate, *wiped))
	echo(e, c)
	if n := sets(c.callLog()); n != 2 {
		t.Fatalf("%d flag updates after the wipe, want 2", n)
	}
	want := PolicyStats{Matched: 1, Flagged: 2, Confirmed: 2, Reflagged: 1}
	if s := e.Stats().Policies["web"]; s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	if c.get(f.Key()).Liberal() != flows.Reply {
		t.Fatal("flag not restored")
	}
}

// TestEndedByReset counts ends from what the events carry: the UPDATE
// reaching CLOSE or TIME_WAIT (a reset when the flow was assured), or the
// DESTROY of a flow that ended otherwise (a timeout, a deletion).
func TestEndedByReset(t *testing.T) {
	tests := []struct {
		name   string
		states []flows.TCPState // UPDATE states after ESTABLISHED
		final  flows.TCPState   // DESTROY state
		reset  bool
	}{
		{"rst while established", []flows.TCPState{flows.TCPClose}, flows.TCPClose, true},
		{"orderly close", []flows.TCPState{flows.TCPFinWait, flows.TCPLastAck, flows.TCPTimeWait}, flows.TCPTimeWait, false},
		{"timed out", nil, flows.TCPEstablished, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tcpFlow(40000, 443, flows.TCPEstablished)
			f.Status |= statusAssured
			c := newFakeConn(f)
			e := newEngine(t, c, nil, web)
			step(e, ev(flows.EventNew, f))
			for _, s := range tt.states {
				u := c.get(f.Key())
				u.State = s
				step(e, ev(flows.EventUpdate, *u))
			}
			d := *c.get(f.Key())
			d.State = tt.final
			step(e, ev(flows.EventDestroy, d))
			s := e.Stats().Policies["web"]
			if s.Ended != 1 || (s.EndedByReset == 1) != tt.reset {
				t.Fatalf("stats %+v, want ended 1, by reset %v", s, tt.reset)
			}
		})
	}
}

type recorder struct {
	mu        sync.Mutex
	counts    map[string]int
	latencies int
}

func (r *recorder) Count(c Counter, p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[c.String()+"/"+p]++
}

func (r *recorder) FlagLatency(string, float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies++
}

func TestObserver(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPSynSent)
	c := newFakeConn(f)
	c.Subscribe(0)
	rec := &recorder{counts: map[string]int{}}
	e := newEngine(t, c, rec, web, perFlow("all", policy.Match{}, true))
	step(e, ev(flows.EventNew, f))
	echo(e, c)
	want := map[string]int{
		"flows_seen/": 1, "matched/web": 1, "matched/all": 1, "flagged/web": 1, "flagged/all": 1,
		"confirmed/web": 1, "confirmed/all": 1,
	}
	if fmt.Sprint(rec.counts) != fmt.Sprint(want) || rec.latencies != 2 {
		t.Fatalf("observer saw %v and %d latencies, want %v and 2", rec.counts, rec.latencies, want)
	}
}

// run starts e.Run and returns a function that stops it and returns its error.
func run(t *testing.T, e *Engine) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}
}

// waitFor polls cond every millisecond; its generous deadline only catches
// hangs (no timing asserts).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRunFlagsExistingFlowsAfterSubscribing(t *testing.T) {
	old := tcpFlow(40000, 443, flows.TCPEstablished)
	oldHTTP := tcpFlow(40001, 80, flows.TCPEstablished)
	c := newFakeConn(old, oldHTTP)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	e, err := New(Config{Policies: []policy.Policy{web, fresh}, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "the confirmation", func() bool { return e.Stats().Policies["web"].Confirmed == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	calls := c.callLog()
	want := []string{"subscribe", "dump", "set 198.18.1.2:40000 -> 198.19.0.10:443 reply"}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %q, want %q: subscribe, dump, then only the port-443 flow flagged", calls, want)
	}
	if c.get(oldHTTP.Key()).Liberal() != 0 {
		t.Fatal("an existingFlows=false policy flagged an existing flow")
	}
}

// TestRunResyncsAfterLoss loses the NEW events of two flows: the resync flags
// the new one, and still leaves the flow that existed before alone for the
// existingFlows=false policy.
func TestRunResyncsAfterLoss(t *testing.T) {
	oldHTTP := tcpFlow(40001, 80, flows.TCPEstablished)
	c := newFakeConn(oldHTTP)
	fresh := perFlow("fresh", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, false)
	e, err := New(Config{Policies: []policy.Policy{web, fresh}, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "the start dump", func() bool { return slices.Contains(c.callLog(), "dump") })
	lostWeb, lostHTTP := tcpFlow(40002, 443, flows.TCPSynSent), tcpFlow(40003, 80, flows.TCPSynSent)
	c.put(lostWeb)
	c.put(lostHTTP)
	c.send(fakeBatch{err: flows.ErrEventsLost})
	waitFor(t, "the resync's confirmations", func() bool {
		s := e.Stats()
		return s.Policies["web"].Confirmed == 1 && s.Policies["fresh"].Confirmed == 1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := e.Stats()
	if s.EventsLost != 1 || s.Resyncs != 1 {
		t.Fatalf("stats %+v, want one loss, one resync", s)
	}
	if c.get(lostWeb.Key()).Liberal() != flows.Reply || c.get(lostHTTP.Key()).Liberal() != flows.Reply {
		t.Fatal("a flow whose NEW event was lost stays unflagged")
	}
	if c.get(oldHTTP.Key()).Liberal() != 0 {
		t.Fatal("the resync flagged a pre-existing flow for an existingFlows=false policy")
	}
}

func TestSetPoliciesResyncsAndKeepsCounters(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	http := tcpFlow(40001, 80, flows.TCPEstablished)
	c := newFakeConn(f, http)
	e, err := New(Config{Policies: []policy.Policy{web}, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "web's confirmation", func() bool { return e.Stats().Policies["web"].Confirmed == 1 })
	all := perFlow("all", policy.Match{}, true)
	if err := e.SetPolicies([]policy.Policy{web, all}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the swap's resync", func() bool { return e.Stats().Policies["all"].Confirmed == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := e.Stats()
	if s.Policies["web"].Flagged != 1 || s.Policies["all"].Matched != 2 || s.Policies["all"].Flagged != 1 || s.Resyncs != 1 {
		t.Fatalf("stats %+v", s)
	}
	if c.get(http.Key()).Liberal() != flows.Reply {
		t.Fatal("the new policy did not flag the existing flow")
	}
}

func TestPlan(t *testing.T) {
	var fs []flows.Flow
	for p := range uint16(7) {
		fs = append(fs, tcpFlow(40000+p, 443, flows.TCPEstablished))
	}
	flagged := tcpFlow(41000, 443, flows.TCPEstablished)
	flagged.ReplyFlags |= flows.BeLiberal
	fs = append(fs, flagged, tcpFlow(42000, 80, flows.TCPEstablished))
	fresh := perFlow("fresh", policy.Match{}, false)
	c := newFakeConn(fs...)
	plan, err := Plan(context.Background(), c, compile(t, web, fresh))
	if err != nil {
		t.Fatal(err)
	}
	w := plan["web"]
	if w.Matching != 7 || len(w.Sample) != PlanSampleSize || w.Sample[0] != "198.18.1.2:40000 -> 198.19.0.10:443" {
		t.Fatalf("web plan %+v", w)
	}
	if f, ok := plan["fresh"]; !ok || f.Matching != 0 {
		t.Fatalf("fresh plan %+v (present %v), want an empty entry", f, ok)
	}
}

func TestRollbackClearsOnlyMarkedFlows(t *testing.T) {
	ours := tcpFlow(40000, 443, flows.TCPEstablished)
	ours.ReplyFlags |= flows.BeLiberal
	ours.Mark = uint32(flows.DefaultMarkBit) | 0x1
	kernel := tcpFlow(40001, 443, flows.TCPEstablished)
	kernel.OrigFlags |= flows.BeLiberal
	kernel.ReplyFlags |= flows.BeLiberal
	kernel.Mark = 0x1
	c := newFakeConn(ours, kernel)
	n, err := Rollback(context.Background(), c, 0, flows.Reply)
	if err != nil || n != 1 {
		t.Fatalf("Rollback = %d, %v; want 1", n, err)
	}
	if got := c.get(ours.Key()); got.Liberal() != 0 || got.Mark != 0x1 {
		t.Fatalf("ctguard's flow after rollback: %+v", got)
	}
	if got := c.get(kernel.Key()); got.Liberal() != flows.Both {
		t.Fatalf("someone else's flow lost its flag: %+v", got)
	}
}

// TestPeriodicResync: something clears the flag without any event; the
// periodic resync flags the flow again.
func TestPeriodicResync(t *testing.T) {
	f := tcpFlow(40000, 443, flows.TCPEstablished)
	c := newFakeConn(f)
	e, err := New(Config{Policies: []policy.Policy{web}, Conn: c, ResyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "the first flag", func() bool { return c.get(f.Key()).Liberal() == flows.Reply })
	c.put(f) // flag and mark cleared behind the engine's back
	waitFor(t, "the flag again", func() bool { return e.Stats().Policies["web"].Flagged >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c.get(f.Key()).Liberal() != flows.Reply {
		t.Fatal("flag not restored")
	}
}

// TestFailedResyncIsRetried: a dump failing after a loss does not stop the
// engine; it retries and flags the flow whose event was lost.
func TestFailedResyncIsRetried(t *testing.T) {
	c := newFakeConn()
	e, err := New(Config{Policies: []policy.Policy{web}, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, e)
	waitFor(t, "the start dump", func() bool { return slices.Contains(c.callLog(), "dump") })
	lost := tcpFlow(40000, 443, flows.TCPSynSent)
	c.mu.Lock()
	c.dumpFails = 1
	c.mu.Unlock()
	c.put(lost)
	c.send(fakeBatch{err: flows.ErrEventsLost})
	live := tcpFlow(40001, 443, flows.TCPSynSent)
	c.put(live)
	c.send(fakeBatch{evs: []flows.Event{{Type: flows.EventNew, Flow: live}}})
	waitFor(t, "both flags", func() bool {
		return c.get(lost.Key()).Liberal() == flows.Reply && c.get(live.Key()).Liberal() == flows.Reply
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(); s.Resyncs != 2 {
		t.Fatalf("%d resyncs, want the failed one and its retry", s.Resyncs)
	}
}

func TestRunCallsOnReadyAfterStartResync(t *testing.T) {
	ready := make(chan struct{})
	conn := newFakeConn()
	e, err := New(Config{Conn: conn, OnReady: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run returned before OnReady: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("OnReady not called within 5s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunWithoutPoliciesStaysOffTheEventStream(t *testing.T) {
	conn := newFakeConn()
	ready := make(chan struct{})
	e, err := New(Config{Conn: conn, OnReady: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	<-ready
	if n := conn.subscriptions(); n != 0 {
		t.Fatalf("subscribed %d times with no per-flow policy", n)
	}
	if err := e.SetPolicies([]policy.Policy{perFlow("late", policy.Match{}, true)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for conn.subscriptions() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if conn.subscriptions() == 0 {
		t.Fatal("no subscription after SetPolicies brought a per-flow policy")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// subscriptions counts the fake's Subscribe calls.
func (c *fakeConn) subscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if call == "subscribe" {
			n++
		}
	}
	return n
}

// TestGateTakesTheEventStream checks that while the gate handles every
// per-flow policy's new flows the engine does not subscribe to events, and
// that it subscribes (and resyncs) when the gate stops.
func TestGateTakesTheEventStream(t *testing.T) {
	c := newFakeConn()
	e, err := New(Config{Policies: []policy.Policy{web}, Conn: c, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.SetGateActive(true)
	ready := make(chan struct{})
	e.onReady = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	<-ready
	if n := c.subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions with the gate active, want none", n)
	}
	e.SetGateActive(false)
	deadline := time.Now().Add(5 * time.Second)
	for c.subscriptions() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := c.subscriptions(); n != 1 {
		t.Fatalf("%d subscriptions after the gate stopped, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
