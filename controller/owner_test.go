package controller

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
)

// operatorTable is a table inet ctguard someone else made.
var operatorTable = ruleset.Table{Counters: []ruleset.Counter{{Name: "c42", Packets: 42}}}

// TestForeignTableIsNeverReplacedOrDeleted is finding 2 of issue 13: an
// operator's table inet ctguard was replaced by apply and run and not
// restored by rollback --all.
func TestForeignTableIsNeverReplacedOrDeleted(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.tables.SetForeign(operatorTable, "chain raw (type filter, hook prerouting, priority -300, policy drop, 0 rules)", "counter c42")
	set := mustParse(t, dropDoc)

	_, err := f.c.Plan(ctx, set)
	if !errors.Is(err, nft.ErrForeignTable) || !strings.Contains(err.Error(), "chain raw") || !strings.Contains(err.Error(), "nft delete table inet ctguard") {
		t.Fatalf("plan: %v, want ErrForeignTable naming the contents and the way out", err)
	}
	if _, err := f.c.Apply(ctx, set); !errors.Is(err, nft.ErrForeignTable) {
		t.Fatalf("apply: %v, want ErrForeignTable", err)
	}
	if got, _ := f.tables.Counters(); got["c42"].Packets != 42 {
		t.Fatal("apply touched the operator's table")
	}
	if j, _ := f.store.Load(); j.Baseline != nil {
		t.Fatal("a refused apply journaled a revision")
	}
	st, err := f.c.Status(ctx)
	if err != nil || st.ForeignTable == "" {
		t.Fatalf("status: foreign %q, err %v", st.ForeignTable, err)
	}

	// rollback --all of an earlier apply leaves a table made since alone.
	if err := f.tables.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	f.tables.SetForeign(operatorTable, "counter c42")
	res, err := f.c.Rollback(ctx, true)
	if err != nil || !res.ForeignTableKept {
		t.Fatalf("rollback --all: %+v, %v; want the foreign table kept", res, err)
	}
	if got, _ := f.tables.Counters(); got["c42"].Packets != 42 {
		t.Fatal("rollback --all deleted the operator's table")
	}
}

// TestUnmarkedTableOfTheJournalIsCtguards: a table an older ctguard made
// (no mark) that is exactly what the journal applied stays ctguard's.
func TestUnmarkedTableOfTheJournalIsCtguards(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, dropDoc)
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	current, _ := f.tables.Read()
	f.tables.SetForeign(*current)
	p, err := f.c.Plan(ctx, set)
	if err != nil || !p.Empty() {
		t.Fatalf("plan over an unmarked journaled table: empty=%v err=%v", p.Empty(), err)
	}
	res, err := f.c.Rollback(ctx, true)
	if err != nil || res.ForeignTableKept {
		t.Fatalf("rollback --all: %+v, %v", res, err)
	}
	if got, _ := f.tables.Read(); got != nil {
		t.Fatal("rollback --all left ctguard's unmarked table")
	}
}
