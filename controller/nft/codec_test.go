package nft

import (
	"reflect"
	"slices"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestRuleRoundTrip(t *testing.T) {
	var rules []ruleset.Rule
	for _, c := range ruleset.Build(append(mixedPolicies(), gatePolicies()...), testOpts).Chains {
		rules = append(rules, c.Rules...)
	}
	rules = append(rules, ruleset.Rule{Policy: "odd: name", Purpose: ruleset.PurposeDropInvalid, NFProto: ruleset.NFProtoIPv6, Counter: "c", Drop: true})
	for _, r := range rules {
		for _, q := range []QueueEncoding{QueueNative, QueueCompat} {
			t.Run(r.Comment()+" "+q.String(), func(t *testing.T) { roundTrip(t, r, q) })
		}
	}
}

// roundTrip checks that a rule decodes from its encoding with q.
func roundTrip(t *testing.T, r ruleset.Rule, q QueueEncoding) {
	kr := &nftables.Rule{Exprs: ruleExprs(r, map[string]uint32{r.AddrSet: 7}, q), UserData: commentData(r.Comment())}
	// The kernel does not echo set IDs.
	for _, e := range kr.Exprs {
		if l, ok := e.(*expr.Lookup); ok {
			l.SetID = 0
		}
	}
	if got := decodeRule(kr); got != r {
		t.Errorf("decodeRule(ruleExprs(r)) = %+v, want %+v", got, r)
	}
}

func TestDecodeRuleUnrecognised(t *testing.T) {
	base := ruleset.Rule{Policy: "p", Purpose: ruleset.PurposeDropInvalid, NFProto: ruleset.NFProtoIPv4, AddrSet: "p-dst4", Counter: "p_drop-invalid_ipv4", Drop: true}
	tests := []struct {
		name  string
		edit  func(e []expr.Any) []expr.Any
		udata []byte
	}{
		{"no comment", nil, nil},
		{"foreign comment", nil, commentData("hand made")},
		{"comment of another purpose", nil, commentData("ctguard policy p: count-invalid ipv4")},
		{"accept instead of drop", func(e []expr.Any) []expr.Any {
			return append(e[:len(e)-1], &expr.Verdict{Kind: expr.VerdictAccept})
		}, commentData(base.Comment())},
		{"extra match", func(e []expr.Any) []expr.Any {
			return slices.Insert(e, 2, expr.Any(&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}), expr.Any(&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1, 0, 0, 0}}))
		}, commentData(base.Comment())},
		{"inverted lookup", func(e []expr.Any) []expr.Any {
			for _, x := range e {
				if l, ok := x.(*expr.Lookup); ok {
					l.Invert = true
				}
			}
			return e
		}, commentData(base.Comment())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ruleExprs(base, nil, QueueNative)
			if tt.edit != nil {
				e = tt.edit(e)
			}
			got := decodeRule(&nftables.Rule{Handle: 4, Exprs: e, UserData: tt.udata})
			if got.Purpose != ruleset.PurposeUnrecognised || got.Detail == "" {
				t.Errorf("decodeRule = %+v, want unrecognised", got)
			}
		})
	}
}

func TestDecodeElements(t *testing.T) {
	v4 := func(a, b, c, d byte) []byte { return []byte{a, b, c, d} }
	port := func(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }
	tests := []struct {
		name  string
		typ   ruleset.SetType
		elems []nftables.SetElement
		want  []string
	}{
		{"nft's leading end element and reverse order", ruleset.SetIPv4Addr, []nftables.SetElement{
			{Key: v4(203, 0, 113, 6), IntervalEnd: true}, {Key: v4(203, 0, 113, 5)},
			{Key: v4(198, 20, 0, 0), IntervalEnd: true}, {Key: v4(198, 18, 0, 0)},
			{Key: v4(0, 0, 0, 0), IntervalEnd: true},
		}, []string{"198.18.0.0/15", "203.0.113.5"}},
		{"touching ranges stay apart", ruleset.SetInetService, []nftables.SetElement{
			{Key: port(11)}, {Key: port(21), IntervalEnd: true}, {Key: port(1)}, {Key: port(11), IntervalEnd: true},
		}, []string{"1-10", "11-20"}},
		{"open end reaches the top", ruleset.SetInetService, []nftables.SetElement{{Key: port(65000)}}, []string{"65000-65535"}},
		{"ipv6 top", ruleset.SetIPv6Addr, []nftables.SetElement{{Key: make([]byte, 16)}}, []string{"::/0"}},
		{"ifnames", ruleset.SetIfname, []nftables.SetElement{{Key: []byte("wan0\x00\x00")}, {Key: []byte("eth1\x00")}}, []string{"eth1", "wan0"}},
		{"empty", ruleset.SetIPv4Addr, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeElements(tt.typ, tt.elems)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("decodeElements = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := decodeElements(ruleset.SetIPv4Addr, []nftables.SetElement{{Key: v4(1, 0, 0, 0)}, {Key: v4(1, 0, 0, 5)}}); err == nil {
		t.Error("two starts without an end decoded")
	}
}

func TestSetElementsRoundTrip(t *testing.T) {
	sets := []ruleset.Set{
		{Name: "a", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"0.0.0.0/8", "198.18.0.0/15", "198.20.0.1-198.20.0.9", "255.255.255.255"}},
		{Name: "b", Type: ruleset.SetIPv6Addr, Interval: true, Elements: []string{"2001:db8::/32", "ffff::/16"}},
		{Name: "c", Type: ruleset.SetInetService, Interval: true, Elements: []string{"0", "443", "8000-8100", "65535"}},
		{Name: "d", Type: ruleset.SetIfname, Elements: []string{"eth1", "wan0"}},
	}
	for _, s := range sets {
		elems, err := setElements(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeElements(s.Type, elems)
		if err != nil || !slices.Equal(got, s.Elements) {
			t.Errorf("set %s: round trip = %q, %v", s.Name, got, err)
		}
	}
}

func TestCanonicalOfBuild(t *testing.T) {
	for _, tb := range []ruleset.Table{ruleset.Build(mixedPolicies(), testOpts), hostsTable(100), {}} {
		c, err := canonical(tb)
		if err != nil || !reflect.DeepEqual(c, tb) {
			t.Errorf("canonical(Build(...)) = %v, %v", c, err)
		}
	}
}

// testOpts are the ruleset.Build options of the tests.
var testOpts = ruleset.Options{MarkBit: 0x00800000, Queue: 7301}

// noGateOpts build guard rules where policies ask for the gate: for tests
// that load or list the table with nft, whose JSON output aborts on this
// kernel's xt NFQUEUE encoding in an inet table.
var noGateOpts = ruleset.Options{MarkBit: 0x00800000, Queue: 7301, NoQueue: true, EvidenceGroup: 7302}
