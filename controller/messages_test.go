package controller

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/journal"
)

// TestDamagedJournalLeavesStatusWorking is part of finding 8 of issue 13:
// an empty or truncated journal.json broke every command, status included,
// with "unexpected end of JSON input" and no hint.
func TestDamagedJournalLeavesStatusWorking(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "truncated": `{"version": 1, "revisions": [{"num`} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.store.Path(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := f.c.Status(ctx)
			if err != nil {
				t.Fatalf("status with a damaged journal: %v", err)
			}
			if !strings.Contains(st.JournalError, "mv journal.json") {
				t.Errorf("status does not say the way out: %q", st.JournalError)
			}
			if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); !errors.Is(err, journal.ErrDamaged) {
				t.Errorf("apply over a damaged journal: %v, want ErrDamaged", err)
			}
		})
	}
}

// TestStaleFlagsClearedWherePoliciesChange is finding 4 of issue 13 in the
// controller: a one-shot apply of the same policies, or of narrower ones,
// clears flags ctguard set that no policy wants, and plan shows them.
func TestStaleFlagsClearedWherePoliciesChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, perFlowDoc)
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	f.flows.stale = 1000 // e.g. left by a controller killed before a change
	p, err := f.c.Plan(ctx, set)
	if err != nil || p.Empty() || p.StaleFlags == nil || p.StaleFlags.Flows != 1000 {
		t.Fatalf("plan with stale flags: %+v, %v", p.StaleFlags, err)
	}
	res, err := f.c.Apply(ctx, set)
	if err != nil || res.ClearedStale != 1000 {
		t.Fatalf("apply: cleared %d, %v; want 1000", res.ClearedStale, err)
	}
	if p, err := f.c.Plan(ctx, set); err != nil || !p.Empty() {
		t.Fatalf("plan after apply: empty=%v err=%v", p.Empty(), err)
	}
	// A new revision clears them too.
	f.flows.stale = 7
	res, err = f.c.Apply(ctx, mustParse(t, dropDoc))
	if err != nil || res.ClearedStale != 7 {
		t.Fatalf("apply of other policies: cleared %d, %v; want 7", res.ClearedStale, err)
	}
}
