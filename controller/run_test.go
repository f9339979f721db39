package controller

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/policy"
	dto "github.com/prometheus/client_model/go"
)

// idleEngine is an Engine that does nothing until ctx ends.
type idleEngine struct{}

func (idleEngine) Run(ctx context.Context) error     { <-ctx.Done(); return nil }
func (idleEngine) SetPolicies([]policy.Policy) error { return nil }
func (idleEngine) Stats() perflow.Snapshot           { return perflow.Snapshot{} }

// TestRunSurvivesClosedTableChanged: nft.Client.Watch closes its channel
// when the monitor gives up. Run used to select the closed channel again
// and again, reconciling in a busy loop (thousands of passes a second).
func TestRunSurvivesClosedTableChanged(t *testing.T) {
	f := newFixture(t)
	set := mustParse(t, dropDoc)
	changed := make(chan struct{})
	close(changed)
	m := metrics.New()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := f.c.Run(ctx, RunConfig{
		Load:         func() (PolicySet, error) { return set, nil },
		TableChanged: changed,
		Resync:       time.Hour,
		Engine:       idleEngine{},
		Metrics:      m,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The start, and one check when the channel is seen closed.
	var runs dto.Metric
	if err := m.ReconcileRuns.Write(&runs); err != nil {
		t.Fatal(err)
	}
	if got := runs.GetCounter().GetValue(); got != 2 {
		t.Fatalf("%v reconcile passes in 300ms with the table notifications closed, want 2", got)
	}
}

// TestRunKeepsReportingRejectedPolicy: a rejected edit stays in the live
// status until the source loads again. It used to be wiped by the next
// successful resync of the last good policy.
func TestRunKeepsReportingRejectedPolicy(t *testing.T) {
	f := newFixture(t)
	good := mustParse(t, dropDoc)
	rejected := errors.New(`test.yaml:8: invalid CIDR "10.0.0.300/8"`)
	loadErr := error(nil)
	var mu sync.Mutex
	var last LiveStatus
	reload := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- f.c.Run(ctx, RunConfig{
			Load: func() (PolicySet, error) {
				mu.Lock()
				defer mu.Unlock()
				return good, loadErr
			},
			Reload:  reload,
			Resync:  5 * time.Millisecond,
			Engine:  idleEngine{},
			Metrics: metrics.New(),
			Publish: func(st LiveStatus) {
				mu.Lock()
				defer mu.Unlock()
				last = st
			},
		})
	}()
	lastError := func() string {
		mu.Lock()
		defer mu.Unlock()
		return last.LastError
	}
	for started := false; !started; time.Sleep(time.Millisecond) {
		mu.Lock()
		started = !last.UpdatedAt.IsZero()
		mu.Unlock()
	}
	mu.Lock()
	loadErr = rejected
	mu.Unlock()
	reload <- struct{}{}
	time.Sleep(100 * time.Millisecond) // many resyncs
	if got := lastError(); got != rejected.Error() {
		t.Fatalf("live status after a rejected edit and resyncs: LastError %q, want %q", got, rejected)
	}
	mu.Lock()
	loadErr = nil
	mu.Unlock()
	reload <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	if got := lastError(); got != "" {
		t.Fatalf("live status after the source loads again: LastError %q, want none", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// adoptingEngine records the policy sets handed to it.
type adoptingEngine struct {
	idleEngine
	mu   sync.Mutex
	sets [][]policy.Policy
}

func (a *adoptingEngine) SetPolicies(ps []policy.Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sets = append(a.sets, ps)
	return nil
}

func (a *adoptingEngine) adopted() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sets)
}

// TestRunRetriesRefusedReload: a valid new policy the kernel refuses once
// is applied at a later resync instead of being dropped, and the engine
// gets it only once it is applied (and journaled).
func TestRunRetriesRefusedReload(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	current := mustParse(t, dropDoc)
	reload := make(chan struct{}, 1)
	published := make(chan LiveStatus, 100)
	engine := &adoptingEngine{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- f.c.Run(ctx, RunConfig{
			Load: func() (PolicySet, error) {
				mu.Lock()
				defer mu.Unlock()
				return current, nil
			},
			Reload:  reload,
			Resync:  5 * time.Millisecond,
			Engine:  engine,
			Metrics: metrics.New(),
			Publish: func(st LiveStatus) {
				select {
				case published <- st:
				default:
				}
			},
		})
	}()
	<-published // started
	mu.Lock()
	current = mustParse(t, globalDoc)
	mu.Unlock()
	f.tables.FailNext(errors.New("injected: kernel refused the batch"))
	reload <- struct{}{}
	deadline := time.After(5 * time.Second)
	sawFailing := false
	for {
		tbl, _ := f.tables.Read()
		if tbl != nil && len(tbl.Chains) == 1 && tbl.Chains[0].Rules[0].Policy == "emergency" {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the refused policy was never retried; table %v", tbl)
		case st := <-published:
			sawFailing = sawFailing || st.ReconcileFailing
			if st.ReconcileFailing && engine.adopted() != 1 {
				t.Fatalf("the engine got the refused policy before it was applied (%d sets)", engine.adopted())
			}
		}
	}
	if !sawFailing {
		t.Error("no live status reported the failing reconcile")
	}
	for deadline := time.Now().Add(5 * time.Second); engine.adopted() != 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := engine.adopted(); n != 2 {
		t.Fatalf("engine got %d policy sets, want 2 (start, then the retried reload)", n)
	}
	for st := range published {
		if !st.ReconcileFailing {
			break // recovered
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// countingEngine is an idle Engine whose Stats count their calls.
type countingEngine struct {
	idleEngine
	mu    sync.Mutex
	stats uint64
}

func (e *countingEngine) Stats() perflow.Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stats++
	return perflow.Snapshot{FlowsSeen: e.stats}
}

// TestRunPublishesBetweenReconciles: with the resync an hour away, the
// live status still goes out every PublishEvery with fresh engine counters,
// and the loop beats.
func TestRunPublishesBetweenReconciles(t *testing.T) {
	f := newFixture(t)
	set := mustParse(t, dropDoc)
	var mu sync.Mutex
	var seen []uint64
	var beats int
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- f.c.Run(ctx, RunConfig{
			Load:         func() (PolicySet, error) { return set, nil },
			Resync:       time.Hour,
			Engine:       &countingEngine{},
			Metrics:      metrics.New(),
			PublishEvery: 5 * time.Millisecond,
			Beat: func() {
				mu.Lock()
				beats++
				mu.Unlock()
			},
			Publish: func(st LiveStatus) {
				mu.Lock()
				seen = append(seen, st.Engine.FlowsSeen)
				mu.Unlock()
			},
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, b := len(seen), beats
		mu.Unlock()
		if n >= 5 && b >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d publishes and %d beats in 10s with a 5ms period", n, b)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("published engine counters %v: not fresh each time", seen)
		}
	}
}
