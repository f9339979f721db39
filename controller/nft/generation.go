package nft

import (
	"cmp"
	"maps"
	"slices"

	"github.com/ctguard/ctguard/controller/ruleset"
)

// verified is the table as last read in full and the ruleset generation
// it was read at. The kernel adds one to the generation with every
// committed nftables transaction in the namespace, of any table and by
// anyone: while it stays the same nothing has changed, so Read gives the
// table again without dumping its sets, with fresh counter values. A
// write of ctguard's own moves the generation too. While Watch runs, a
// generation moved only by transactions its notifications show touching
// other tables leaves the table verified as well.
type verified struct {
	gen   uint32
	table *ruleset.Table
}

// cached returns the verified table with the counters' current values
// when the generation is still gen; ok is false otherwise.
func (c *Client) cached(gen uint32) (t *ruleset.Table, ok bool, err error) {
	if c.last == nil {
		return nil, false, nil
	}
	if c.last.gen != gen {
		if !c.changes.untouched(c.last.gen, gen) {
			return nil, false, nil
		}
		// Every transaction since was notified, none touching inet
		// ctguard (other tables changed).
		c.last.gen = gen
	}
	counters, err := c.allCounters()
	if err != nil {
		return nil, false, err
	}
	out := *c.last.table // sets and chains are shared: callers only read them
	out.Counters = slices.SortedFunc(maps.Values(counters), func(a, b ruleset.Counter) int { return cmp.Compare(a.Name, b.Name) })
	return &out, true, nil
}

// remember keeps t, read in full, as verified when the generation is
// still gen after the read: nothing committed while the dumps ran.
func (c *Client) remember(gen uint32, t *ruleset.Table) {
	c.last = nil
	if after, err := c.raw.genID(); err == nil && after == gen && t != nil {
		c.last = &verified{gen: gen, table: t}
	}
}
