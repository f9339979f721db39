package controller

import (
	"context"
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
