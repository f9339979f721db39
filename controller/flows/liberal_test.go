package flows

import (
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
)

func TestLiberalMessage(t *testing.T) {
	v4 := Flow{Proto: ProtoTCP, Orig: Tuple{
		Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.19.0.10"),
		SrcPort: 40000, DstPort: 443,
	}}
	zoned := v4
	zoned.Zone = 7
	v6 := Flow{Proto: ProtoTCP, Orig: Tuple{
		Src: netip.MustParseAddr("2001:db8::2"), Dst: netip.MustParseAddr("2001:db8::10"),
		SrcPort: 40000, DstPort: 443,
	}}
	const (
		nfgenV4 = "02000000" // AF_INET, NFNETLINK_V0, res_id 0
		nfgenV6 = "0a000000" // AF_INET6
		// CTA_TUPLE_ORIG{CTA_TUPLE_IP{V4_SRC 198.18.1.2, V4_DST 198.19.0.10},
		// CTA_TUPLE_PROTO{NUM 6, SRC_PORT 40000, DST_PORT 443}}
		tupleV4 = "34000180" + "14000180" + "08000100c6120102" + "08000200c613000a" +
			"1c000280" + "0500010006000000" + "060002009c400000" + "0600030001bb0000"
		tupleV6 = "4c000180" + "2c000180" +
			"14000300" + "20010db8000000000000000000000002" +
			"14000400" + "20010db8000000000000000000000010" +
			"1c000280" + "0500010006000000" + "060002009c400000" + "0600030001bb0000"
		// CTA_MARK 0x00800000, CTA_MARK_MASK 0x00800000: set only the bit.
		markSet = "0800080000800000" + "0800150000800000"
		// CTA_MARK 0, CTA_MARK_MASK 0x00800000: clear only the bit.
		markClear = "0800080000000000" + "0800150000800000"
	)
	tests := []struct {
		name  string
		f     Flow
		dirs  Directions
		flags uint8
		mark  MarkBit
		want  string
	}{{
		// CTA_PROTOINFO{CTA_PROTOINFO_TCP{FLAGS_REPLY {0x08, 0x08}}}
		name: "set reply with mark", f: v4, dirs: Reply, flags: BeLiberal, mark: DefaultMarkBit,
		want: nfgenV4 + tupleV4 + "10000480" + "0c000180" + "0600050008080000" + markSet,
	}, {
		name: "clear reply with mark", f: v4, dirs: Reply, flags: 0, mark: DefaultMarkBit,
		want: nfgenV4 + tupleV4 + "10000480" + "0c000180" + "0600050000080000" + markClear,
	}, {
		// CTA_ZONE 7, FLAGS_ORIGINAL and FLAGS_REPLY {0x08, 0x08}, no mark.
		name: "both directions, zone, no mark", f: zoned, dirs: Both, flags: BeLiberal,
		want: nfgenV4 + tupleV4 + "0600120000070000" +
			"18000480" + "14000180" + "0600040008080000" + "0600050008080000",
	}, {
		// No protoinfo at all: only the mark bit is cleared.
		name: "clear only the mark", f: v4, dirs: 0, flags: 0, mark: DefaultMarkBit,
		want: nfgenV4 + tupleV4 + markClear,
	}, {
		name: "ipv6", f: v6, dirs: Original, flags: BeLiberal,
		want: nfgenV6 + tupleV6 + "10000480" + "0c000180" + "0600040008080000",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := liberalMessage(&tt.f, tt.dirs, tt.flags, tt.mark)
			if err != nil {
				t.Fatal(err)
			}
			// IPCTNL_MSG_CT_NEW in NFNL_SUBSYS_CTNETLINK, no NLM_F_CREATE/EXCL.
			if m.Header.Type != 0x0100 || m.Header.Flags != netlink.Request|netlink.Acknowledge {
				t.Errorf("header type %#x flags %v", m.Header.Type, m.Header.Flags)
			}
			if got := hex.EncodeToString(m.Data); got != tt.want {
				t.Errorf("payload\n got  %s\n want %s", got, tt.want)
			}
		})
	}
}

func TestLiberalMessageRejects(t *testing.T) {
	tcp := Flow{Proto: ProtoTCP, Orig: Tuple{Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.19.0.10")}}
	udp := tcp
	udp.Proto = 17
	for name, tt := range map[string]struct {
		f    Flow
		dirs Directions
	}{"udp": {udp, Reply}, "no direction, no mark": {tcp, 0}} {
		if _, err := liberalMessage(&tt.f, tt.dirs, BeLiberal, 0); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
