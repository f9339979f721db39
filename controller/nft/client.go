// Package nft is ctguard's kernel edge for nftables: it installs, reads and
// removes table inet ctguard (the ruleset model) over netlink with
// google/nftables, in one network namespace. Fake is an atomic in-memory
// stand-in with the same methods for unit tests.
package nft

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchBuffer is the socket buffer forced, both ways, for batches: one
// batch holds the whole table (a 10,000-range set alone is about half a
// megabyte), and the kernel answers every message of it with an ack; with
// the default receive buffer a table of a few dozen policies overflows the
// acks (ENOBUFS) although the kernel committed the batch.
const batchBuffer = 64 << 20

// Client talks nftables netlink in one network namespace. google/nftables
// allocates set IDs from an unsynchronised global counter: do all writes,
// of every Client, from one goroutine. A Client serialises its own calls.
type Client struct {
	mu    sync.Mutex
	conn  *nftables.Conn // lasting, for reads
	opts  []nftables.ConnOption
	table *nftables.Table
	// netnsFd is the namespace (< 0: the caller's), for getRules.
	netnsFd int
	// queue is the gate rules' queue encoding the kernel took last
	// (queueKnown), else the one to try first.
	queue      QueueEncoding
	queueKnown bool
}

// New opens a netlink connection in the namespace of netnsFd, or in the
// caller's current namespace when netnsFd < 0.
func New(netnsFd int) (*Client, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(forceBuffers)}
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	conn, err := nftables.New(append(opts, nftables.AsLasting())...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	return &Client{conn: conn, opts: opts, netnsFd: netnsFd, table: &nftables.Table{Name: ruleset.TableName, Family: nftables.TableFamilyINet}}, nil
}

// batch returns a fresh connection to queue one write batch on: a batch
// abandoned half-built is then simply dropped, never sent by a later Flush.
func (c *Client) batch() (*nftables.Conn, error) {
	b, err := nftables.New(c.opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	return b, nil
}

// forceBuffers lets one batch carry a large table and receive all its
// acks (as nft does). It falls back to the capped sizes without
// CAP_NET_ADMIN.
func forceBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sndErr, rcvErr error
	if err := raw.Control(func(fd uintptr) {
		sndErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBuffer)
		rcvErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchBuffer)
	}); err != nil {
		return err
	}
	if sndErr != nil {
		if err := c.SetWriteBuffer(batchBuffer); err != nil {
			return err
		}
	}
	if rcvErr != nil {
		return c.SetReadBuffer(batchBuffer)
	}
	return nil
}

// Close closes the netlink connection.
func (c *Client) Close() error {
	return c.conn.CloseLasting()
}

// Read returns the content of table inet ctguard, or nil, nil when the
// table is absent. A table without ctguard's ownership mark (see
// OwnerChainName) gives a *ForeignTableError. Rules it cannot map back to
// the model come back as PurposeUnrecognised rules; table flags (such as
// dormant) and chains, sets and objects the model cannot express are
// described in Table.Foreign. The dumps are not one atomic snapshot, which
// is fine as long as ctguard alone writes the table.
func (c *Client) Read() (*ruleset.Table, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tables, err := c.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list inet tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == ruleset.TableName })
	if i < 0 {
		return nil, nil
	}
	marked, err := c.marked()
	if err != nil {
		return nil, err
	}
	t, err := c.read(tables[i])
	if err != nil || marked {
		return t, err
	}
	contents, err := c.contents()
	if err != nil {
		return nil, err
	}
	return nil, &ForeignTableError{Contents: contents, Table: t}
}

// read decodes the table into the model, leaving out the ownership mark.
func (c *Client) read(table *nftables.Table) (*ruleset.Table, error) {
	var t ruleset.Table
	if flags := tableFlags(table); flags != 0 {
		// e.g. dormant: every rule would be inert while the table looks right.
		t.Foreign = append(t.Foreign, fmt.Sprintf("table flags %#x", flags))
	}
	counters, foreign, err := c.objects()
	if err != nil {
		return nil, err
	}
	t.Foreign = append(t.Foreign, foreign...)
	t.Counters = slices.SortedFunc(maps.Values(counters), func(a, b ruleset.Counter) int { return cmp.Compare(a.Name, b.Name) })
	if t.Sets, err = c.readSets(&t); err != nil {
		return nil, err
	}
	if t.Chains, err = c.readChains(&t); err != nil {
		return nil, err
	}
	slices.Sort(t.Foreign)
	if hasGate(t) {
		c.queue, c.queueKnown = QueueNative, true
	}
	inFamilyTables, err := c.readGateTables(&t)
	if err != nil {
		return nil, err
	}
	if inFamilyTables {
		c.queue, c.queueKnown = QueueCompat, true
	}
	return &t, nil
}

// Counters reads ctguard's named counters without resetting them; the map
// is empty when the table is absent.
func (c *Client) Counters() (map[string]ruleset.Counter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counters, _, err := c.objects()
	if err != nil {
		return nil, err
	}
	for _, fam := range gateFamilies {
		fc, _, err := c.objectsOf(familyTable(fam))
		if err != nil {
			return nil, err
		}
		addCounters(counters, fc)
	}
	return counters, nil
}

// objects reads the table's stateful objects: its counters, and a
// description of any other object (ctguard creates none).
func (c *Client) objects() (counters map[string]ruleset.Counter, foreign []string, err error) {
	return c.objectsOf(c.table)
}

// objectsOf reads the counters and the names of other stateful objects of
// table t (none when it is absent).
func (c *Client) objectsOf(t *nftables.Table) (counters map[string]ruleset.Counter, foreign []string, err error) {
	objs, err := c.conn.GetNamedObjects(t)
	if err != nil {
		return nil, nil, fmt.Errorf("read counters: %w", err)
	}
	counters = make(map[string]ruleset.Counter, len(objs))
	for _, o := range objs {
		n, ok := o.(*nftables.NamedObj)
		if !ok || n.Table == nil || n.Table.Name != ruleset.TableName || n.Table.Family != t.Family {
			continue
		}
		if v, isCounter := n.Obj.(*expr.Counter); isCounter && n.Type == nftables.ObjTypeCounter {
			counters[n.Name] = ruleset.Counter{Name: n.Name, Packets: v.Packets, Bytes: v.Bytes}
		} else {
			foreign = append(foreign, fmt.Sprintf("%s %s", objTypeName(n.Type), n.Name))
		}
	}
	return counters, foreign, nil
}

// readSets reads the named sets the model expresses, and describes the
// others in t.Foreign.
func (c *Client) readSets(t *ruleset.Table) ([]ruleset.Set, error) {
	sets, err := c.conn.GetSets(c.table)
	if err != nil {
		return nil, fmt.Errorf("read sets: %w", err)
	}
	var out []ruleset.Set
	for _, s := range sets {
		if s.Anonymous {
			continue // belongs to a rule, which then reads as unrecognised
		}
		typ, ok := setType(s.KeyType)
		if !ok || s.Interval == (typ == ruleset.SetIfname) || s.IsMap || s.HasTimeout || s.Dynamic || s.Concatenation || s.Constant {
			t.Foreign = append(t.Foreign, fmt.Sprintf("set %s (type %s)", s.Name, s.KeyType.Name))
			continue
		}
		elems, err := c.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("read set %s: %w", s.Name, err)
		}
		rendered, err := decodeElements(typ, elems)
		if err != nil {
			t.Foreign = append(t.Foreign, fmt.Sprintf("set %s (type %s, elements ctguard cannot read: %v)", s.Name, s.KeyType.Name, err))
			continue
		}
		out = append(out, ruleset.Set{Name: s.Name, Type: typ, Interval: s.Interval, Elements: rendered})
	}
	slices.SortFunc(out, func(a, b ruleset.Set) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// readChains reads the base chains the model expresses (with their rules),
// and describes the others in t.Foreign.
func (c *Client) readChains(t *ruleset.Table) ([]ruleset.Chain, error) {
	chains, err := c.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []ruleset.Chain
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != ruleset.TableName || isOwnerChain(ch) {
			continue
		}
		hook := ruleset.Hook(ch.Name)
		want, ok := chainHooks[hook]
		if !ok || ch.Hooknum == nil || *ch.Hooknum != want || ch.Priority == nil || ch.Type != nftables.ChainTypeFilter ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
			rules, err := c.conn.GetRules(c.table, ch)
			if err != nil {
				return nil, fmt.Errorf("read rules of chain %s: %w", ch.Name, err)
			}
			t.Foreign = append(t.Foreign, describeChain(ch, len(rules)))
			continue
		}
		rules, err := c.getRules(nftables.TableFamilyINet, ch.Name)
		if err != nil {
			return nil, fmt.Errorf("read rules of chain %s: %w", ch.Name, err)
		}
		chain := ruleset.Chain{Hook: hook, Priority: int(*ch.Priority)}
		for _, r := range rules {
			chain.Rules = append(chain.Rules, decodeRule(r))
		}
		out = append(out, chain)
	}
	slices.SortFunc(out, func(a, b ruleset.Chain) int { return cmp.Compare(hookOrder[a.Hook], hookOrder[b.Hook]) })
	return out, nil
}

// Replace makes table inet ctguard exactly t in one atomic batch: the old
// table (if any) is deleted and t created. Counter values are carried over:
// each counter starts at its current value (packets counted between that
// read and the commit are lost), a new one at the value in t.
//
// Gate rules are written with the native nft queue expression, or, when the
// kernel lacks nft_queue, with the xtables NFQUEUE target through
// nft_compat; the batch that fails changes nothing. When the kernel takes
// neither, Replace fails with ErrNoQueue.
func (c *Client) Replace(t ruleset.Table) error {
	if _, err := canonical(t); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	current, _, err := c.objects()
	if err != nil {
		return err
	}
	gated := hasGate(t)
	q := c.queue
	err = c.replace(t, current, q)
	if err != nil && gated && !c.queueKnown && q == QueueNative && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)) {
		q = QueueCompat
		if errCompat := c.replace(t, current, q); errCompat != nil {
			return fmt.Errorf("replace table inet ctguard: %w (nft queue: %v; xt NFQUEUE: %v)", ErrNoQueue, err, errCompat)
		}
		err = nil
	}
	if err != nil {
		return err
	}
	if gated {
		c.queue, c.queueKnown = q, true
	}
	return nil
}

// QueueEncoding returns the encoding the kernel took for the gate rules,
// and false before a table with gate rules was written or read.
func (c *Client) QueueEncoding() (QueueEncoding, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queue, c.queueKnown
}

// hasGate reports whether t holds a gate rule.
func hasGate(t ruleset.Table) bool {
	for _, ch := range t.Chains {
		for _, r := range ch.Rules {
			if r.Purpose == ruleset.PurposeGate {
				return true
			}
		}
	}
	return false
}

// replace sends the batch deleting and re-creating the table.
func (c *Client) replace(t ruleset.Table, current map[string]ruleset.Counter, q QueueEncoding) error {
	b, err := c.batch()
	if err != nil {
		return err
	}
	owned, err := c.ownedFamilyTables()
	if err != nil {
		return err
	}
	b.AddTable(c.table)
	b.DelTable(c.table)
	b.AddTable(c.table)
	for fam := range owned { // re-created below, or leftovers of an earlier encoding
		b.DelTable(familyTable(fam))
	}
	split := q == QueueCompat
	gateCounters := map[string]bool{}
	for _, ch := range t.Chains {
		for _, r := range ch.Rules {
			if split && r.Purpose == ruleset.PurposeGate {
				gateCounters[r.Counter] = true
			}
		}
	}
	for _, ct := range t.Counters {
		if gateCounters[ct.Name] {
			continue // in the family tables
		}
		if cur, ok := current[ct.Name]; ok {
			ct = cur
		}
		b.AddObj(&nftables.CounterObj{Table: c.table, Name: ct.Name, Packets: ct.Packets, Bytes: ct.Bytes})
	}
	setIDs := map[string]uint32{}
	for _, s := range t.Sets {
		if err := c.addSet(b, s, setIDs); err != nil {
			return err
		}
	}
	for _, ch := range t.Chains {
		if split && ch.Hook == ruleset.HookPrerouting {
			if err := c.addGateTables(b, ch, t.Counters, q); err != nil {
				return err
			}
			continue
		}
		chain := b.AddChain(&nftables.Chain{
			Name:     ch.Name(),
			Table:    c.table,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookRef(chainHooks[ch.Hook]),
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority)),
			Policy:   policyRef(nftables.ChainPolicyAccept),
		})
		for _, r := range ch.Rules {
			b.AddRule(&nftables.Rule{Table: c.table, Chain: chain, Exprs: ruleExprs(r, setIDs, q), UserData: commentData(r.Comment())})
		}
	}
	addOwnerMark(b, c.table) // in the batch that creates the table
	if err := b.Flush(); err != nil {
		return fmt.Errorf("replace table inet ctguard: %w", err)
	}
	return nil
}

// addSet queues a set and its elements, in messages small enough for one
// netlink attribute each.
func (c *Client) addSet(b *nftables.Conn, s ruleset.Set, setIDs map[string]uint32) error {
	set := &nftables.Set{Table: c.table, Name: s.Name, KeyType: keyTypes[s.Type], Interval: s.Interval}
	if s.Type == ruleset.SetIfname {
		set.KeyByteOrder = binaryutil.NativeEndian // as nft declares strings; else nft lists "" elements
	}
	if err := b.AddSet(set, nil); err != nil {
		return fmt.Errorf("set %s: %w", s.Name, err)
	}
	setIDs[s.Name] = set.ID
	for chunk := range slices.Chunk(s.Elements, elementsPerMessage) {
		elems, err := setElements(ruleset.Set{Name: s.Name, Type: s.Type, Elements: chunk})
		if err != nil {
			return err
		}
		if err := b.SetAddElements(set, elems); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}
	return nil
}

func policyRef(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

// Delete removes table inet ctguard (and ip/ip6 ctguard, see
// addGateTables) in one batch; an absent table is fine.
func (c *Client) Delete() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.batch()
	if err != nil {
		return err
	}
	owned, err := c.ownedFamilyTables()
	if err != nil {
		return err
	}
	b.AddTable(c.table)
	b.DelTable(c.table)
	for fam := range owned {
		b.DelTable(familyTable(fam))
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("delete table inet ctguard: %w", err)
	}
	return nil
}
