package nft

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
)

// gateFamilies are the families of the tables that hold the gate rules when
// they use the xtables NFQUEUE target: nft 1.0.6 aborts "nft -j list" on an
// xtables target inside an inet table (libxtables has no NFPROTO_INET) and
// prints it in ip and ip6 tables, so ctguard also owns tables ip ctguard
// and ip6 ctguard, holding the prerouting chain, its gate rules and their
// counters and nothing else. The model keeps them in inet ctguard's
// prerouting chain; a gate rule for both families is in both tables, and
// its counter is the sum of the two.
var gateFamilies = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

func familyTable(fam nftables.TableFamily) *nftables.Table {
	return &nftables.Table{Name: ruleset.TableName, Family: fam}
}

// inFamily reports whether a gate rule for proto goes in the table of fam.
func inFamily(proto ruleset.NFProto, fam nftables.TableFamily) bool {
	switch proto {
	case ruleset.NFProtoIPv4:
		return fam == nftables.TableFamilyIPv4
	case ruleset.NFProtoIPv6:
		return fam == nftables.TableFamilyIPv6
	}
	return true
}

// addGateTables queues the family tables of the prerouting chain ch: in
// each, the chain with the rules of that family and their counters, with
// their current values carried over.
func (c *Client) addGateTables(b *nftables.Conn, ch ruleset.Chain, counters []ruleset.Counter, q QueueEncoding) error {
	model := map[string]ruleset.Counter{}
	for _, ct := range counters {
		model[ct.Name] = ct
	}
	for _, fam := range gateFamilies {
		var rules []ruleset.Rule
		for _, r := range ch.Rules {
			if inFamily(r.NFProto, fam) {
				rules = append(rules, r)
			}
		}
		if len(rules) == 0 {
			continue
		}
		current, _, err := c.objectsOf(familyTable(fam))
		if err != nil {
			return err
		}
		t := b.AddTable(familyTable(fam))
		addOwnerMark(b, t) // in the batch that creates the table
		added := map[string]bool{}
		for _, r := range rules {
			if added[r.Counter] {
				continue
			}
			added[r.Counter] = true
			ct, ok := current[r.Counter]
			if !ok {
				ct = model[r.Counter] // new: the model's value (0 unless a test sets one)
			}
			b.AddObj(&nftables.CounterObj{Table: t, Name: r.Counter, Packets: ct.Packets, Bytes: ct.Bytes})
		}
		chain := b.AddChain(&nftables.Chain{
			Name:     ch.Name(),
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookRef(chainHooks[ch.Hook]),
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority)),
			Policy:   policyRef(nftables.ChainPolicyAccept),
		})
		for _, r := range rules {
			b.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: ruleExprs(r, nil, q), UserData: commentData(r.Comment())})
		}
	}
	return nil
}

// readGateTables adds what tables ip and ip6 ctguard hold to t: their
// counters (summed by name) and their gate rules, merged into the
// prerouting chain; it reports whether there were gate rules. Anything else
// in them makes Read fail with ErrUnrecognised; a rule for both families
// present in one table only reads as an unrecognised rule.
func (c *Client) readGateTables(t *ruleset.Table) (bool, error) {
	perFamily := map[nftables.TableFamily][]ruleset.Rule{}
	var prio *int
	counters := map[string]ruleset.Counter{}
	for _, ct := range t.Counters {
		counters[ct.Name] = ct
	}
	found := false
	for _, fam := range gateFamilies {
		tables, err := c.conn.ListTablesOfFamily(fam)
		if err != nil {
			return false, fmt.Errorf("list tables: %w", err)
		}
		i := slices.IndexFunc(tables, func(x *nftables.Table) bool { return x.Name == ruleset.TableName })
		if i < 0 {
			continue
		}
		found = true
		ft := familyTable(fam)
		if flags := bits.ReverseBytes32(tables[i].Flags); flags != 0 {
			return false, fmt.Errorf("table %s flags %#x (ctguard sets none): %w", familyName(fam), flags, ErrUnrecognised)
		}
		fc, foreign, err := c.objectsOf(ft)
		if err != nil {
			return false, err
		}
		if len(foreign) > 0 {
			return false, fmt.Errorf("stateful objects %q in table %s: %w", foreign, familyName(fam), ErrUnrecognised)
		}
		addCounters(counters, fc)
		if sets, err := c.conn.GetSets(ft); err != nil {
			return false, fmt.Errorf("read sets: %w", err)
		} else if len(sets) > 0 {
			return false, fmt.Errorf("sets in table %s (ctguard makes none there): %w", familyName(fam), ErrUnrecognised)
		}
		chains, err := c.conn.ListChainsOfTableFamily(fam)
		if err != nil {
			return false, fmt.Errorf("list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table == nil || ch.Table.Name != ruleset.TableName || isOwnerChain(ch) {
				continue
			}
			if ch.Name != string(ruleset.HookPrerouting) || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookPrerouting ||
				ch.Priority == nil || ch.Type != nftables.ChainTypeFilter || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
				return false, fmt.Errorf("chain %s of table %s is not ctguard's gate chain: %w", ch.Name, familyName(fam), ErrUnrecognised)
			}
			p := int(*ch.Priority)
			prio = &p
			rules, err := c.getRules(fam, ch.Name)
			if err != nil {
				return false, fmt.Errorf("read rules of chain %s of table %s: %w", ch.Name, familyName(fam), err)
			}
			for _, r := range rules {
				perFamily[fam] = append(perFamily[fam], decodeRule(r))
			}
		}
	}
	if !found {
		return false, nil
	}
	t.Counters = t.Counters[:0]
	for _, ct := range counters {
		t.Counters = append(t.Counters, ct)
	}
	slices.SortFunc(t.Counters, func(a, b ruleset.Counter) int { return cmp.Compare(a.Name, b.Name) })
	rules := mergeFamilies(perFamily[nftables.TableFamilyIPv4], perFamily[nftables.TableFamilyIPv6])
	if len(rules) == 0 {
		return false, nil
	}
	i := slices.IndexFunc(t.Chains, func(ch ruleset.Chain) bool { return ch.Hook == ruleset.HookPrerouting })
	if i < 0 {
		t.Chains = slices.Insert(t.Chains, 0, ruleset.Chain{Hook: ruleset.HookPrerouting, Priority: *prio})
		i = 0
	}
	t.Chains[i].Rules = append(t.Chains[i].Rules, rules...)
	slices.SortStableFunc(t.Chains[i].Rules, func(x, y ruleset.Rule) int {
		return cmp.Or(cmp.Compare(x.Policy, y.Policy), cmp.Compare(x.Purpose, y.Purpose), cmp.Compare(x.NFProto, y.NFProto))
	})
	return true, nil
}

// mergeFamilies merges the gate rules of tables ip and ip6 ctguard: a rule
// of the table's own family counts once, a rule for both families once if
// both tables hold it; anything else reads as unrecognised.
func mergeFamilies(ip, ip6 []ruleset.Rule) []ruleset.Rule {
	var out []ruleset.Rule
	unrecognised := func(r ruleset.Rule, why string) ruleset.Rule {
		return ruleset.Rule{Purpose: ruleset.PurposeUnrecognised, Detail: fmt.Sprintf("%s: %s", r.Comment(), why)}
	}
	ip6Left := slices.Clone(ip6)
	for _, r := range ip {
		switch {
		case r.Purpose != ruleset.PurposeGate:
			out = append(out, r) // already unrecognised
		case r.NFProto == ruleset.NFProtoIPv4:
			out = append(out, r)
		case r.NFProto == ruleset.NFProtoAny:
			if j := slices.Index(ip6Left, r); j >= 0 {
				ip6Left = slices.Delete(ip6Left, j, j+1)
				out = append(out, r)
			} else {
				out = append(out, unrecognised(r, "in table ip ctguard only"))
			}
		default:
			out = append(out, unrecognised(r, "an IPv6 rule in table ip ctguard"))
		}
	}
	for _, r := range ip6Left {
		switch {
		case r.Purpose != ruleset.PurposeGate:
			out = append(out, r)
		case r.NFProto == ruleset.NFProtoIPv6:
			out = append(out, r)
		case r.NFProto == ruleset.NFProtoAny:
			out = append(out, unrecognised(r, "in table ip6 ctguard only"))
		default:
			out = append(out, unrecognised(r, "an IPv4 rule in table ip6 ctguard"))
		}
	}
	return out
}

// addCounters adds the values of from to counters, by name.
func addCounters(counters, from map[string]ruleset.Counter) {
	for name, v := range from {
		ct := counters[name]
		ct.Name = name
		ct.Packets += v.Packets
		ct.Bytes += v.Bytes
		counters[name] = ct
	}
}

func familyName(fam nftables.TableFamily) string {
	if fam == nftables.TableFamilyIPv6 {
		return "ip6 ctguard"
	}
	return "ip ctguard"
}
