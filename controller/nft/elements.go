package nft

import (
	"fmt"
	"slices"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// UpdateElements changes the elements of sets of table inet ctguard in
// place, in one atomic batch (each delta's Set holds all the elements the
// set has after it): every removed element is deleted, then every
// added one added. Nothing else in the table is touched, so every counter
// keeps its value. The kernel refuses the whole batch, and nothing changes,
// when an element to delete is missing or one to add overlaps another:
// the caller read the table to compute the deltas, and reads it again.
func (c *Client) UpdateElements(deltas []ruleset.SetDelta) error {
	if len(deltas) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.batch()
	if err != nil {
		return err
	}
	for _, d := range deltas {
		if _, ok := keyTypes[d.Set.Type]; !ok || d.Set.Interval == (d.Set.Type == ruleset.SetIfname) {
			return fmt.Errorf("set %s: type %s with interval=%v is not supported: %w", d.Set.Name, d.Set.Type, d.Set.Interval, ErrInvalidTable)
		}
		set := &nftables.Set{Table: c.table, Name: d.Set.Name, KeyType: keyTypes[d.Set.Type], Interval: d.Set.Interval}
		if d.Set.Type == ruleset.SetIfname {
			set.KeyByteOrder = binaryutil.NativeEndian
		}
		for _, step := range []struct {
			elements []string
			queue    func(*nftables.Set, []nftables.SetElement) error
		}{{d.Remove, b.SetDeleteElements}, {d.Add, b.SetAddElements}} {
			for chunk := range slices.Chunk(step.elements, elementsPerMessage) {
				elems, err := setElements(ruleset.Set{Name: d.Set.Name, Type: d.Set.Type, Elements: chunk})
				if err != nil {
					return err
				}
				if err := step.queue(set, elems); err != nil {
					return fmt.Errorf("set %s: %w", d.Set.Name, err)
				}
			}
		}
	}
	before, genErr := c.raw.genID()
	if err := b.Flush(); err != nil {
		return fmt.Errorf("update set elements of table inet ctguard: %w", err)
	}
	if genErr == nil {
		c.rememberUpdate(before, deltas)
	}
	return nil
}

// rememberUpdate keeps as verified the table the update made, when the
// table before it was verified at generation before and the update was
// the only transaction since (the generation moved by exactly one): a
// controller applying edit after edit then never dumps the sets again.
func (c *Client) rememberUpdate(before uint32, deltas []ruleset.SetDelta) {
	last := c.last
	c.last = nil
	if last == nil || last.gen != before {
		return
	}
	after, err := c.raw.genID()
	if err != nil || after != before+1 {
		return
	}
	t := *last.table
	t.Sets = slices.Clone(t.Sets)
	for _, d := range deltas {
		i := slices.IndexFunc(t.Sets, func(s ruleset.Set) bool { return s.Name == d.Set.Name })
		if i < 0 || len(t.Sets[i].Elements)-len(d.Remove)+len(d.Add) != len(d.Set.Elements) {
			return
		}
		t.Sets[i].Elements = d.Set.Elements
	}
	c.last = &verified{gen: after, table: &t}
}
