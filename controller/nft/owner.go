package nft

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// ctguard marks the table it creates as its own with a regular (hookless,
// so never evaluated) chain holding one rule, "return", with a fixed comment, written in
// the batch that creates the table: google/nftables v0.3.0 can write
// neither table flags nor table user data, and reads back no set or chain
// comment, but it writes and reads back a rule's comment. A table inet
// ctguard without the mark was made by someone else and is never replaced
// or deleted. `nft list table inet ctguard` shows the mark.
const (
	// OwnerChainName names the marker chain.
	OwnerChainName = "ctguard_owner"
	// OwnerComment is the comment of the marker chain's rule.
	OwnerComment = "table created and managed by ctguard: ctguard replaces or deletes it"
)

// ErrForeignTable matches a ForeignTableError.
var ErrForeignTable = errors.New("table inet ctguard was not created by ctguard")

// ForeignTableError is returned by Read for a table inet ctguard without
// ctguard's ownership mark.
type ForeignTableError struct {
	// Contents describes every chain, set and object the table holds, one
	// per entry, e.g. "chain raw (hook prerouting, priority -300, policy
	// drop, 0 rules)".
	Contents []string
	// Table is the table as read, what ctguard never creates described in
	// Table.Foreign. A table ctguard created before it wrote the mark reads
	// without Foreign entries; whether it is ctguard's is the journal's
	// call.
	Table *ruleset.Table
}

// Error implements error: what the table holds and how to proceed.
func (e *ForeignTableError) Error() string {
	return fmt.Sprintf("%s (it lacks ctguard's ownership mark, chain %s), so ctguard will neither replace nor delete it. It holds: %s. "+
		"Find out what created it (nft list table inet ctguard); if nothing needs it, delete it (nft delete table inet ctguard) and run ctguard again",
		ErrForeignTable, OwnerChainName, summarise(e.Contents))
}

// maxListed bounds how many objects a message lists.
const maxListed = 20

// summarise joins up to maxListed descriptions.
func summarise(contents []string) string {
	switch n := len(contents); {
	case n == 0:
		return "nothing"
	case n > maxListed:
		return fmt.Sprintf("%s; and %d more", strings.Join(contents[:maxListed], "; "), n-maxListed)
	}
	return strings.Join(contents, "; ")
}

// Is makes errors.Is(err, ErrForeignTable) true.
func (e *ForeignTableError) Is(target error) bool { return target == ErrForeignTable }

// isOwnerChain reports whether ch is (named as) the marker chain.
func isOwnerChain(ch *nftables.Chain) bool {
	return ch.Name == OwnerChainName && ch.Hooknum == nil
}

// addOwnerMark queues the marker chain and its rule in table t.
func addOwnerMark(b *nftables.Conn, t *nftables.Table) {
	ch := b.AddChain(&nftables.Chain{Name: OwnerChainName, Table: t})
	b.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: ownerExprs(), UserData: commentData(OwnerComment)})
}

// ownerExprs is the marker rule's statement: nft lists no rule without one.
func ownerExprs() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}} }

// marked reports whether table inet ctguard carries the ownership mark.
func (c *Client) marked() (bool, error) { return c.markedTable(c.table) }

// markedTable reports whether table t carries the ownership mark.
func (c *Client) markedTable(t *nftables.Table) (bool, error) {
	chains, err := c.conn.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != t.Name || !isOwnerChain(ch) {
			continue
		}
		rules, err := c.conn.GetRules(t, ch)
		if err != nil {
			return false, fmt.Errorf("read rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if comment, _ := userdata.GetString(r.UserData, userdata.TypeComment); comment == OwnerComment && sameExprs(ownerExprs(), r.Exprs) {
				return true, nil
			}
		}
	}
	return false, nil
}

// ownedFamilyTables returns, per gate family, whether table ip (ip6)
// ctguard exists, and refuses with an error wrapping ErrForeignTable when
// one exists without ctguard's mark: ctguard never replaces or deletes it.
func (c *Client) ownedFamilyTables() (map[nftables.TableFamily]bool, error) {
	owned := map[nftables.TableFamily]bool{}
	for _, fam := range gateFamilies {
		tables, err := c.conn.ListTablesOfFamily(fam)
		if err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == ruleset.TableName }) {
			continue
		}
		marked, err := c.markedTable(familyTable(fam))
		if err != nil {
			return nil, err
		}
		if !marked {
			return nil, fmt.Errorf("%w: table %s ctguard lacks ctguard's ownership mark (chain %s), so ctguard will neither replace nor delete it; "+
				"find out what created it (nft list table %s ctguard); if nothing needs it, delete it and run ctguard again",
				ErrForeignTable, familyName(fam), OwnerChainName, familyName(fam))
		}
		owned[fam] = true
	}
	return owned, nil
}

// contents describes everything in the table, for a refusal or a plan.
func (c *Client) contents() ([]string, error) {
	var out []string
	chains, err := c.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != ruleset.TableName {
			continue
		}
		rules, err := c.conn.GetRules(c.table, ch)
		if err != nil {
			return nil, fmt.Errorf("read rules of chain %s: %w", ch.Name, err)
		}
		out = append(out, describeChain(ch, len(rules)))
	}
	sets, err := c.conn.GetSets(c.table)
	if err != nil {
		return nil, fmt.Errorf("read sets: %w", err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue // part of a rule
		}
		elems, err := c.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("read set %s: %w", s.Name, err)
		}
		out = append(out, fmt.Sprintf("set %s (type %s, %d elements)", s.Name, s.KeyType.Name, len(elems)))
	}
	objs, err := c.conn.GetNamedObjects(c.table)
	if err != nil {
		return nil, fmt.Errorf("read objects: %w", err)
	}
	for _, o := range objs {
		if n, ok := o.(*nftables.NamedObj); ok && n.Table != nil && n.Table.Name == ruleset.TableName {
			out = append(out, fmt.Sprintf("%s %s", objTypeName(n.Type), n.Name))
		}
	}
	return out, nil
}

func describeChain(ch *nftables.Chain, rules int) string {
	if ch.Hooknum == nil {
		return fmt.Sprintf("chain %s (regular, %d rules)", ch.Name, rules)
	}
	policy := "accept"
	if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
		policy = "drop"
	}
	prio := 0
	if ch.Priority != nil {
		prio = int(*ch.Priority)
	}
	hook := fmt.Sprintf("%d", uint32(*ch.Hooknum))
	if int(*ch.Hooknum) < len(hookNames) {
		hook = hookNames[*ch.Hooknum]
	}
	return fmt.Sprintf("chain %s (type %s, hook %s, priority %d, policy %s, %d rules)", ch.Name, ch.Type, hook, prio, policy, rules)
}

// hookNames are the inet family's hooks by number.
var hookNames = []string{"prerouting", "input", "forward", "output", "postrouting", "ingress"}

func objTypeName(t nftables.ObjType) string {
	switch t {
	case nftables.ObjTypeCounter:
		return "counter"
	case nftables.ObjTypeQuota:
		return "quota"
	case nftables.ObjTypeLimit:
		return "limit"
	case nftables.ObjTypeCtHelper:
		return "ct helper"
	case nftables.ObjTypeCtTimeout:
		return "ct timeout"
	case nftables.ObjTypeSecMark:
		return "secmark"
	case nftables.ObjTypeSynProxy:
		return "synproxy"
	}
	return fmt.Sprintf("object (type %d)", t)
}

// tableFlags returns the table's flags in host order (google/nftables
// decodes the big-endian attribute natively).
func tableFlags(t *nftables.Table) uint32 { return bits.ReverseBytes32(t.Flags) }
