package plan

import (
	"maps"
	"slices"
	"strconv"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
)

// Compute returns the plan that turns observed into desired. Objects are
// matched by name (counters, sets, chains, perFlow policies) or by comment
// (rules) and compared whole; counter values, MatchingFlows and Sample never
// make a change. Compute(x, x) is empty.
func Compute(desired, observed State) Plan {
	p := Plan{
		Table:   diffTable(desired.Table, observed.Table),
		Sysctls: diffSysctls(desired.Sysctls, observed.Sysctls),
		PerFlow: diffPerFlow(desired.PerFlow, observed.PerFlow),
	}
	if stale := observed.StaleFlags; stale.Flows > 0 {
		p.StaleFlags = &StaleFlags{Flows: stale.Flows, Sample: slices.Clone(stale.Sample)}
	}
	return p
}

// diffTable compares the tables; nil means no change.
func diffTable(desired, observed *ruleset.Table) *TableChange {
	var d, o ruleset.Table
	action := ActionUpdate
	switch {
	case desired == nil && observed == nil:
		return nil
	case observed == nil:
		action, d = ActionCreate, *desired
	case desired == nil:
		action, o = ActionDelete, *observed
	default:
		d, o = *desired, *observed
	}
	tc := &TableChange{
		Action:   action,
		Desired:  desired,
		Observed: observed,
		Counters: diffCounters(d.Counters, o.Counters),
		Sets:     diffSets(d.Sets, o.Sets),
		Chains:   diffChains(d.Chains, o.Chains),
		Foreign:  slices.Clone(o.Foreign),
	}
	if action == ActionUpdate && len(tc.Counters)+len(tc.Sets)+len(tc.Chains)+len(tc.Foreign) == 0 {
		return nil
	}
	return tc
}

// diffCounters compares counters by name only.
func diffCounters(desired, observed []ruleset.Counter) []CounterChange {
	name := func(c ruleset.Counter) string { return c.Name }
	d, o := index(desired, name), index(observed, name)
	var out []CounterChange
	for _, n := range sortedUnion(d, o) {
		switch {
		case d[n] == nil:
			out = append(out, CounterChange{Name: n, Action: ActionDelete})
		case o[n] == nil:
			out = append(out, CounterChange{Name: n, Action: ActionCreate})
		}
	}
	return out
}

// diffSets compares sets by name, then type, interval flag and elements.
func diffSets(desired, observed []ruleset.Set) []SetChange {
	name := func(s ruleset.Set) string { return s.Name }
	d, o := index(desired, name), index(observed, name)
	var out []SetChange
	for _, n := range sortedUnion(d, o) {
		ds, os := d[n], o[n]
		c := SetChange{Name: n, Desired: ds, Observed: os}
		switch {
		case os == nil:
			c.Action, c.ElementsAdded = ActionCreate, ds.Elements
		case ds == nil:
			c.Action, c.ElementsRemoved = ActionDelete, os.Elements
		case ds.Type != os.Type || ds.Interval != os.Interval:
			c.Action, c.ElementsAdded, c.ElementsRemoved = ActionReplace, ds.Elements, os.Elements
		default:
			c.ElementsAdded = missingFrom(ds.Elements, os.Elements)
			c.ElementsRemoved = missingFrom(os.Elements, ds.Elements)
			if len(c.ElementsAdded)+len(c.ElementsRemoved) == 0 {
				continue
			}
			c.Action = ActionUpdate
		}
		out = append(out, c)
	}
	return out
}

// diffChains compares chains by name, then priority and rules.
func diffChains(desired, observed []ruleset.Chain) []ChainChange {
	name := func(c ruleset.Chain) string { return c.Name() }
	d, o := index(desired, name), index(observed, name)
	var out []ChainChange
	for _, n := range orderedUnion(desired, observed, name) {
		dc, oc := d[n], o[n]
		c := ChainChange{Name: n, Desired: dc, Observed: oc}
		var dRules, oRules []ruleset.Rule
		switch {
		case oc == nil:
			c.Action, dRules = ActionCreate, dc.Rules
		case dc == nil:
			c.Action, oRules = ActionDelete, oc.Rules
		default:
			c.Action, dRules, oRules = ActionUpdate, dc.Rules, oc.Rules
		}
		c.Rules, c.Reordered = diffRules(dRules, oRules)
		if c.Action == ActionUpdate && !c.PriorityChanged() && !c.Reordered && len(c.Rules) == 0 {
			continue
		}
		out = append(out, c)
	}
	return out
}

// diffRules matches rules by ID (the k-th rule with an ID matches the k-th
// one on the other side) and compares them whole. It also reports whether
// the rules both sides have are in a different order.
func diffRules(desired, observed []ruleset.Rule) ([]RuleChange, bool) {
	dKeys, oKeys := ruleKeys(desired), ruleKeys(observed)
	d := make(map[string]*ruleset.Rule, len(desired))
	for i := range desired {
		d[dKeys[i]] = &desired[i]
	}
	o := make(map[string]*ruleset.Rule, len(observed))
	for i := range observed {
		o[oKeys[i]] = &observed[i]
	}
	var out []RuleChange
	var commonD, commonO []string
	for i, k := range dKeys {
		c := RuleChange{ID: ruleID(desired[i]), Desired: &desired[i], Observed: o[k]}
		switch {
		case c.Observed == nil:
			c.Action = ActionCreate
		case *c.Desired != *c.Observed:
			c.Action = ActionUpdate
		}
		if c.Observed != nil {
			commonD = append(commonD, k)
		}
		if c.Action != "" { // equal rules make no change
			out = append(out, c)
		}
	}
	for i, k := range oKeys {
		if d[k] == nil {
			out = append(out, RuleChange{ID: ruleID(observed[i]), Action: ActionDelete, Observed: &observed[i]})
		} else {
			commonO = append(commonO, k)
		}
	}
	return out, !slices.Equal(commonD, commonO)
}

// ruleID identifies a rule within its chain.
func ruleID(r ruleset.Rule) string {
	if r.Purpose == ruleset.PurposeUnrecognised {
		return r.Detail
	}
	return r.Comment()
}

// ruleKeys returns unique keys for rules: the ID and its occurrence number.
func ruleKeys(rules []ruleset.Rule) []string {
	seen := map[string]int{}
	keys := make([]string, len(rules))
	for i, r := range rules {
		id := ruleID(r)
		keys[i] = id + "\x00" + strconv.Itoa(seen[id])
		seen[id]++
	}
	return keys
}

// diffSysctls lists the desired sysctls whose observed value differs.
func diffSysctls(desired, observed map[string]string) []SysctlChange {
	var out []SysctlChange
	for _, n := range slices.Sorted(maps.Keys(desired)) {
		old, ok := observed[n]
		if ok && old == desired[n] {
			continue
		}
		c := SysctlChange{Name: n, New: desired[n]}
		if ok {
			c.Old = &old
		}
		out = append(out, c)
	}
	return out
}

// diffPerFlow compares perFlow policies by name, directions and
// ExistingFlows; unchanged desired policies are listed with ActionNone.
func diffPerFlow(desired, observed []PerFlowPolicy) []PerFlowChange {
	name := func(p PerFlowPolicy) string { return p.Name }
	d, o := index(desired, name), index(observed, name)
	var out []PerFlowChange
	for _, n := range sortedUnion(d, o) {
		c := PerFlowChange{Name: n, Desired: d[n], Observed: o[n], Action: ActionNone}
		switch {
		case c.Observed == nil:
			c.Action = ActionCreate
		case c.Desired == nil:
			c.Action = ActionDelete
		case c.Desired.ExistingFlows != c.Observed.ExistingFlows || !sameDirections(c.Desired.Directions, c.Observed.Directions) ||
			c.Desired.Handshake != c.Observed.Handshake || !slices.Equal(c.Desired.NAT, c.Observed.NAT):
			c.Action = ActionUpdate
		}
		out = append(out, c)
	}
	return out
}

// sameDirections compares direction lists as sets.
func sameDirections(a, b []policy.Direction) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// index maps each element's name to a pointer into xs; the first of
// duplicate names wins.
func index[T any](xs []T, name func(T) string) map[string]*T {
	m := make(map[string]*T, len(xs))
	for i := range xs {
		if n := name(xs[i]); m[n] == nil {
			m[n] = &xs[i]
		}
	}
	return m
}

// sortedUnion returns the names of both maps, sorted.
func sortedUnion[T any](a, b map[string]*T) []string {
	names := slices.Collect(maps.Keys(a))
	for n := range b {
		if a[n] == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// orderedUnion returns the names in a's order, then those only in b in b's
// order.
func orderedUnion[T any](a, b []T, name func(T) string) []string {
	var names []string
	seen := map[string]bool{}
	for _, xs := range [][]T{a, b} {
		for _, x := range xs {
			if n := name(x); !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	return names
}

// missingFrom returns the elements of xs that are not in ys, in xs's order.
func missingFrom(xs, ys []string) []string {
	in := make(map[string]bool, len(ys))
	for _, y := range ys {
		in[y] = true
	}
	var out []string
	for _, x := range xs {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}
