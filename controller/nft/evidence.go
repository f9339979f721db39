package nft

import (
	"fmt"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// EvidenceTableName is the table "ctguard detect" writes the evidence rules
// to (ruleset.Evidence) when table inet ctguard holds none for its group.
// It holds nothing else and is removed when detect ends.
const EvidenceTableName = "ctguard_detect"

func (c *Client) evidenceTable() *nftables.Table {
	return &nftables.Table{Name: EvidenceTableName, Family: nftables.TableFamilyINet}
}

// ReplaceEvidenceTable writes table inet ctguard_detect holding the
// evidence rules of group, replacing any previous one, in one batch.
func (c *Client) ReplaceEvidenceTable(group uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := ruleset.Evidence(group)
	tbl := c.evidenceTable()
	b, err := c.batch()
	if err != nil {
		return err
	}
	b.AddTable(tbl)
	b.DelTable(tbl)
	b.AddTable(tbl)
	for _, ct := range t.Counters {
		b.AddObj(&nftables.CounterObj{Table: tbl, Name: ct.Name})
	}
	for _, ch := range t.Chains {
		chain := b.AddChain(&nftables.Chain{
			Name:     ch.Name(),
			Table:    tbl,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookRef(chainHooks[ch.Hook]),
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority)),
			Policy:   policyRef(nftables.ChainPolicyAccept),
		})
		for _, r := range ch.Rules {
			b.AddRule(&nftables.Rule{Table: tbl, Chain: chain, Exprs: ruleExprs(r, nil, QueueNative), UserData: commentData(r.Comment())})
		}
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("write table inet %s: %w", EvidenceTableName, err)
	}
	return nil
}

// DeleteEvidenceTable removes table inet ctguard_detect; an absent table
// is fine.
func (c *Client) DeleteEvidenceTable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.batch()
	if err != nil {
		return err
	}
	tbl := c.evidenceTable()
	b.AddTable(tbl)
	b.DelTable(tbl)
	if err := b.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", EvidenceTableName, err)
	}
	return nil
}

// EvidenceCounters reads the evidence rules' counters (by hook) of table
// inet ctguard (own true) or inet ctguard_detect; absent ones are missing.
func (c *Client) EvidenceCounters(own bool) (map[ruleset.Hook]ruleset.Counter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tbl := c.table
	if !own {
		tbl = c.evidenceTable()
	}
	objs, err := c.conn.GetNamedObjects(tbl)
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := map[ruleset.Hook]ruleset.Counter{}
	for _, o := range objs {
		n, ok := o.(*nftables.NamedObj)
		if !ok || n.Table == nil || n.Table.Name != tbl.Name {
			continue
		}
		v, isCounter := n.Obj.(*expr.Counter)
		for _, h := range []ruleset.Hook{ruleset.HookInput, ruleset.HookForward, ruleset.HookOutput} {
			if isCounter && n.Name == ruleset.EvidenceCounter(h) {
				out[h] = ruleset.Counter{Name: n.Name, Packets: v.Packets, Bytes: v.Bytes}
			}
		}
	}
	return out, nil
}
