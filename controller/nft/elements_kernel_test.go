package nft

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/netnstest"
)

// tableHandle is the kernel's handle of table inet ctguard: a re-created
// table gets a new one.
func tableHandle(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	out := ns.MustRun(t, "nft", "-a", "list", "table", "inet", "ctguard")
	m := regexp.MustCompile(`table inet ctguard \{ # handle (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no table handle in:\n%s", out)
	}
	return string(m[1])
}

// TestPrivilegedUpdateElementsKeepsTable changes elements of a 1,000-host
// set in place: the table is not re-created (same handle), counters keep
// their values, and nft lists exactly the new elements.
func TestPrivilegedUpdateElementsKeepsTable(t *testing.T) {
	ns := netnstest.NewNetNS(t, "n9elem")
	c := newClient(t, ns)
	table := hostsTable(1000)
	for i := range table.Counters {
		table.Counters[i].Packets, table.Counters[i].Bytes = 7, 700
	}
	if err := c.Replace(table); err != nil {
		t.Fatal(err)
	}
	handle := tableHandle(t, ns)
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	set := table.Sets[0]
	delta := ruleset.SetDelta{Set: set, Remove: []string{set.Elements[10], set.Elements[500]}, Add: []string{"203.0.113.0/24", "10.0.0.1"}}
	want := slices.DeleteFunc(slices.Clone(set.Elements), func(e string) bool { return slices.Contains(delta.Remove, e) })
	want = append([]string{"10.0.0.1"}, append(want, "203.0.113.0/24")...)
	delta.Set.Elements = want
	if err := c.UpdateElements([]ruleset.SetDelta{delta}); err != nil {
		t.Fatal(err)
	}
	if c.last == nil {
		t.Error("the table the update made is not kept as verified")
	}
	if got := tableHandle(t, ns); got != handle {
		t.Errorf("table handle %s -> %s: the table was re-created", handle, got)
	}
	got, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Sets[0].Elements, want) {
		t.Errorf("Read: %d elements, want %d (first %q)", len(got.Sets[0].Elements), len(want), got.Sets[0].Elements[:3])
	}
	if fresh, err := newClient(t, ns).Read(); err != nil || !ruleset.Equal(fresh, got) {
		t.Errorf("a new client reads another table (err %v)", err)
	}
	for _, ctr := range got.Counters {
		if ctr.Packets != 7 || ctr.Bytes != 700 {
			t.Errorf("counter %s = %d packets %d bytes, want 7 and 700", ctr.Name, ctr.Packets, ctr.Bytes)
		}
	}
	listed := string(ns.MustRun(t, "nft", "list", "set", "inet", "ctguard", set.Name))
	for _, e := range delta.Add {
		if !strings.Contains(listed, e) {
			t.Errorf("nft does not list the added %s", e)
		}
	}
	for _, e := range delta.Remove {
		if regexp.MustCompile(regexp.QuoteMeta(e) + `[,\s]`).MatchString(listed) {
			t.Errorf("nft still lists the removed %s", e)
		}
	}
	// A failing delta changes nothing.
	bad := ruleset.SetDelta{Set: set, Remove: []string{"10.0.0.1"}, Add: []string{"203.0.113.128/25"}}
	if err := c.UpdateElements([]ruleset.SetDelta{bad}); err == nil {
		t.Error("an overlapping element was added")
	}
	if again, err := c.Read(); err != nil || !slices.Equal(again.Sets[0].Elements, want) {
		t.Errorf("a refused batch changed the set (err %v)", err)
	}
}

// TestPrivilegedReadVerifiedByGeneration checks Read's shortcut: while no
// nftables transaction commits it gives the last full read with fresh
// counter values; any commit, even to another table, makes it read again.
func TestPrivilegedReadVerifiedByGeneration(t *testing.T) {
	ns := netnstest.NewNetNS(t, "n9gen")
	c := newClient(t, ns)
	table := hostsTable(100)
	for i := range table.Counters {
		table.Counters[i].Packets = 3
	}
	if err := c.Replace(table); err != nil {
		t.Fatal(err)
	}
	first, err := c.Read()
	if err != nil || c.last == nil {
		t.Fatalf("first read: %v (verified %v)", err, c.last != nil)
	}
	// Resetting counters is no transaction: the generation stays.
	ns.MustRun(t, "nft", "reset", "counters", "table", "inet", "ctguard")
	second, err := c.Read()
	if err != nil || !ruleset.Equal(first, second) {
		t.Fatalf("second read differs: %v", err)
	}
	for _, ctr := range second.Counters {
		if ctr.Packets != 0 {
			t.Errorf("counter %s: %d packets after a reset, want 0 (stale counters)", ctr.Name, ctr.Packets)
		}
	}
	ns.MustRun(t, "nft", "add", "element", "inet", "ctguard", table.Sets[0].Name, "{ 10.9.9.9 }")
	third, err := c.Read()
	if err != nil || !slices.Contains(third.Sets[0].Elements, "10.9.9.9") {
		t.Fatalf("an element added by nft was not seen: %v", err)
	}
	ns.MustRun(t, "nft", "add", "table", "ip", "n9other")
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	ns.MustRun(t, "nft", "delete", "element", "inet", "ctguard", table.Sets[0].Name, "{ 10.9.9.9 }")
	fourth, err := c.Read()
	if err != nil || slices.Contains(fourth.Sets[0].Elements, "10.9.9.9") {
		t.Fatalf("an element deleted by nft is still read: %v", err)
	}
}

// waitSeen waits until c's notifications have caught up with the
// namespace's generation.
func waitSeen(t *testing.T, c *Client) {
	t.Helper()
	c.mu.Lock()
	gen, err := c.raw.genID()
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c.changes.mu.Lock()
		seen := c.changes.seen
		c.changes.mu.Unlock()
		if seen >= gen {
			return
		}
	}
	t.Fatalf("notifications did not reach generation %d", gen)
}

// TestPrivilegedWatchTellsTablesApart: with Watch running, transactions on
// another table (set elements included, whose notifications
// google/nftables does not attribute) neither notify nor make Read dump
// ctguard's sets again; a set element added to ctguard's table does both.
func TestPrivilegedWatchTellsTablesApart(t *testing.T) {
	ns := netnstest.NewNetNS(t, "n9watch")
	c := newClient(t, ns)
	table := hostsTable(1000)
	if err := c.Replace(table); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(); err != nil {
		t.Fatal(err)
	}
	verified := c.last
	ns.MustRun(t, "nft", "add table ip n9other; add set ip n9other s { type ipv4_addr; }; add element ip n9other s { 192.0.2.1 }")
	ns.MustRun(t, "nft", "add", "element", "ip", "n9other", "s", "{ 192.0.2.2 }")
	waitSeen(t, c)
	select {
	case <-changed:
		t.Error("a change of another table was reported")
	case <-time.After(time.Second):
	}
	got, err := c.Read()
	if err != nil || !ruleset.Equal(got, &table) {
		t.Fatalf("read after other tables changed: %v", err)
	}
	if c.last != verified {
		t.Error("changes of another table made Read dump the sets again")
	}
	ns.MustRun(t, "nft", "add", "element", "inet", "ctguard", table.Sets[0].Name, "{ 10.9.9.9 }")
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Error("an element added to ctguard's set was not reported")
	}
	waitSeen(t, c)
	got, err = c.Read()
	if err != nil || !slices.Contains(got.Sets[0].Elements, "10.9.9.9") {
		t.Fatalf("the element added to ctguard's set was not read: %v", err)
	}
}
