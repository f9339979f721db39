package controller

import (
	"context"
	"errors"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/plan"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/policy"
)

// Plan reads the kernel and returns what Apply would change. It changes
// nothing, not even the journal.
// It takes no lock (the journal is replaced atomically), so it works on a
// read-only state directory.
func (c *Controller) Plan(ctx context.Context, set PolicySet) (plan.Plan, error) {
	j, err := c.readJournal(false)
	if err != nil {
		return plan.Plan{}, err
	}
	desired, observed, err := c.states(ctx, j, set.Policies, true)
	if err != nil {
		return plan.Plan{}, err
	}
	return plan.Compute(desired, observed), nil
}

// ApplyResult tells what Apply did.
type ApplyResult struct {
	Plan     plan.Plan
	Revision int
	// FlaggedExisting is how many existing flows perFlow policies flagged.
	FlaggedExisting int
	// ClearedStale is how many flows lost a flag ctguard had set in a
	// direction no policy wants any more.
	ClearedStale int
	// Drift lists what had drifted from the revision in force and was
	// repaired: "table_missing", "table_changed", "sysctl".
	Drift []string
	// Observed is the table as read before the apply, counters included.
	Observed *ruleset.Table
}

// readTable reads table inet ctguard. A table without ctguard's ownership
// mark is refused (a *nft.ForeignTableError naming its contents) unless it
// is exactly a table the journal j (nil: none) says ctguard applied: one a
// ctguard that wrote no mark yet created. What a marked table holds that
// ctguard never creates (a dormant flag, a chain or object added to it) is
// in Table.Foreign: the planner lists it and apply replaces the table.
func (c *Controller) readTable(j *journal.Journal) (*ruleset.Table, error) {
	t, err := c.tables.Read()
	if fe := (*nft.ForeignTableError)(nil); errors.As(err, &fe) {
		if fe.Table != nil && c.journaled(j, fe.Table) {
			return fe.Table, nil
		}
		return nil, err
	}
	return t, wrap("read table inet ctguard", err)
}

// journaled reports whether t is exactly the table of the revision in
// force or the pending one of j, as this ctguard builds it or as a ctguard
// from before the handshake gate built it (no gate or guard rules).
func (c *Controller) journaled(j *journal.Journal, t *ruleset.Table) bool {
	if j == nil {
		return false
	}
	for _, r := range []*journal.Revision{j.Latest(), j.Pending} {
		if r == nil || len(r.Policies) == 0 {
			continue
		}
		for _, ps := range [][]policy.Policy{r.Policies, withoutHandshake(r.Policies)} {
			if want := ruleset.Build(ps, c.rules); ruleset.Equal(&want, t) {
				return true
			}
		}
	}
	return false
}

// withoutHandshake returns copies of ps whose per-flow policies have
// handshake none: the table a ctguard without the gate wrote for them.
func withoutHandshake(ps []policy.Policy) []policy.Policy {
	out := make([]policy.Policy, len(ps))
	for i := range ps {
		out[i] = ps[i].WithoutHandshake()
	}
	return out
}

// drift names what differs between desired and observed: the kinds are
// metrics.DriftTableMissing, DriftTableChanged and DriftSysctl.
func drift(desired, observed plan.State) []string {
	var kinds []string
	switch {
	case desired.Table != nil && observed.Table == nil:
		kinds = append(kinds, metrics.DriftTableMissing)
	case !ruleset.Equal(desired.Table, observed.Table):
		kinds = append(kinds, metrics.DriftTableChanged)
	}
	for name, want := range desired.Sysctls {
		if observed.Sysctls[name] != want {
			kinds = append(kinds, metrics.DriftSysctl)
			break
		}
	}
	return kinds
}

// Apply makes the kernel match the policies: the journal records the
// baseline and the new revision first, then the table is replaced in one
// atomic batch (only when it differs), the sysctl set, and the existing
// flows of perFlow policies flagged. Applying the same set twice changes
// nothing the second time.
// It refuses while a "ctguard run" manages the state directory: the
// controller would undo the change at its next reconcile.
func (c *Controller) Apply(ctx context.Context, set PolicySet) (ApplyResult, error) {
	release, err := c.hold("apply")
	if err != nil {
		return ApplyResult{}, err
	}
	defer release()
	return c.apply(ctx, set, applyOptions{flows: true})
}

// applyOptions tune an apply.
type applyOptions struct {
	// flows counts and flags existing flows of perFlow policies. The Run
	// loop leaves both to the per-flow engine.
	flows bool
}

// apply is Apply with options; it takes the state lock.
func (c *Controller) apply(ctx context.Context, set PolicySet, opts applyOptions) (ApplyResult, error) {
	j, unlock, err := c.loadJournal(true)
	if err != nil {
		return ApplyResult{}, err
	}
	defer unlock()
	return c.applyLocked(ctx, j, set, opts)
}

// applyLocked is apply with the journal loaded and locked.
func (c *Controller) applyLocked(ctx context.Context, j *journal.Journal, set PolicySet, opts applyOptions) (ApplyResult, error) {
	owned := ownedDirections(j) // before this apply's policies join them
	desired, observed, err := c.states(ctx, j, set.Policies, opts.flows)
	if err != nil {
		return ApplyResult{}, err
	}
	p := plan.Compute(desired, observed)
	if latest := j.Latest(); latest != nil && j.Pending == nil && c.samePolicies(latest.Policies, set.Policies) {
		// Nothing new to journal: converge to the revision in force,
		// repairing drift if there is any.
		res := ApplyResult{Plan: p, Revision: latest.Number, Observed: observed.Table, Drift: drift(desired, observed)}
		if p.Empty() {
			return res, nil
		}
		if err := c.convergeGate(set.Policies, &desired, observed); err != nil {
			return ApplyResult{}, err
		}
		if opts.flows {
			if res.FlaggedExisting, err = c.flagExisting(ctx, set.Policies); err != nil {
				return ApplyResult{}, err
			}
			res.ClearedStale, err = c.clearStale(ctx, set.Policies, owned, observed.StaleFlags)
		}
		return res, err
	}
	if j.Baseline == nil {
		j.Stamp(c.identity())
		j.Baseline = &journal.Baseline{RecordedAt: time.Now().UTC(), Sysctls: map[string]string{}}
	}
	for name, want := range desired.Sysctls {
		if _, owned := j.Baseline.Sysctls[name]; !owned && observed.Sysctls[name] != want {
			j.Baseline.Sysctls[name] = observed.Sysctls[name] // ctguard takes it over now
		}
	}
	recordFlagged(j, set.Policies)
	rev := j.Begin(journal.Revision{
		AppliedAt: time.Now().UTC(),
		Source:    set.Source,
		Policies:  set.Policies,
		Sysctls:   changedSysctls(desired.Sysctls, j.Baseline.Sysctls),
	})
	if err := c.store.Save(j); err != nil {
		return ApplyResult{}, wrap("journal the apply (kernel untouched)", err)
	}
	if err := c.convergeGate(set.Policies, &desired, observed); err != nil {
		return ApplyResult{}, err
	}
	flagged, cleared := 0, 0
	if opts.flows {
		if flagged, err = c.flagExisting(ctx, set.Policies); err != nil {
			return ApplyResult{}, err
		}
		if cleared, err = c.clearStale(ctx, set.Policies, owned, observed.StaleFlags); err != nil {
			return ApplyResult{}, err
		}
	}
	releaseRestored(j.Baseline, desired.Sysctls)
	number := rev.Number
	if err := j.Commit(); err != nil {
		return ApplyResult{}, err
	}
	if err := c.store.Save(j); err != nil {
		return ApplyResult{}, wrap("commit the journal (kernel already changed)", err)
	}
	c.log.Info("applied", "revision", number, "source", set.Source, "policies", len(set.Policies), "flaggedExisting", flagged)
	return ApplyResult{Plan: p, Revision: number, FlaggedExisting: flagged, ClearedStale: cleared, Observed: observed.Table}, nil
}

// ownedDirections is every direction ctguard may have flagged on flows in
// this namespace: the journal's record, and the directions of the
// perFlow policies in force (a journal written before the record existed).
func ownedDirections(j *journal.Journal) flows.Directions {
	return flaggedDirections(j) | selector.Directions(appliedPolicies(j))
}

// clearStale clears the flags ctguard set, in owned directions, that the
// policies no longer want, when states found any (seen).
func (c *Controller) clearStale(ctx context.Context, policies []policy.Policy, owned flows.Directions, seen plan.StaleFlags) (int, error) {
	if owned == 0 || seen.Flows == 0 {
		return 0, nil
	}
	u, err := c.flows.ClearUnwanted(ctx, policies, owned)
	if err != nil {
		return u.Flows, wrap("clear per-flow flags no policy wants", err)
	}
	return u.Flows, nil
}

// flagExisting flags the existing flows of perFlow policies that ask for it.
func (c *Controller) flagExisting(ctx context.Context, policies []policy.Policy) (int, error) {
	if !hasExistingFlows(policies) {
		return 0, nil
	}
	n, err := c.flows.FlagExisting(ctx, policies)
	return n, wrap("flag existing flows", err)
}

// samePolicies reports whether two policy lists are equal as the journal
// stores them (JSON, without Policy.Source): whether their journal
// references are. The store remembers the references of the policies it
// loaded, so a reconcile of unchanged policies encodes nothing.
func (c *Controller) samePolicies(a, b []policy.Policy) bool {
	x, errA := c.store.PoliciesRef(a)
	y, errB := c.store.PoliciesRef(b)
	return errA == nil && errB == nil && x == y
}

// build returns the table the policies want. It is built again only when
// the policies differ (by journal reference) from the last ones built:
// a resync of a 200,000-CIDR policy would otherwise merge and render every
// CIDR each time; and then only the interval sets whose addresses or
// ports changed are merged again (ruleset.SetCache). The table is shared:
// do not modify it.
func (c *Controller) build(policies []policy.Policy) ruleset.Table {
	ref, err := c.store.PoliciesRef(policies)
	c.builtMu.Lock()
	defer c.builtMu.Unlock()
	if err == nil && c.built != nil && c.built.ref == ref && c.built.opts == c.rules {
		return c.built.table
	}
	t := c.sets.Build(policies, c.rules)
	if err == nil {
		c.built = &builtTable{ref: ref, opts: c.rules, table: t}
	}
	return t
}

// builtTable is the table last built, the reference of its policies and
// the options it was built with.
type builtTable struct {
	ref   string
	opts  ruleset.Options
	table ruleset.Table
}

// convergeGate is converge that falls back, for good, from gate rules to
// guard rules when the kernel has no NFQUEUE for the gate: missing
// features never leave a policy without protection.
func (c *Controller) convergeGate(policies []policy.Policy, desired *plan.State, observed plan.State) error {
	err := c.converge(*desired, observed)
	if !errors.Is(err, nft.ErrNoQueue) || c.rules.NoQueue {
		return err
	}
	c.rules.NoQueue = true
	c.log.Error("the gate cannot run on this kernel: gate policies fall back to guard rules (invalid packets from their servers are dropped)", "err", err)
	if c.onNoQueue != nil {
		c.onNoQueue(err)
	}
	t := ruleset.Build(policies, c.rules)
	desired.Table = &t
	return c.converge(*desired, observed)
}

// converge writes the table and sysctls where they differ from desired:
// the element changes alone when only set elements differ, else the whole
// table.
func (c *Controller) converge(desired, observed plan.State) error {
	if !ruleset.Equal(desired.Table, observed.Table) {
		var err error
		if deltas, ok := ruleset.ElementDeltas(desired.Table, observed.Table); ok {
			// Only set elements differ: change them in place, counters
			// and all else untouched, instead of re-creating the table.
			err = c.tables.UpdateElements(deltas)
		} else if desired.Table == nil {
			err = c.tables.Delete()
		} else {
			err = c.tables.Replace(*desired.Table)
		}
		if err != nil {
			return err
		}
	}
	for name, want := range desired.Sysctls {
		if observed.Sysctls[name] == want {
			continue
		}
		if err := c.sysctls.Set(name, want); err != nil {
			return wrap("set sysctl", err)
		}
	}
	return nil
}

// states computes the desired state for the policies and reads the
// observed one.
func (c *Controller) states(ctx context.Context, j *journal.Journal, policies []policy.Policy, countFlows bool) (desired, observed plan.State, err error) {
	table, err := c.readTable(j)
	if err != nil {
		return desired, observed, err
	}
	current, err := c.sysctls.Get(sysctl.BeLiberal)
	if err != nil {
		return desired, observed, wrap("read sysctl", err)
	}
	observed = plan.State{
		Table:   table,
		Sysctls: map[string]string{sysctl.BeLiberal: current},
		PerFlow: plan.FromPolicies(appliedPolicies(j)),
	}

	desired = plan.State{Sysctls: desiredSysctls(j, policies)}
	if len(policies) > 0 {
		t := c.build(policies)
		desired.Table = &t
	}
	var counts map[string]perflow.PlanEntry
	if countFlows && hasPerFlow(policies) {
		if counts, err = c.flows.Plan(ctx, policies); err != nil {
			return desired, observed, wrap("count matching flows", err)
		}
	}
	desired.PerFlow = withCounts(plan.FromPolicies(policies), counts)
	if owned := ownedDirections(j); countFlows && owned != 0 {
		u, err := c.flows.FindUnwanted(ctx, policies, owned)
		if err != nil {
			return desired, observed, wrap("find per-flow flags no policy wants", err)
		}
		observed.StaleFlags = plan.StaleFlags{Flows: u.Flows, Sample: u.Sample}
	}
	return desired, observed, nil
}

// appliedPolicies returns the policies of the newest committed revision.
func appliedPolicies(j *journal.Journal) []policy.Policy {
	if r := j.Latest(); r != nil {
		return r.Policies
	}
	return nil
}

// withCounts fills in how many flows each perFlow policy would flag.
func withCounts(ps []plan.PerFlowPolicy, counts map[string]perflow.PlanEntry) []plan.PerFlowPolicy {
	for i := range ps {
		entry := counts[ps[i].Name]
		ps[i].MatchingFlows, ps[i].Sample = entry.Matching, entry.Sample
	}
	return ps
}

func hasPerFlow(policies []policy.Policy) bool {
	for _, p := range policies {
		if p.IsPerFlow() {
			return true
		}
	}
	return false
}

func hasExistingFlows(policies []policy.Policy) bool {
	for _, p := range policies {
		if p.ExistingFlows() {
			return true
		}
	}
	return false
}

// desiredSysctls is what ctguard wants of the sysctls it manages: the
// global sysctl on while a global liberal policy asks for it; back to its
// value before ctguard while ctguard still owns it; otherwise nothing, so
// an operator's own setting is left alone.
func desiredSysctls(j *journal.Journal, policies []policy.Policy) map[string]string {
	want := map[string]string{}
	for _, p := range policies {
		if p.IsGlobalLiberal() {
			want[sysctl.BeLiberal] = "1"
			return want
		}
	}
	if j.Baseline != nil {
		if v, owned := j.Baseline.Sysctls[sysctl.BeLiberal]; owned {
			want[sysctl.BeLiberal] = v
		}
	}
	return want
}

// releaseRestored hands back to the operator the sysctls that were just
// restored to their value before ctguard.
func releaseRestored(b *journal.Baseline, desired map[string]string) {
	for name, before := range b.Sysctls {
		if v, ok := desired[name]; ok && v == before {
			delete(b.Sysctls, name)
		}
	}
}

// changedSysctls returns the desired values that differ from the baseline:
// what ctguard itself sets.
func changedSysctls(desired, baseline map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range desired {
		if baseline[k] != v {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
