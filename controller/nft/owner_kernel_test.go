package nft

import (
	"errors"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/netnstest"
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
	want := ruleset.Build(mixedPolicies(), testOpts)
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
