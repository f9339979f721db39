package ruleset

import "slices"

// SetDelta is a change of one named set's elements, in place.
type SetDelta struct {
	// Set is the set as desired: name, type, interval flag and all its
	// elements.
	Set Set
	// Add and Remove are the elements to add and to delete.
	Add, Remove []string
}

// ElementDeltas returns the element changes that turn observed into
// desired when the two tables differ in nothing else: the same counters
// (by name), chains, rules and sets (by name, type and interval flag).
// ok is false when something else differs or a table is absent; deltas is
// empty when the tables are equal.
func ElementDeltas(desired, observed *Table) (deltas []SetDelta, ok bool) {
	if desired == nil || observed == nil ||
		!slices.EqualFunc(desired.Counters, observed.Counters, func(x, y Counter) bool { return x.Name == y.Name }) ||
		!slices.EqualFunc(desired.Chains, observed.Chains, equalChain) ||
		!slices.EqualFunc(desired.Sets, observed.Sets, func(x, y Set) bool {
			return x.Name == y.Name && x.Type == y.Type && x.Interval == y.Interval
		}) {
		return nil, false
	}
	for i, d := range desired.Sets {
		add, remove := ElementDiff(d.Elements, observed.Sets[i].Elements)
		if len(add)+len(remove) > 0 {
			deltas = append(deltas, SetDelta{Set: d, Add: add, Remove: remove})
		}
	}
	return deltas, true
}

// ElementDiff returns the elements of desired missing from observed
// (added) and those of observed missing from desired (removed), each in
// its slice's order. Elements shared at the start and the end are skipped
// without hashing, so a small edit of a large set costs little.
func ElementDiff(desired, observed []string) (added, removed []string) {
	pre := 0
	for pre < len(desired) && pre < len(observed) && desired[pre] == observed[pre] {
		pre++
	}
	suf := 0
	for suf < len(desired)-pre && suf < len(observed)-pre && desired[len(desired)-1-suf] == observed[len(observed)-1-suf] {
		suf++
	}
	d, o := desired[pre:len(desired)-suf], observed[pre:len(observed)-suf]
	return missingFrom(d, o), missingFrom(o, d)
}

// missingFrom returns the elements of xs that are not in ys, in xs's order.
func missingFrom(xs, ys []string) []string {
	if len(xs) == 0 {
		return nil
	}
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
