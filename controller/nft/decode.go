package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// chainHooks maps the model's hooks to netfilter hook numbers.
var chainHooks = map[ruleset.Hook]nftables.ChainHook{
	ruleset.HookPrerouting: *nftables.ChainHookPrerouting,
	ruleset.HookInput:      *nftables.ChainHookInput,
	ruleset.HookForward:    *nftables.ChainHookForward,
	ruleset.HookOutput:     *nftables.ChainHookOutput,
}

// hookOrder is the canonical chain order of the model.
var hookOrder = map[ruleset.Hook]int{ruleset.HookPrerouting: 0, ruleset.HookInput: 1, ruleset.HookForward: 2, ruleset.HookOutput: 3}

// setType maps an nftables key type back to the model's set type.
func setType(dt nftables.SetDatatype) (ruleset.SetType, bool) {
	for st, kt := range keyTypes {
		if kt.GetNFTMagic() == dt.GetNFTMagic() {
			return st, true
		}
	}
	return "", false
}

// decodeElements renders kernel set elements as the model's sorted element
// strings; interval start/end pairs become ranges. A leading interval-end
// element (nft adds one at key 0) closes nothing and is skipped.
func decodeElements(typ ruleset.SetType, elems []nftables.SetElement) ([]string, error) {
	if typ == ruleset.SetIfname {
		var out []string
		for _, e := range elems {
			out = append(out, string(bytes.TrimRight(e.Key, "\x00")))
		}
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	sorted := slices.Clone(elems)
	slices.SortStableFunc(sorted, func(a, b nftables.SetElement) int {
		// At one key an interval end sorts before the start it touches.
		return cmp.Or(bytes.Compare(a.Key, b.Key), -cmp.Compare(boolInt(a.IntervalEnd), boolInt(b.IntervalEnd)))
	})
	var out []string
	var open []byte
	for _, e := range sorted {
		switch {
		case !e.IntervalEnd && open == nil:
			open = e.Key
		case !e.IntervalEnd:
			return nil, fmt.Errorf("interval starting at %x has no end", open)
		case open != nil:
			s, err := renderRange(typ, open, e.Key, false)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
			open = nil
		}
	}
	if open != nil {
		s, err := renderRange(typ, open, nil, true)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// renderRange renders [first, end) (or [first, top] when toTop).
func renderRange(typ ruleset.SetType, first, end []byte, toTop bool) (string, error) {
	if typ == ruleset.SetInetService {
		if len(first) != 2 || (!toTop && len(end) != 2) {
			return "", fmt.Errorf("port key of %d bytes", len(first))
		}
		last := uint16(0xffff)
		if !toTop {
			last = binary.BigEndian.Uint16(end) - 1
		}
		return ruleset.PortSpan{First: binary.BigEndian.Uint16(first), Last: last}.String(), nil
	}
	a, ok := netip.AddrFromSlice(first)
	if !ok || a.Is4() != (typ == ruleset.SetIPv4Addr) {
		return "", fmt.Errorf("address key %x is not of type %s", first, typ)
	}
	last := netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
	if a.Is6() {
		last = netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	if !toTop {
		b, ok := netip.AddrFromSlice(end)
		if !ok || b.BitLen() != a.BitLen() {
			return "", fmt.Errorf("address key %x is not of type %s", end, typ)
		}
		last = b.Prev()
	}
	return ruleset.AddrRange{First: a, Last: last}.String(), nil
}

// decodeRule maps a kernel rule back to the model: the comment names the
// policy and purpose, the expressions give the rest, and the rule counts as
// recognised only if it is a rule Build could make (drop exactly for
// drop-invalid, tcp flags rst exactly for count-invalid-rst) and encoding
// it gives the same expressions and comment back. Anything else is a
// PurposeUnrecognised rule.
func decodeRule(r *nftables.Rule) ruleset.Rule {
	comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	unrecognised := ruleset.Rule{Purpose: ruleset.PurposeUnrecognised, Detail: fmt.Sprintf("handle %d comment %q", r.Handle, comment)}
	got, ok := parseComment(comment)
	if !ok {
		return unrecognised
	}
	if got.Purpose == ruleset.PurposeGate {
		q, ok := inferGate(&got, r.Exprs)
		if !ok || got.Comment() != comment || !sameExprs(ruleExprs(got, nil, q), r.Exprs) {
			return unrecognised
		}
		return got
	}
	inferFromExprs(&got, r.Exprs)
	dropping := got.Purpose == ruleset.PurposeDropInvalid || got.Purpose == ruleset.PurposeGuard
	evidence := got.Purpose == ruleset.PurposeEvidence
	shapeOK := got.Drop == dropping && (evidence || got.RSTOnly == (got.Purpose == ruleset.PurposeCountInvalidRST)) &&
		slices.Contains([]ruleset.Purpose{ruleset.PurposeDropInvalid, ruleset.PurposeCountInvalid, ruleset.PurposeCountInvalidRST, ruleset.PurposeGuard, ruleset.PurposeEvidence}, got.Purpose)
	if !shapeOK || got.Comment() != comment || !sameExprs(ruleExprs(got, nil, QueueNative), r.Exprs) {
		return unrecognised
	}
	return got
}

// inferGate fills a gate rule's fields from its expressions and tells the
// queue encoding; ok is false without a queue verdict. sameExprs then checks
// that nothing else was there.
func inferGate(r *ruleset.Rule, exprs []expr.Any) (q QueueEncoding, ok bool) {
	for i, e := range exprs {
		switch e := e.(type) {
		case *expr.Bitwise:
			ct, isCt := exprs[max(i-1, 0)].(*expr.Ct)
			switch {
			case !isCt || len(e.Mask) != 4:
			case ct.Key == expr.CtKeyMARK:
				r.MarkBit = binary.NativeEndian.Uint32(e.Mask)
			case ct.Key == expr.CtKeySTATUS:
				r.NATStatus = binary.NativeEndian.Uint32(e.Mask)
			}
		case *expr.Cmp:
			if m, isMeta := exprs[max(i-1, 0)].(*expr.Meta); isMeta && m.Key == expr.MetaKeyNFPROTO && len(e.Data) == 1 {
				r.NFProto = map[byte]ruleset.NFProto{unix.NFPROTO_IPV4: ruleset.NFProtoIPv4, unix.NFPROTO_IPV6: ruleset.NFProtoIPv6}[e.Data[0]]
			}
		case *expr.Objref:
			r.Counter = e.Name
		case *expr.Queue:
			r.Queue, q, ok = e.Num, QueueNative, true
		case *expr.Target:
			if info, isInfo := e.Info.(*xt.Unknown); isInfo && e.Name == nfqueueTarget && e.Rev == nfqueueRevision && len(*info) >= 2 {
				r.Queue, q, ok = binary.NativeEndian.Uint16(*info), QueueCompat, true
			}
		}
	}
	return q, ok
}

// parseComment reads "ctguard policy NAME: PURPOSE[ PROTO]", or the
// evidence rules' comment.
func parseComment(c string) (ruleset.Rule, bool) {
	if c == ruleset.EvidenceComment {
		return ruleset.Rule{Purpose: ruleset.PurposeEvidence}, true
	}
	rest, ok := strings.CutPrefix(c, "ctguard policy ")
	i := strings.LastIndex(rest, ": ")
	if !ok || i < 0 {
		return ruleset.Rule{}, false
	}
	purpose, _, _ := strings.Cut(rest[i+2:], " ")
	return ruleset.Rule{Policy: rest[:i], Purpose: ruleset.Purpose(purpose)}, true
}

// inferFromExprs fills the rule's match fields from the expressions it
// recognises; sameExprs then checks that nothing else was there.
func inferFromExprs(r *ruleset.Rule, exprs []expr.Any) {
	for i, e := range exprs {
		var lookup *expr.Lookup
		if i+1 < len(exprs) {
			lookup, _ = exprs[i+1].(*expr.Lookup)
		}
		switch e := e.(type) {
		case *expr.Meta:
			if e.Key == expr.MetaKeyIIFNAME && lookup != nil {
				r.IifnameSet = lookup.SetName
			}
		case *expr.Cmp:
			if m, ok := exprs[max(i-1, 0)].(*expr.Meta); ok && m.Key == expr.MetaKeyNFPROTO && len(e.Data) == 1 {
				r.NFProto = map[byte]ruleset.NFProto{unix.NFPROTO_IPV4: ruleset.NFProtoIPv4, unix.NFPROTO_IPV6: ruleset.NFProtoIPv6}[e.Data[0]]
			}
		case *expr.Payload:
			switch {
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == offTCPFlags:
				r.RSTOnly = true
			case e.Base == expr.PayloadBaseNetworkHeader && lookup != nil:
				r.AddrSet, r.AddrIsDest = lookup.SetName, e.Offset == offIPv4Dst || e.Offset == offIPv6Dst
			case e.Base == expr.PayloadBaseTransportHeader && lookup != nil:
				r.PortSet, r.PortIsDest = lookup.SetName, e.Offset == offTCPDport
			}
		case *expr.Objref:
			r.Counter = e.Name
		case *expr.Log:
			r.LogGroup = e.Group
		case *expr.Verdict:
			r.Drop = e.Kind == expr.VerdictDrop
		}
	}
}

// sameExprs compares expressions by their netlink encoding.
func sameExprs(a, b []expr.Any) bool {
	return slices.EqualFunc(a, b, func(x, y expr.Any) bool {
		bx, errx := expr.Marshal(byte(nftables.TableFamilyINet), x)
		by, erry := expr.Marshal(byte(nftables.TableFamilyINet), y)
		return errx == nil && erry == nil && bytes.Equal(bx, by)
	})
}
