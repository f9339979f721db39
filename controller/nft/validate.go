package nft

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/ctguard/ctguard/controller/ruleset"
)

// canonical checks that the kernel would accept t and that Read could give
// it back, and returns a deep copy with set elements as Read renders them.
func canonical(t ruleset.Table) (ruleset.Table, error) {
	var out ruleset.Table
	if len(t.Foreign) > 0 {
		return ruleset.Table{}, fmt.Errorf("a table to write describes objects ctguard never creates (%s): %w", summarise(t.Foreign), ErrInvalidTable)
	}
	counters := map[string]bool{}
	for _, c := range t.Counters {
		if c.Name == "" || counters[c.Name] {
			return ruleset.Table{}, fmt.Errorf("counter %q: empty or duplicate name: %w", c.Name, ErrInvalidTable)
		}
		counters[c.Name] = true
		out.Counters = append(out.Counters, c)
	}
	slices.SortFunc(out.Counters, func(a, b ruleset.Counter) int { return cmp.Compare(a.Name, b.Name) })
	sets := map[string]ruleset.SetType{}
	for _, s := range t.Sets {
		if _, dup := sets[s.Name]; dup || s.Name == "" {
			return ruleset.Table{}, fmt.Errorf("set %q: empty or duplicate name: %w", s.Name, ErrInvalidTable)
		}
		if _, ok := keyTypes[s.Type]; !ok || s.Interval == (s.Type == ruleset.SetIfname) {
			return ruleset.Table{}, fmt.Errorf("set %s: type %s with interval=%v is not supported: %w", s.Name, s.Type, s.Interval, ErrInvalidTable)
		}
		sets[s.Name] = s.Type
		elems, err := setElements(s)
		if err != nil {
			return ruleset.Table{}, err
		}
		rendered, err := decodeElements(s.Type, elems)
		if err != nil {
			return ruleset.Table{}, fmt.Errorf("set %s: %w: %w", s.Name, ErrInvalidTable, err)
		}
		if len(rendered) != len(s.Elements) {
			return ruleset.Table{}, fmt.Errorf("set %s: elements overlap, repeat or touch (merge them first): %w", s.Name, ErrInvalidTable)
		}
		out.Sets = append(out.Sets, ruleset.Set{Name: s.Name, Type: s.Type, Interval: s.Interval, Elements: rendered})
	}
	hooks := map[ruleset.Hook]bool{}
	for _, c := range t.Chains {
		if _, ok := chainHooks[c.Hook]; !ok || hooks[c.Hook] {
			return ruleset.Table{}, fmt.Errorf("chain %q: unknown or duplicate hook: %w", c.Hook, ErrInvalidTable)
		}
		hooks[c.Hook] = true
		for _, r := range c.Rules {
			if err := checkRule(r, c.Hook, counters, sets); err != nil {
				return ruleset.Table{}, fmt.Errorf("chain %s, rule %q: %w: %w", c.Name(), r.Comment(), ErrInvalidTable, err)
			}
		}
		out.Chains = append(out.Chains, ruleset.Chain{Hook: c.Hook, Priority: c.Priority, Rules: nilIfEmpty(slices.Clone(c.Rules))})
	}
	slices.SortFunc(out.Sets, func(a, b ruleset.Set) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Chains, func(a, b ruleset.Chain) int { return cmp.Compare(hookOrder[a.Hook], hookOrder[b.Hook]) })
	return out, nil
}

// checkRule checks a rule's references against the table's objects.
func checkRule(r ruleset.Rule, hook ruleset.Hook, counters map[string]bool, sets map[string]ruleset.SetType) error {
	if r.Purpose == ruleset.PurposeUnrecognised || r.Detail != "" {
		return fmt.Errorf("an unrecognised rule cannot be installed")
	}
	if !counters[r.Counter] {
		return fmt.Errorf("counter %q does not exist", r.Counter)
	}
	gate := r.Purpose == ruleset.PurposeGate
	switch {
	case gate != (hook == ruleset.HookPrerouting):
		return fmt.Errorf("gate rules go on the prerouting chain, and nothing else does")
	case !gate && (r.NATStatus != 0 || r.MarkBit != 0 || r.Queue != 0):
		return fmt.Errorf("only a gate rule has a NAT status, mark bit or queue")
	case gate && (r.RSTOnly || r.Drop || r.IifnameSet != "" || r.AddrSet != "" || r.PortSet != "" || r.AddrIsDest || r.PortIsDest):
		return fmt.Errorf("a gate rule has no rst, drop, iifname, address or port match")
	case gate && r.MarkBit == 0:
		return fmt.Errorf("a gate rule needs the mark bit")
	case gate && r.NATStatus&^(ruleset.StatusSrcNAT|ruleset.StatusDstNAT) != 0:
		return fmt.Errorf("a gate rule tests the NAT status bits only")
	}
	if r.IifnameSet != "" && hook == ruleset.HookOutput {
		return fmt.Errorf("iifname does not exist on the output hook")
	}
	addrType := ruleset.SetIPv4Addr
	if r.NFProto == ruleset.NFProtoIPv6 {
		addrType = ruleset.SetIPv6Addr
	}
	if r.AddrSet != "" && r.NFProto == ruleset.NFProtoAny {
		return fmt.Errorf("an address set needs NFProto ipv4 or ipv6")
	}
	refs := []struct {
		name string
		typ  ruleset.SetType
	}{{r.IifnameSet, ruleset.SetIfname}, {r.AddrSet, addrType}, {r.PortSet, ruleset.SetInetService}}
	for _, ref := range refs {
		if ref.name == "" {
			continue
		}
		if typ, ok := sets[ref.name]; !ok || typ != ref.typ {
			return fmt.Errorf("set %q of type %s does not exist", ref.name, ref.typ)
		}
	}
	if (r.AddrIsDest && r.AddrSet == "") || (r.PortIsDest && r.PortSet == "") {
		return fmt.Errorf("a direction without a set cannot be read back")
	}
	return nil
}

// nilIfEmpty makes an empty slice nil, as a netlink read gives it.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
