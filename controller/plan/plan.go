// Package plan computes what it takes to turn the observed state of a box
// into the desired one, and renders the result as text (for operators) and
// JSON (for tools). It is pure: the controller reads the kernel and passes
// both states in.
//
// What makes a plan non-empty: any change to table inet ctguard (counter
// values excepted: they are observations), any managed sysctl whose value
// differs, and any perFlow policy added, removed or changed. The number of
// existing flows a perFlow policy matches is informational: it never makes
// a plan non-empty on its own. It is a moving observation (flows come and
// go every second, and the running per-flow engine flags new ones itself),
// so a plan built on it would never be stably empty on a busy NAT box.
// Flows carrying ctguard's flag in a direction no policy wants any more
// (StaleFlags, observed side) do make a plan non-empty: only ctguard sets
// them, and applying clears them for good.
package plan

import (
	"slices"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
)

// State is the part of the box ctguard manages, as the policies want it
// (desired) or as the kernel and the journal show it (observed).
type State struct {
	// Table is the content of table inet ctguard; nil means it is absent.
	Table *ruleset.Table
	// Sysctls maps dotted sysctl names to values, only for the sysctls
	// ctguard manages (be_liberal). A name missing from the desired state
	// is left alone; one missing from the observed state is absent there.
	Sysctls map[string]string
	// PerFlow lists the perFlow liberal policies desired or in force.
	PerFlow []PerFlowPolicy
	// StaleFlags, on the observed side, are the flows carrying ctguard's
	// flag in a direction no desired policy wants. Ignored on the desired
	// side.
	StaleFlags StaleFlags
}

// StaleFlags counts flows whose per-flow flag, set by ctguard, no policy
// wants any more.
type StaleFlags struct {
	// Flows is how many flows; Sample describes a few of them.
	Flows  int
	Sample []string
}

// PerFlowPolicy is a perFlow liberal policy as the per-flow engine runs it.
type PerFlowPolicy struct {
	// Name is the policy's metadata.name; it identifies the policy.
	Name string
	// Directions are the conntrack directions flagged (order-insensitive).
	Directions []policy.Direction
	// ExistingFlows says whether flows already in the conntrack table are
	// flagged too, not only new ones.
	ExistingFlows bool
	// Handshake is how new flows are protected before their flag lands
	// (policy.Policy.Handshake); NAT the NAT kinds selected (match.nat).
	Handshake policy.Handshake
	NAT       []policy.NATKind
	// MatchingFlows is, on the desired side, the number of existing flows
	// the policy matches that are not flagged yet. Informational; ignored
	// on the observed side.
	MatchingFlows int
	// Sample describes a few of those flows, for the operator.
	Sample []string
}

// FromPolicies returns the perFlow liberal policies among ps, defaults
// applied (Policy.Directions, Policy.ExistingFlows), without flow counts:
// the desired side from the policies to apply, the observed side from the
// journal's latest revision.
func FromPolicies(ps []policy.Policy) []PerFlowPolicy {
	var out []PerFlowPolicy
	for _, p := range ps {
		if p.IsPerFlow() {
			out = append(out, PerFlowPolicy{
				Name:          p.Name(),
				Directions:    slices.Clone(p.Directions()),
				ExistingFlows: p.ExistingFlows(),
				Handshake:     p.Handshake(),
				NAT:           natKinds(p.NATMatch()),
			})
		}
	}
	return out
}

// natKinds renders a NAT selection as match.nat's values.
func natKinds(m policy.NATMatch) []policy.NATKind {
	var out []policy.NATKind
	if m&policy.NATMatchSource != 0 {
		out = append(out, policy.NATSource)
	}
	if m&policy.NATMatchDest != 0 {
		out = append(out, policy.NATDest)
	}
	if m == 0 {
		out = []policy.NATKind{policy.NATAny}
	}
	return out
}

// Action is what a plan does to one object.
type Action string

// The actions of a plan.
const (
	// ActionNone: unchanged; listed only for information.
	ActionNone Action = "none"
	// ActionCreate: the object is added.
	ActionCreate Action = "create"
	// ActionUpdate: the object is changed in place.
	ActionUpdate Action = "update"
	// ActionReplace: the object is deleted and created again (a set whose
	// type or interval flag changes).
	ActionReplace Action = "replace"
	// ActionDelete: the object is removed.
	ActionDelete Action = "delete"
)

// Plan is the difference between a desired and an observed State.
type Plan struct {
	// Table is the change to table inet ctguard; nil when none is needed.
	Table *TableChange
	// Sysctls are the managed sysctls whose value changes, sorted by name.
	Sysctls []SysctlChange
	// PerFlow has one entry per perFlow policy desired or in force, sorted
	// by name; unchanged policies have ActionNone and are listed for their
	// flow counts.
	PerFlow []PerFlowChange
	// StaleFlags are the flows whose ctguard flag applying clears; nil
	// when there are none.
	StaleFlags *StaleFlags
}

// TableChange is the change to table inet ctguard, object by object.
type TableChange struct {
	// Action is create, update or delete.
	Action Action
	// Desired and Observed are the tables compared (nil when absent); the
	// text renderer shows the difference of their nft text.
	Desired, Observed *ruleset.Table
	// Counters are the named counters added or removed, sorted by name.
	Counters []CounterChange
	// Sets are the sets added, removed or changed, sorted by name.
	Sets []SetChange
	// Chains are the chains added, removed or changed: desired order first,
	// then chains only observed.
	Chains []ChainChange
	// Foreign describes what the observed table holds that ctguard never
	// creates (ruleset.Table.Foreign): applying removes it with the table.
	Foreign []string
}

// CounterChange is a named counter added or removed. Counter values never
// make a change.
type CounterChange struct {
	// Name is the counter's name.
	Name string
	// Action is create or delete.
	Action Action
}

// SetChange is a named set added, removed, replaced or whose elements
// change.
type SetChange struct {
	// Name is the set's name.
	Name string
	// Action is create, update (elements), replace or delete.
	Action Action
	// Desired and Observed are the set on each side (nil when absent).
	Desired, Observed *ruleset.Set
	// ElementsAdded and ElementsRemoved are the element differences, in
	// each set's order; on create every element is added, on delete every
	// element removed.
	ElementsAdded, ElementsRemoved []string
}

// ChainChange is a base chain added, removed or changed.
type ChainChange struct {
	// Name is the chain's name (its hook).
	Name string
	// Action is create, update (priority, rule order or rules) or delete.
	Action Action
	// Desired and Observed are the chain on each side (nil when absent).
	Desired, Observed *ruleset.Chain
	// Reordered says the rules both sides have are in a different order.
	Reordered bool
	// Rules are the rules added, removed or changed: desired order first,
	// then rules only observed.
	Rules []RuleChange
}

// PriorityChanged reports whether an updated chain's priority changes.
func (c ChainChange) PriorityChanged() bool {
	return c.Desired != nil && c.Observed != nil && c.Desired.Priority != c.Observed.Priority
}

// RuleChange is a rule added, removed or changed within its chain.
type RuleChange struct {
	// ID identifies the rule in its chain: its comment (Rule.Comment), or
	// for an unrecognised observed rule its Detail.
	ID string
	// Action is create, update (same ID, different rule) or delete.
	Action Action
	// Desired and Observed are the rule on each side (nil when absent).
	Desired, Observed *ruleset.Rule
}

// SysctlChange is a managed sysctl whose value changes.
type SysctlChange struct {
	// Name is the dotted sysctl name.
	Name string
	// Old is the observed value; nil when the sysctl is absent.
	Old *string
	// New is the desired value.
	New string
}

// PerFlowChange is a perFlow policy added, removed, changed or unchanged.
type PerFlowChange struct {
	// Name is the policy's name.
	Name string
	// Action is create, update (directions or existingFlows), delete, or
	// none for an unchanged desired policy.
	Action Action
	// Desired and Observed are the policy on each side (nil when absent).
	Desired, Observed *PerFlowPolicy
}

// FlowsToFlag returns how many existing flows applying the plan flags for
// this policy: its unflagged matching flows when it is created or updated
// with ExistingFlows, otherwise 0.
func (c PerFlowChange) FlowsToFlag() int {
	if (c.Action == ActionCreate || c.Action == ActionUpdate) && c.Desired.ExistingFlows {
		return c.Desired.MatchingFlows
	}
	return 0
}

// Summary counts a plan's changes by kind, like "Plan: 1 to add, 2 to
// change, 0 to remove.". Every counter, set, chain, rule, sysctl and
// perFlow policy counts once; so does the table itself when it is created
// or deleted. A replaced set counts as a change, and a chain counts as a
// change only when its priority or rule order changes (its rules count on
// their own).
type Summary struct {
	// Add, Change and Remove count objects created, changed in place or
	// replaced, and deleted.
	Add, Change, Remove int
}

// Summary counts the plan's changes.
func (p Plan) Summary() Summary {
	var s Summary
	if t := p.Table; t != nil {
		if t.Action != ActionUpdate {
			s.count(t.Action)
		}
		for _, c := range t.Counters {
			s.count(c.Action)
		}
		for _, c := range t.Sets {
			s.count(c.Action)
		}
		for _, c := range t.Chains {
			if c.Action != ActionUpdate || c.PriorityChanged() || c.Reordered {
				s.count(c.Action)
			}
			for _, r := range c.Rules {
				s.count(r.Action)
			}
		}
		s.Remove += len(t.Foreign)
	}
	s.Change += len(p.Sysctls)
	for _, c := range p.PerFlow {
		s.count(c.Action)
	}
	if p.StaleFlags != nil {
		s.Change++ // the flags of all those flows, as one change
	}
	return s
}

// count adds one change of kind a.
func (s *Summary) count(a Action) {
	switch a {
	case ActionCreate:
		s.Add++
	case ActionUpdate, ActionReplace:
		s.Change++
	case ActionDelete:
		s.Remove++
	}
}

// Empty reports whether applying the plan would change nothing.
func (p Plan) Empty() bool { return p.Summary() == Summary{} }
