package nft

import (
	"errors"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/google/nftables"
)

// markerCommand adds ctguard's ownership mark with nft, as Replace writes it.
const markerCommand = `add chain inet ctguard ` + OwnerChainName + `; add rule inet ctguard ` + OwnerChainName + ` return comment "` + OwnerComment + `"`

// operatorTable is the table of finding 2 of issue 13: an operator's own
// table inet ctguard, which apply used to replace.
const operatorTable = `table inet ctguard {
	counter c42 { packets 42 bytes 4200 }
	set s { type ipv4_addr; elements = { 198.18.0.1 } }
	chain raw { type filter hook prerouting priority raw; policy drop; }
	chain other { }
}
`

func TestPrivilegedOwnershipMark(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftown")
	c := newClient(t, ns)
	want := ruleset.Build(mixedPolicies(), noGateOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	// nft sees the mark: a rule with ctguard's comment.
	listed := nftList(t, ns, "chain", "inet", "ctguard", OwnerChainName)
	if !strings.Contains(listed, `"comment": "`+OwnerComment+`"`) {
		t.Fatalf("nft -j lacks the ownership mark:\n%s", listed)
	}
	if got, err := c.Read(); err != nil || !ruleset.Equal(got, &want) {
		t.Fatalf("Read of a marked table: %v\n%s", err, got)
	}
	// Without the mark the same table is not ctguard's, but decodes.
	ns.MustRun(t, "nft", "flush", "chain", "inet", "ctguard", OwnerChainName)
	ns.MustRun(t, "nft", "delete", "chain", "inet", "ctguard", OwnerChainName)
	_, err := c.Read()
	var fe *ForeignTableError
	if !errors.As(err, &fe) || fe.Table == nil || !ruleset.Equal(fe.Table, &want) {
		t.Fatalf("Read without the mark: %v, want a ForeignTableError with the decoded table", err)
	}
	// A mark with another comment is no mark.
	ns.MustRun(t, "nft", `add chain inet ctguard `+OwnerChainName+`; add rule inet ctguard `+OwnerChainName+` return comment "mine"`)
	if _, err := c.Read(); !errors.Is(err, ErrForeignTable) {
		t.Fatalf("Read with a wrong comment: %v, want ErrForeignTable", err)
	}
}

func TestPrivilegedForeignTableDescribed(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftfor2")
	c := newClient(t, ns)
	ns.MustRun(t, "sh", "-c", "printf '%s' '"+operatorTable+"' | nft -f -")
	_, err := c.Read()
	var fe *ForeignTableError
	if !errors.As(err, &fe) || fe.Table == nil || len(fe.Table.Foreign) != 3 {
		t.Fatalf("Read of the operator's table: %v, want a ForeignTableError with two chains and a set ctguard never creates", err)
	}
	text := err.Error()
	for _, want := range []string{
		"chain raw (type filter, hook prerouting, priority -300, policy drop, 0 rules)",
		"chain other (regular, 0 rules)",
		"set s (type ipv4_addr, 1 elements)",
		"counter c42",
		"nft delete table inet ctguard",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("error lacks %q:\n%s", want, text)
		}
	}
}

// A table ip ctguard ctguard did not create (no mark) is neither replaced
// nor deleted, even where the gate's xt encoding would put its rules there.
func TestPrivilegedForeignFamilyTableKept(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftfam")
	c := newClient(t, ns)
	ns.MustRun(t, "nft", "add table ip ctguard; add chain ip ctguard mine { type filter hook input priority 0; policy accept; }; add counter ip ctguard c42")
	if err := c.Replace(ruleset.Build(mixedPolicies(), noGateOpts)); !errors.Is(err, ErrForeignTable) {
		t.Fatalf("Replace beside a foreign table ip ctguard: %v, want ErrForeignTable", err)
	}
	if err := c.Delete(); !errors.Is(err, ErrForeignTable) {
		t.Fatalf("Delete beside a foreign table ip ctguard: %v, want ErrForeignTable", err)
	}
	listed := nftList(t, ns, "table", "ip", "ctguard")
	for _, want := range []string{`"name": "mine"`, `"name": "c42"`} {
		if !strings.Contains(listed, want) {
			t.Errorf("table ip ctguard lost %s:\n%s", want, listed)
		}
	}
	// ctguard's own family tables carry the mark and go with Delete.
	ns.MustRun(t, "nft", "delete table ip ctguard")
	if err := c.Replace(ruleset.Build(mixedPolicies(), testOpts)); err != nil {
		t.Fatal(err)
	}
	if enc, _ := c.QueueEncoding(); enc == QueueCompat {
		// mixedPolicies' perFlow policy is IPv6 only: its gate rule is in ip6 ctguard.
		if m, err := c.markedTable(familyTable(nftables.TableFamilyIPv6)); err != nil || !m {
			t.Fatalf("table ip6 ctguard written by ctguard: marked %v, %v", m, err)
		}
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
}
