package ruleset

import (
	"slices"

	"github.com/ctguard/ctguard/internal/intervals"
	"github.com/ctguard/ctguard/policy"
)

// SetCache builds tables as Build does and remembers the address and port
// sets of its last build, by set name, with the input they were built
// from. Building again after a policy edit then merges only the sets whose
// input changed (comparing an input with the last one costs far less than
// merging it: no sorting, no allocation) and renders only their elements
// that changed; the others are taken as they were. A 100,000-address set
// with one address edited is built in about a millisecond instead of tens.
// Tables share their element slices with the cache and with each other:
// read them, never modify them. The zero value is ready; it is not safe
// for concurrent use.
type SetCache struct {
	v4    map[string]*memo[uint32]
	v6    map[string]*memo[intervals.U128]
	ports map[string]*memo[uint16]
	// next collects this build's memos; sets not built again are dropped.
	next *SetCache
}

// memo is one interval set as last built: its input spans in the
// policy's order, the same sorted, the merged spans and their elements.
type memo[T comparable] struct {
	in, sorted []intervals.Span[T]
	merged     []intervals.Span[T]
	elements   []string
}

// Build is Build with the cache.
func (c *SetCache) Build(policies []policy.Policy, opts Options) Table {
	c.next = &SetCache{}
	t := build(policies, opts, c)
	c.v4, c.v6, c.ports = c.next.v4, c.next.v6, c.next.ports
	c.next = nil
	return t
}

// kind is what the cache does differently for a type of set.
type kind[T comparable] struct {
	memos  func(*SetCache) *map[string]*memo[T]
	order  intervals.Order[T]
	render func(intervals.Span[T]) string
}

var (
	ipv4Sets = kind[uint32]{
		memos: func(c *SetCache) *map[string]*memo[uint32] { return &c.v4 },
		order: intervals.IPv4,
		render: func(s intervals.Span[uint32]) string {
			return AddrRange{First: intervals.Addr4(s.First), Last: intervals.Addr4(s.Last)}.String()
		},
	}
	ipv6Sets = kind[intervals.U128]{
		memos: func(c *SetCache) *map[string]*memo[intervals.U128] { return &c.v6 },
		order: intervals.IPv6,
		render: func(s intervals.Span[intervals.U128]) string {
			return AddrRange{First: intervals.Addr6(s.First), Last: intervals.Addr6(s.Last)}.String()
		},
	}
	portSets = kind[uint16]{
		memos:  func(c *SetCache) *map[string]*memo[uint16] { return &c.ports },
		order:  intervals.Ports,
		render: func(s intervals.Span[uint16]) string { return PortSpan(s).String() },
	}
)

// portSpans returns the spans of port ranges.
func portSpans(ports []policy.PortRange) []intervals.Span[uint16] {
	out := make([]intervals.Span[uint16], len(ports))
	for i, p := range ports {
		out[i] = intervals.Span[uint16]{First: min(p.From, p.To), Last: max(p.From, p.To)}
	}
	return out
}

// elements returns the elements of the interval set name of kind k built
// from the spans in (which it keeps): the last build's when its input was
// the same; else the merged spans rendered, reusing the last build's
// string of every span it had too, and, when the input differs from the
// last one in a small part (an edit), sorted by editing the last sorted
// input rather than sorting again. A nil cache merges and renders.
func elements[T comparable](c *SetCache, k kind[T], name string, in []intervals.Span[T]) []string {
	if c == nil {
		return renderSpans(k, k.order.Merge(in), nil)
	}
	last := (*k.memos(c))[name]
	m := last
	if last == nil || !slices.Equal(last.in, in) {
		m = &memo[T]{in: in}
		ok := false
		if removed, added, small := edit(last, in); small {
			m.sorted, ok = k.order.Edit(last.sorted, removed, added)
		}
		if !ok {
			m.sorted = slices.Clone(in)
			k.order.Sort(m.sorted)
		}
		m.merged = k.order.MergeSorted(m.sorted)
		m.elements = renderSpans(k, m.merged, last)
	}
	next := k.memos(c.next)
	if *next == nil {
		*next = map[string]*memo[T]{}
	}
	(*next)[name] = m
	return m.elements
}

// edit returns the spans an edit of last's input into in removed and
// added: what lies between their common beginning and common end (copies).
// small is false when there is no last input or the edit is more than
// an eighth of it: sorting again is then about as cheap.
func edit[T comparable](last *memo[T], in []intervals.Span[T]) (removed, added []intervals.Span[T], small bool) {
	if last == nil {
		return nil, nil, false
	}
	old := last.in
	head := 0
	for head < len(old) && head < len(in) && old[head] == in[head] {
		head++
	}
	tail := 0
	for tail < len(old)-head && tail < len(in)-head && old[len(old)-1-tail] == in[len(in)-1-tail] {
		tail++
	}
	removed, added = old[head:len(old)-tail], in[head:len(in)-tail]
	if 8*(len(removed)+len(added)) > len(old) {
		return nil, nil, false
	}
	return slices.Clone(removed), slices.Clone(added), true
}

// renderSpans renders merged spans, taking the string of each span that
// last (nil: none) has too. Both are sorted: one walk side by side.
func renderSpans[T comparable](k kind[T], merged []intervals.Span[T], last *memo[T]) []string {
	out := make([]string, len(merged))
	j := 0
	for i, s := range merged {
		if last != nil {
			for j < len(last.merged) && last.merged[j] != s && k.order.Compare(last.merged[j], s) < 0 {
				j++
			}
			if j < len(last.merged) && last.merged[j] == s {
				out[i] = last.elements[j]
				continue
			}
		}
		out[i] = k.render(s)
	}
	return out
}
