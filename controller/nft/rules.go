package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// getRules dumps the rules of one chain of table ctguard of family fam with their
// expressions. It replaces google/nftables v0.3.0's GetRules, which fails
// on every rule holding a ct expression with a direction (the kernel sends
// NFTA_CT_DIRECTION as a u8; v0.3.0 decodes a u32), as the gate rules do.
// Expressions of kinds ctguard never writes decode as an expr.Notrack
// placeholder, so the rule reads as unrecognised.
func (c *Client) getRules(fam nftables.TableFamily, chain string) ([]*nftables.Rule, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, c.nlConfig())
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	defer nl.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_RULE_TABLE, Data: []byte(ruleset.TableName + "\x00")},
		{Type: unix.NFTA_RULE_CHAIN, Data: []byte(chain + "\x00")},
	})
	if err != nil {
		return nil, err
	}
	msgs, err := nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{byte(fam), unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, err
	}
	var out []*nftables.Rule
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
			continue
		}
		r, err := decodeRuleMsg(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("decode rule: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// nlConfig is the netlink configuration of the Client's namespace.
func (c *Client) nlConfig() *netlink.Config {
	if c.netnsFd < 0 {
		return &netlink.Config{}
	}
	return &netlink.Config{NetNS: c.netnsFd}
}

// decodeRuleMsg decodes a NEWRULE message's attributes.
func decodeRuleMsg(b []byte) (*nftables.Rule, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	r := &nftables.Rule{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_HANDLE:
			r.Handle = ad.Uint64()
		case unix.NFTA_RULE_USERDATA:
			r.UserData = ad.Bytes()
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					e, err := decodeExpr(nad.Bytes())
					if err != nil {
						return err
					}
					r.Exprs = append(r.Exprs, e)
				}
				return nil
			})
		}
	}
	return r, ad.Err()
}

// decodeExpr decodes one NFTA_LIST_ELEM expression.
func decodeExpr(b []byte) (expr.Any, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	var name string
	var data []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_EXPR_NAME:
			name = ad.String()
		case unix.NFTA_EXPR_DATA:
			data = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, err
	}
	fam := byte(nftables.TableFamilyINet)
	var e expr.Any
	switch name {
	case "ct":
		return decodeCt(data)
	case "meta":
		e = &expr.Meta{}
	case "cmp":
		e = &expr.Cmp{}
	case "payload":
		e = &expr.Payload{}
	case "bitwise":
		e = &expr.Bitwise{}
	case "lookup":
		e = &expr.Lookup{}
	case "objref":
		e = &expr.Objref{}
	case "queue":
		e = &expr.Queue{}
	case "target":
		e = &expr.Target{}
	case "counter":
		e = &expr.Counter{}
	case "limit":
		e = &expr.Limit{}
	case "log":
		e = &expr.Log{}
	case "immediate":
		imm := &expr.Immediate{}
		if err := expr.Unmarshal(fam, data, imm); err != nil {
			return nil, err
		}
		if imm.Register != unix.NFT_REG_VERDICT || len(imm.Data) != 0 {
			return imm, nil
		}
		e = &expr.Verdict{}
	default:
		return &expr.Notrack{}, nil // never written by ctguard
	}
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return nil, err
	}
	return e, nil
}

// decodeCt decodes a ct expression, whose direction is a u8.
func decodeCt(data []byte) (expr.Any, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	e := &expr.Ct{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CT_KEY:
			e.Key = expr.CtKey(ad.Uint32())
		case unix.NFTA_CT_DREG:
			e.Register = ad.Uint32()
		case unix.NFTA_CT_SREG:
			e.Register, e.SourceRegister = ad.Uint32(), true
		case unix.NFTA_CT_DIRECTION:
			e.Direction = uint32(ad.Uint8())
		}
	}
	return e, ad.Err()
}
