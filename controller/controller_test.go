package controller

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/policy"
)

// fakeSysctls is an in-memory Sysctls.
type fakeSysctls struct {
	values map[string]string
	sets   int
}

func (f *fakeSysctls) Get(name string) (string, error) { return f.values[name], nil }
func (f *fakeSysctls) Set(name, value string) error {
	f.values[name] = value
	f.sets++
	return nil
}

// fakeFlows is a FlowTable counting calls; stale is how many flows carry
// a flag no policy wants until ClearUnwanted clears them.
type fakeFlows struct{ flagged, cleared, stale int }

func (f *fakeFlows) Plan(context.Context, []policy.Policy) (map[string]perflow.PlanEntry, error) {
	return map[string]perflow.PlanEntry{}, nil
}
func (f *fakeFlows) FlagExisting(context.Context, []policy.Policy) (int, error) {
	f.flagged++
	return 3, nil
}
func (f *fakeFlows) ClearOwned(context.Context, flows.Directions) (int, error) {
	f.cleared++
	return 3, nil
}
func (f *fakeFlows) Invalid(context.Context) (uint64, error) { return 7, nil }
func (f *fakeFlows) FindUnwanted(context.Context, []policy.Policy, flows.Directions) (perflow.Unwanted, error) {
	return perflow.Unwanted{Flows: f.stale}, nil
}
func (f *fakeFlows) ClearUnwanted(context.Context, []policy.Policy, flows.Directions) (perflow.Unwanted, error) {
	n := f.stale
	f.stale = 0
	f.cleared++
	return perflow.Unwanted{Flows: n}, nil
}

type fixture struct {
	c      *Controller
	tables *nft.Fake
	sys    *fakeSysctls
	flows  *fakeFlows
	store  *journal.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		tables: nft.NewFake(),
		sys:    &fakeSysctls{values: map[string]string{sysctl.BeLiberal: "0"}},
		flows:  &fakeFlows{},
		store:  store,
	}
	f.c = New(Config{Tables: f.tables, Sysctls: f.sys, Flows: f.flows, Store: store, NetNS: "net:[1]"})
	return f
}

func mustParse(t *testing.T, doc string) PolicySet {
	t.Helper()
	ps, err := policy.Parse("test.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return PolicySet{Source: "test.yaml", Policies: ps}
}

const dropDoc = `
apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: wan}
spec:
  workaround: dropInvalid
  dropInvalid: {interfaces: [eth0]}
  match: {destinations: [198.19.0.0/16], destinationPorts: [443]}
`

const perFlowDoc = `
apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: egress}
spec:
  workaround: liberal
  match: {sources: [198.18.1.0/24]}
`

const globalDoc = `
apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: emergency}
spec:
  workaround: liberal
  liberal: {scope: global}
`

func TestApplyIsIdempotent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, dropDoc)
	res, err := f.c.Apply(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if res.Plan.Empty() || res.Revision != 1 {
		t.Fatalf("first apply: plan empty=%v revision=%d", res.Plan.Empty(), res.Revision)
	}
	res, err = f.c.Apply(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Plan.Empty() || res.Revision != 1 {
		t.Fatalf("second apply: plan empty=%v revision=%d, want empty and revision 1", res.Plan.Empty(), res.Revision)
	}
	p, err := f.c.Plan(ctx, set)
	if err != nil || !p.Empty() {
		t.Fatalf("plan after apply: empty=%v err=%v", p.Empty(), err)
	}
	j, _ := f.store.Load()
	if len(j.Revisions) != 1 || j.Pending != nil {
		t.Fatalf("journal: %d revisions, pending %v; want 1 and none", len(j.Revisions), j.Pending)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	f := newFixture(t)
	p, err := f.c.Plan(context.Background(), mustParse(t, globalDoc))
	if err != nil {
		t.Fatal(err)
	}
	if p.Empty() {
		t.Fatal("plan for a new policy is empty")
	}
	if tbl, _ := f.tables.Read(); tbl != nil || f.sys.sets != 0 {
		t.Fatalf("plan touched the kernel: table %v, sysctl writes %d", tbl, f.sys.sets)
	}
	if j, _ := f.store.Load(); j.Baseline != nil {
		t.Fatal("plan wrote the journal")
	}
}

func TestGlobalLiberalRollbackRestoresBaseline(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, globalDoc)); err != nil {
		t.Fatal(err)
	}
	if got := f.sys.values[sysctl.BeLiberal]; got != "1" {
		t.Fatalf("be_liberal = %s after a global policy, want 1", got)
	}
	if _, err := f.c.Rollback(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := f.sys.values[sysctl.BeLiberal]; got != "0" {
		t.Fatalf("be_liberal = %s after rollback --all, want the baseline 0", got)
	}
	if tbl, _ := f.tables.Read(); tbl != nil {
		t.Fatal("table left after rollback --all")
	}
	if _, err := f.c.Rollback(ctx, true); !errors.Is(err, ErrNothingToRollBack) {
		t.Fatalf("second rollback: %v, want ErrNothingToRollBack", err)
	}
}

func TestRollbackReturnsToPreviousRevision(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	first, second := mustParse(t, dropDoc), mustParse(t, perFlowDoc)
	if _, err := f.c.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	want, _ := f.tables.Read()
	if _, err := f.c.Apply(ctx, second); err != nil {
		t.Fatal(err)
	}
	if f.flows.flagged != 1 {
		t.Fatalf("existing flows flagged %d times, want 1", f.flows.flagged)
	}
	f.flows.stale = 3 // flagged by the perFlow policy rolled back
	res, err := f.c.Rollback(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.tables.Read()
	if !ruleset.Equal(want, got) {
		t.Fatalf("table after rollback differs from the first revision's:\n%v\nwant\n%v", got, want)
	}
	if res.ClearedFlows != 3 || f.flows.cleared != 1 {
		t.Fatalf("rollback to a revision without perFlow policies cleared %d flows (%d calls), want 3 (1)", res.ClearedFlows, f.flows.cleared)
	}
	p, err := f.c.Plan(ctx, first)
	if err != nil || !p.Empty() {
		t.Fatalf("plan of the first revision after rollback: empty=%v err=%v", p.Empty(), err)
	}
}

func TestApplyRepairsDrift(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, dropDoc)
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	if err := f.tables.Delete(); err != nil {
		t.Fatal(err)
	}
	res, err := f.c.apply(ctx, set, applyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Drift) != 1 || res.Drift[0] != metrics.DriftTableMissing || res.Revision != 1 {
		t.Fatalf("drift %v revision %d, want [table_missing] and revision 1", res.Drift, res.Revision)
	}
	if tbl, _ := f.tables.Read(); tbl == nil {
		t.Fatal("table not restored")
	}
}

func TestFailedKernelWriteLeavesPendingForRollback(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.tables.FailNext(errors.New("injected netlink failure"))
	if _, err := f.c.Apply(ctx, mustParse(t, globalDoc)); err == nil {
		t.Fatal("apply succeeded despite the failing table write")
	}
	j, _ := f.store.Load()
	if j.Pending == nil || j.Baseline == nil {
		t.Fatal("journal has no pending revision or baseline after a failed apply")
	}
	st, err := f.c.Status(ctx)
	if err != nil || !st.Interrupted {
		t.Fatalf("status: interrupted=%v err=%v, want interrupted", st.Interrupted, err)
	}
	if _, err := f.c.Rollback(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := f.sys.values[sysctl.BeLiberal]; got != "0" {
		t.Fatalf("be_liberal = %s after rolling back an interrupted apply, want 0", got)
	}
}

func TestStatusReportsCounters(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	tbl, _ := f.tables.Read()
	for _, ctr := range tbl.Counters {
		f.tables.Hit(ctr.Name, 2, 120)
	}
	st, err := f.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Drift || !st.TablePresent || st.Revision == nil || st.ConntrackInvalid != 7 {
		t.Fatalf("status %+v", st)
	}
	purposes := map[string]uint64{}
	for _, r := range st.Rules {
		purposes[r.Purpose] += r.Packets
	}
	want := map[string]uint64{string(ruleset.PurposeDropInvalid): 2, string(ruleset.PurposeCountInvalidRST): 2}
	if !maps.Equal(purposes, want) {
		t.Fatalf("rule counters %v, want %v", purposes, want)
	}
}

func TestJournalOfAnotherNamespaceIsRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	other := New(Config{Tables: nft.NewFake(), Sysctls: f.sys, Flows: f.flows, Store: f.store, NetNS: "net:[2]"})
	if _, err := other.Apply(ctx, mustParse(t, dropDoc)); !errors.Is(err, journal.ErrOtherNetNS) {
		t.Fatalf("apply with another namespace's journal: %v, want ErrOtherNetNS", err)
	}
}

func TestUnrecognisedTableIsDriftAndReplaced(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, dropDoc)
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	f.tables.AddForeign("table flags 0x1") // e.g. someone set the dormant flag
	st, err := f.c.Status(ctx)
	if err != nil || !st.Drift {
		t.Fatalf("status of an unrecognised table: drift=%v err=%v", st.Drift, err)
	}
	res, err := f.c.apply(ctx, set, applyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.tables.Read()
	if len(res.Drift) == 0 || len(got.Foreign) != 0 {
		t.Fatalf("unrecognised table not repaired: drift %v, still foreign %v", res.Drift, got.Foreign)
	}
}

func TestOperatorSysctlLeftAloneWithoutGlobalPolicy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	set := mustParse(t, perFlowDoc)
	if _, err := f.c.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	f.sys.values[sysctl.BeLiberal] = "1" // the operator's emergency switch
	p, err := f.c.Plan(ctx, set)
	if err != nil || !p.Empty() {
		t.Fatalf("plan after the operator set the sysctl: empty=%v err=%v", p.Empty(), err)
	}
	res, err := f.c.apply(ctx, set, applyOptions{})
	if err != nil || len(res.Drift) != 0 || f.sys.values[sysctl.BeLiberal] != "1" {
		t.Fatalf("reconcile touched the operator's sysctl: drift %v, value %s, err %v", res.Drift, f.sys.values[sysctl.BeLiberal], err)
	}
	if _, err := f.c.Rollback(ctx, true); err != nil {
		t.Fatal(err)
	}
	if f.sys.values[sysctl.BeLiberal] != "1" {
		t.Fatal("rollback --all reverted a sysctl ctguard never changed")
	}
}

func TestRollbackFromGlobalRestoresAndReleasesSysctl(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Apply(ctx, mustParse(t, globalDoc)); err != nil {
		t.Fatal(err)
	}
	if f.sys.values[sysctl.BeLiberal] != "1" {
		t.Fatal("global policy did not set the sysctl")
	}
	if _, err := f.c.Rollback(ctx, false); err != nil {
		t.Fatal(err)
	}
	if f.sys.values[sysctl.BeLiberal] != "0" {
		t.Fatalf("be_liberal = %s after rolling back the global policy, want 0", f.sys.values[sysctl.BeLiberal])
	}
	f.sys.values[sysctl.BeLiberal] = "1" // now the operator's again
	if p, err := f.c.Plan(ctx, mustParse(t, dropDoc)); err != nil || !p.Empty() {
		t.Fatalf("plan after the sysctl was handed back: empty=%v err=%v", p.Empty(), err)
	}
}

func TestOneShotCommandsRefuseWhileControllerRuns(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	release, err := f.store.HoldController("run") // as a running "ctguard run" does
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := f.c.Apply(ctx, mustParse(t, dropDoc)); !errors.Is(err, journal.ErrControllerRunning) {
		t.Fatalf("apply during run: %v, want ErrControllerRunning", err)
	}
	if _, err := f.c.Rollback(ctx, true); !errors.Is(err, journal.ErrControllerRunning) {
		t.Fatalf("rollback during run: %v, want ErrControllerRunning", err)
	}
	if _, err := f.c.Status(ctx); err != nil {
		t.Fatalf("status during run: %v", err)
	}
}

// clearingFlows records the directions ClearOwned was asked to clear.
type clearingFlows struct {
	fakeFlows
	dirs flows.Directions
}

func (c *clearingFlows) ClearOwned(_ context.Context, dirs flows.Directions) (int, error) {
	c.dirs = dirs
	return 0, nil
}

func TestRollbackClearsEveryDirectionEverFlagged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cf := &clearingFlows{}
	f.c.flows = cf
	both := mustParse(t, `
apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: both}
spec:
  workaround: liberal
  liberal: {directions: [original, reply]}
`)
	for _, set := range []PolicySet{both, mustParse(t, perFlowDoc)} {
		if _, err := f.c.Apply(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.c.Rollback(ctx, true); err != nil {
		t.Fatal(err)
	}
	if cf.dirs != flows.Both {
		t.Fatalf("rollback cleared %v, want both directions (an earlier revision flagged original too)", cf.dirs)
	}
}

// TestGateFallsBackToGuardWithoutQueue: a kernel that takes no NFQUEUE
// verdict gets guard rules for gate policies, loudly (the callback), and
// status reports the fallback without drift.
func TestGateFallsBackToGuardWithoutQueue(t *testing.T) {
	f := newFixture(t)
	f.tables.RefuseQueue()
	var refused error
	f.c.SetGate(ruleset.DefaultQueue, true, func(err error) { refused = err })
	if _, err := f.c.Apply(context.Background(), mustParse(t, perFlowDoc)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(refused, nft.ErrNoQueue) {
		t.Fatalf("fallback callback got %v, want ErrNoQueue", refused)
	}
	got, _ := f.tables.Read()
	var purposes []ruleset.Purpose
	for _, ch := range got.Chains {
		for _, r := range ch.Rules {
			purposes = append(purposes, r.Purpose)
		}
	}
	if !slices.Contains(purposes, ruleset.PurposeGuard) || slices.Contains(purposes, ruleset.PurposeGate) {
		t.Fatalf("rules %v: want a guard rule and no gate rule", purposes)
	}
	// A status from another process (it does not know of the fallback).
	other := New(Config{Tables: f.tables, Sysctls: f.sys, Flows: f.flows, Store: f.store, NetNS: "net:[1]"})
	st, err := other.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Drift || !st.GateFallback {
		t.Fatalf("status drift %v gateFallback %v, want false true", st.Drift, st.GateFallback)
	}
}
