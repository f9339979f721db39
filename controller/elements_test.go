package controller

import (
	"context"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
)

// recordingTables records which writes the controller makes.
type recordingTables struct {
	*nft.Fake
	writes []string
}

func (r *recordingTables) Replace(t ruleset.Table) error {
	r.writes = append(r.writes, "replace")
	return r.Fake.Replace(t)
}

func (r *recordingTables) UpdateElements(d []ruleset.SetDelta) error {
	r.writes = append(r.writes, "update-elements")
	return r.Fake.UpdateElements(d)
}

// TestApplyChangesOnlyElements: a policy edit that only changes addresses
// is applied as an element delta (no replace), counters keep their values,
// and a change of anything else replaces the table.
func TestApplyChangesOnlyElements(t *testing.T) {
	f := newFixture(t)
	rec := &recordingTables{Fake: f.tables}
	c := New(Config{Tables: rec, Sysctls: f.sys, Flows: f.flows, Store: f.store, NetNS: "net:[1]"})
	ctx := context.Background()
	if _, err := c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	counter := ruleset.CounterName("wan", ruleset.HookInput, ruleset.PurposeDropInvalid, ruleset.NFProtoIPv4)
	if !f.tables.Hit(counter, 5, 300) {
		t.Fatalf("no counter %s", counter)
	}
	edited := strings.Replace(dropDoc, "[198.19.0.0/16]", "[198.19.0.0/16, 203.0.113.0/24]", 1)
	res, err := c.Apply(ctx, mustParse(t, edited))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rec.writes, ",") != "replace,update-elements" {
		t.Errorf("writes %v, want a replace, then an element update", rec.writes)
	}
	if tc := res.Plan.Table; tc == nil || len(tc.Sets) != 1 || len(tc.Sets[0].ElementsAdded) != 1 || len(tc.Chains)+len(tc.Counters) != 0 {
		t.Errorf("plan of the edit: %+v", res.Plan.Table)
	}
	counters, _ := f.tables.Counters()
	if got := counters[counter]; got.Packets != 5 || got.Bytes != 300 {
		t.Errorf("counter after the edit: %+v", got)
	}
	got, err := f.tables.Read()
	if err != nil {
		t.Fatal(err)
	}
	if want := c.build(mustParse(t, edited).Policies); !ruleset.Equal(got, &want) {
		t.Errorf("table after the edit:\n%s\nwant\n%s", got, &want)
	}
	// Another port is a new set element too; another interface hook is not.
	if _, err := c.Apply(ctx, mustParse(t, strings.Replace(edited, "{interfaces: [eth0]}", "{interfaces: [eth0], hooks: [input, forward]}", 1))); err != nil {
		t.Fatal(err)
	}
	if last := rec.writes[len(rec.writes)-1]; last != "replace" {
		t.Errorf("a new chain was written by %s", last)
	}
}
