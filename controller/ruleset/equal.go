package ruleset

import "slices"

// Equal reports whether two tables have the same content; nil means the
// table is absent. Counter values are observations and are ignored.
func Equal(a, b *Table) bool {
	if a == nil || b == nil {
		return a == b
	}
	return slices.EqualFunc(a.Counters, b.Counters, func(x, y Counter) bool { return x.Name == y.Name }) &&
		slices.EqualFunc(a.Sets, b.Sets, equalSet) &&
		slices.EqualFunc(a.Chains, b.Chains, equalChain) &&
		slices.Equal(a.Foreign, b.Foreign)
}

func equalSet(x, y Set) bool {
	return x.Name == y.Name && x.Type == y.Type && x.Interval == y.Interval && slices.Equal(x.Elements, y.Elements)
}

func equalChain(x, y Chain) bool {
	return x.Hook == y.Hook && x.Priority == y.Priority && slices.Equal(x.Rules, y.Rules)
}
