package ruleset

import (
	"cmp"
	"slices"
	"strings"
)

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
// (by name), chains, rules and sets (by name, type and interval flag),
// and nothing foreign.
// ok is false when something else differs or a table is absent; deltas is
// empty when the tables are equal.
func ElementDeltas(desired, observed *Table) (deltas []SetDelta, ok bool) {
	if desired == nil || observed == nil || len(desired.Foreign)+len(observed.Foreign) > 0 ||
		!slices.EqualFunc(desired.Counters, observed.Counters, func(x, y Counter) bool { return x.Name == y.Name }) ||
		!slices.EqualFunc(desired.Chains, observed.Chains, equalChain) ||
		!slices.EqualFunc(desired.Sets, observed.Sets, func(x, y Set) bool {
			return x.Name == y.Name && x.Type == y.Type && x.Interval == y.Interval
		}) {
		return nil, false
	}
	for i, d := range desired.Sets {
		add, remove := ElementDiff(d.Type, d.Elements, observed.Sets[i].Elements)
		if len(add)+len(remove) > 0 {
			deltas = append(deltas, SetDelta{Set: d, Add: add, Remove: remove})
		}
	}
	return deltas, true
}

// ElementDiff returns the elements of desired missing from observed
// (added) and those of observed missing from desired (removed), each in
// its slice's order, for a set of type typ whose elements are, on both
// sides, in the order Build and Read give them (addresses and ports by
// their first value, interface names as strings). Both are walked side
// by side: equal elements are skipped by a string comparison and only
// where they differ are the two parsed to tell which comes first, so a
// small edit of a large set costs little. Elements it cannot parse or
// order fall back to a comparison by hashing.
func ElementDiff(typ SetType, desired, observed []string) (added, removed []string) {
	i, j := 0, 0
	for i < len(desired) && j < len(observed) {
		if desired[i] == observed[j] {
			i, j = i+1, j+1
			continue
		}
		c, ok := compareElements(typ, desired[i], observed[j])
		switch {
		case !ok:
			a, r := hashDiff(desired[i:], observed[j:])
			return append(added, a...), append(removed, r...)
		case c < 0:
			added = append(added, desired[i])
			i++
		case c > 0:
			removed = append(removed, observed[j])
			j++
		default: // the same start, another range
			added, removed = append(added, desired[i]), append(removed, observed[j])
			i, j = i+1, j+1
		}
	}
	return append(added, desired[i:]...), append(removed, observed[j:]...)
}

// compareElements orders two elements of a set of type typ; ok is false
// when one does not parse.
func compareElements(typ SetType, a, b string) (int, bool) {
	switch typ {
	case SetIfname:
		return strings.Compare(a, b), true
	case SetInetService:
		x, errA := ParsePortSpan(a)
		y, errB := ParsePortSpan(b)
		return cmp.Compare(x.First, y.First), errA == nil && errB == nil
	}
	x, errA := ParseAddrRange(a)
	y, errB := ParseAddrRange(b)
	return x.First.Compare(y.First), errA == nil && errB == nil
}

// hashDiff is ElementDiff by hashing, for elements in no known order.
func hashDiff(desired, observed []string) (added, removed []string) {
	return missingFrom(desired, observed), missingFrom(observed, desired)
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
