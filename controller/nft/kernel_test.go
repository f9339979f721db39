package nft

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
	"golang.org/x/sys/unix"
)

// newClient opens a Client in ns and closes it when the test ends.
func newClient(t testing.TB, ns *netnstest.NS) *Client {
	t.Helper()
	c, err := New(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nftList returns "nft -j list <args>" with rule and object handles removed
// (they are allocation order, not content).
func nftList(t testing.TB, ns *netnstest.NS, args ...string) string {
	t.Helper()
	v := ns.NftJSON(t, append([]string{"list"}, args...)...)
	stripHandles(v)
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stripHandles(v any) {
	switch v := v.(type) {
	case map[string]any:
		delete(v, "handle")
		for _, x := range v {
			stripHandles(x)
		}
	case []any:
		for _, x := range v {
			stripHandles(x)
		}
	}
}

// mixedPolicies covers every rule shape Build makes.
func mixedPolicies() []policy.Policy {
	return []policy.Policy{
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "egress-snat"}, Spec: policy.Spec{
			Workaround:  policy.WorkaroundDropInvalid,
			DropInvalid: &policy.DropInvalid{Interfaces: []string{"lo", "wan0"}, Hooks: []policy.Hook{policy.HookInput, policy.HookForward}},
			Match: policy.Match{
				Family:           policy.FamilyAny,
				Destinations:     prefixes("198.18.0.0/24", "198.18.1.0/24", "198.19.7.9/32", "2001:db8::/32", "fd00:c79::/48"),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}, {From: 8000, To: 8100}, {From: 65000, To: 65535}},
			},
		}}),
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "flows"}, Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow},
			Match:      policy.Match{Family: policy.FamilyIPv6, Destinations: prefixes("2001:db8:1::/48")},
		}}),
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "watch"}, Spec: policy.Spec{
			Workaround: policy.WorkaroundObserve,
			Match:      policy.Match{Family: policy.FamilyIPv4, DestinationPorts: []policy.PortRange{{From: 80, To: 80}}},
		}}),
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "global"}, Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopeGlobal},
			Match:      policy.Match{Family: policy.FamilyAny},
		}}),
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestPrivilegedReplaceReadRoundTrip(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftrt")
	c := newClient(t, ns)
	ns.MustRun(t, "ip", "addr", "add", "198.18.0.1/32", "dev", "lo")

	want := ruleset.Build(mixedPolicies(), noGateOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if !ruleset.Equal(got, &want) {
		t.Fatalf("Read after Replace differs:\n got %s\nwant %s", got, want)
	}

	// Independent view: nft's own JSON holds every chain, rule comment,
	// counter reference, set and element.
	listed := nftList(t, ns, "table", "inet", "ctguard")
	for _, ch := range want.Chains {
		if !strings.Contains(listed, fmt.Sprintf("%q: %q", "name", ch.Name())) {
			t.Errorf("nft -j lacks chain %s", ch.Name())
		}
		for _, r := range ch.Rules {
			if !strings.Contains(listed, strconv.Quote(r.Comment())) || !strings.Contains(listed, strconv.Quote(r.Counter)) {
				t.Errorf("nft -j lacks rule %q or its counter %s", r.Comment(), r.Counter)
			}
		}
	}
	text := string(ns.MustRun(t, "nft", "list", "table", "inet", "ctguard"))
	for _, s := range want.Sets {
		for _, e := range s.Elements {
			if !strings.Contains(text, e) {
				t.Errorf("nft list lacks element %s of set %s:\n%s", e, s.Name, text)
			}
		}
	}

	// Traffic: an invalid SYN|FIN|RST segment over lo from 198.18.0.1:443
	// to itself hits the output RST counter and the input drop counter.
	sendRaw(t, ns, tcpSegment(addr("198.18.0.1"), addr("198.18.0.1"), 443, 443, flagSYN|flagFIN|flagRST))
	before, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"egress-snat_drop-invalid_ipv4", "egress-snat_count-invalid-rst_ipv4"} {
		if before[name].Packets == 0 {
			t.Errorf("counter %s did not count the invalid segment: %+v", name, before)
		}
	}

	// Replace again with the same table: still equal, counters kept.
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	if got, err = c.Read(); err != nil || !ruleset.Equal(got, &want) {
		t.Fatalf("Read after second Replace: %v\n%s", err, got)
	}
	after, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range before {
		if a := after[name]; a.Packets < b.Packets || a.Bytes < b.Bytes {
			t.Errorf("counter %s went down over Replace: %+v -> %+v", name, b, a)
		}
	}
	if !strings.Contains(nftList(t, ns, "counter", "inet", "ctguard", "egress-snat_drop-invalid_ipv4"), `"packets": `+strconv.FormatUint(after["egress-snat_drop-invalid_ipv4"].Packets, 10)) {
		t.Errorf("nft -j disagrees with Counters() on egress-snat_drop-invalid_ipv4")
	}
}

func TestPrivilegedForeignTableUntouched(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftfor")
	c := newClient(t, ns)
	ns.MustRun(t, "nft", "add table inet foreign; add chain inet foreign in { type filter hook input priority 0; policy accept; }; add rule inet foreign in tcp dport 22 counter accept comment \"keep me\"; add set inet foreign s { type ipv4_addr; elements = { 198.18.9.9 } }")
	beforeForeign := string(ns.MustRun(t, "nft", "-j", "list", "table", "inet", "foreign"))
	beforeRuleset := string(ns.MustRun(t, "nft", "-j", "list", "ruleset"))

	if got, err := c.Read(); err != nil || got != nil {
		t.Fatalf("Read without table = %v, %v; want nil, nil", got, err)
	}
	if err := c.Replace(ruleset.Build(mixedPolicies(), testOpts)); err != nil {
		t.Fatal(err)
	}
	if after := string(ns.MustRun(t, "nft", "-j", "list", "table", "inet", "foreign")); after != beforeForeign {
		t.Errorf("foreign table changed by Replace:\n%s\n%s", beforeForeign, after)
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if after := string(ns.MustRun(t, "nft", "-j", "list", "table", "inet", "foreign")); after != beforeForeign {
		t.Errorf("foreign table changed by Delete:\n%s\n%s", beforeForeign, after)
	}
	if out, err := ns.Run("nft", "list", "table", "inet", "ctguard"); err == nil {
		t.Errorf("table inet ctguard still there after Delete:\n%s", out)
	}
	if after := string(ns.MustRun(t, "nft", "-j", "list", "ruleset")); after != beforeRuleset {
		t.Errorf("ruleset after Delete differs from before Replace:\n%s\n%s", beforeRuleset, after)
	}
	if got, err := c.Read(); err != nil || got != nil {
		t.Fatalf("Read after Delete = %v, %v; want nil, nil", got, err)
	}
	if err := c.Delete(); err != nil {
		t.Fatalf("Delete of an absent table: %v", err)
	}
}

func TestPrivilegedStringMatchesKernel(t *testing.T) {
	viaClient := netnstest.NewNetNS(t, "nftstr1")
	viaNft := netnstest.NewNetNS(t, "nftstr2")
	want := ruleset.Build(mixedPolicies(), noGateOpts)
	if err := newClient(t, viaClient).Replace(want); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ctguard.nft")
	if err := os.WriteFile(file, []byte(want.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	viaNft.MustRun(t, "nft", "-f", file)
	viaNft.MustRun(t, "nft", markerCommand)

	if a, b := nftList(t, viaClient, "table", "inet", "ctguard"), nftList(t, viaNft, "table", "inet", "ctguard"); a != b {
		t.Errorf("nft -j of Replace and of nft -f String() differ:\n%s\n%s", a, b)
	}
	// Debian's nft lists the table as String() renders it, except that it
	// leaves out the "meta l4proto tcp" a tcp header match implies, and
	// wraps element lists elsewhere.
	listed := string(viaClient.MustRun(t, "nft", "list", "table", "inet", "ctguard"))
	listed = regexp.MustCompile(`(?s)\tchain `+OwnerChainName+` \{.*?\n\t\}\n`).ReplaceAllString(listed, "")
	rendered := regexp.MustCompile(`meta l4proto tcp (tcp flags rst [^\n]*|ct state invalid [^\n]*tcp [sd]port)`).ReplaceAllString(want.String(), "$1")
	if norm := strings.Join(strings.Fields(listed), " "); norm != strings.Join(strings.Fields(rendered), " ") {
		t.Errorf("nft list differs from String():\n%s\n%s", listed, rendered)
	}
	// Read recognises what nft itself encoded.
	got, err := newClient(t, viaNft).Read()
	if err != nil || !ruleset.Equal(got, &want) {
		t.Errorf("Read of the nft -f table: %v\n%s", err, got)
	}
}

func TestPrivilegedUnrecognised(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftunr")
	c := newClient(t, ns)
	want := ruleset.Build(mixedPolicies(), noGateOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	ns.MustRun(t, "nft", `add rule inet ctguard input tcp dport 22 drop comment "ctguard policy egress-snat: drop-invalid ipv4"`)
	got, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	rules := got.Chains[0].Rules
	if last := rules[len(rules)-1]; last.Purpose != ruleset.PurposeUnrecognised || !strings.Contains(last.Detail, "egress-snat") {
		t.Errorf("foreign rule read as %+v", last)
	}
	if ruleset.Equal(got, &want) {
		t.Error("a table with a foreign rule compares equal")
	}
	for _, foreign := range []string{"add table inet ctguard { flags dormant; }", "add quota inet ctguard q { over 1 mbytes }", "add chain inet ctguard mine"} {
		if err := c.Replace(want); err != nil {
			t.Fatal(err)
		}
		ns.MustRun(t, "nft", foreign)
		if got, err := c.Read(); err != nil || len(got.Foreign) != 1 || ruleset.Equal(got, &want) {
			t.Errorf("Read after %q: %v, %v; want one foreign object, not equal", foreign, got, err)
		}
	}
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(); err != nil || !ruleset.Equal(got, &want) {
		t.Errorf("Replace did not repair the table: %v\n%s", err, got)
	}
}

// writer is what the kernel Client and the Fake have in common.
type writer interface {
	Read() (*ruleset.Table, error)
	Replace(ruleset.Table) error
	UpdateElements([]ruleset.SetDelta) error
	Delete() error
	Counters() (map[string]ruleset.Counter, error)
	Close() error
}

var (
	_ writer = (*Client)(nil)
	_ writer = (*Fake)(nil)
)

func TestPrivilegedFakeMatchesKernel(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftfake")
	kernel, fake := newClient(t, ns), NewFake()
	mixed := ruleset.Build(mixedPolicies(), testOpts)
	small := ruleset.Build(mixedPolicies()[2:], testOpts)
	unsorted := ruleset.Table{
		Counters: []ruleset.Counter{{Name: "b"}, {Name: "a"}},
		Sets: []ruleset.Set{
			{Name: "s4", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"198.18.2.0/24", "198.18.0.5/32", "198.18.0.0-198.18.0.3", "255.255.255.255"}},
			{Name: "p", Type: ruleset.SetInetService, Interval: true, Elements: []string{"1-10", "11-20", "65535"}},
		},
		Chains: []ruleset.Chain{
			{Hook: ruleset.HookOutput, Priority: 5, Rules: []ruleset.Rule{{Policy: "x", Purpose: ruleset.PurposeCountInvalidRST, RSTOnly: true, NFProto: ruleset.NFProtoIPv4, AddrSet: "s4", AddrIsDest: true, Counter: "b"}}},
			{Hook: ruleset.HookInput, Priority: 0},
		},
	}
	dst4 := ruleset.Set{Name: "egress-snat-dst4", Type: ruleset.SetIPv4Addr, Interval: true}
	// The added range overlaps the removed address: one batch deletes
	// first, then adds.
	mixedDeltas := []ruleset.SetDelta{{Set: dst4, Remove: []string{"198.19.7.9"}, Add: []string{"198.19.7.8/31", "203.0.113.0/24"}}}
	overlap := ruleset.Table{Sets: []ruleset.Set{{Name: "s", Type: ruleset.SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/16", "198.18.1.0/24"}}}}
	missingCounter := ruleset.Table{Chains: []ruleset.Chain{{Hook: ruleset.HookInput, Rules: []ruleset.Rule{{Policy: "x", Purpose: ruleset.PurposeDropInvalid, Counter: "nope", Drop: true}}}}}
	steps := []struct {
		name string
		do   func(w writer) error
	}{
		{"read absent", nil},
		{"delete absent", func(w writer) error { return w.Delete() }},
		{"replace mixed", func(w writer) error { return w.Replace(mixed) }},
		{"replace small", func(w writer) error { return w.Replace(small) }},
		{"replace unsorted", func(w writer) error { return w.Replace(unsorted) }},
		{"replace overlap", func(w writer) error { return w.Replace(overlap) }},
		{"replace missing counter", func(w writer) error { return w.Replace(missingCounter) }},
		{"replace empty", func(w writer) error { return w.Replace(ruleset.Table{}) }},
		{"replace mixed again", func(w writer) error { return w.Replace(mixed) }},
		{"update elements", func(w writer) error { return w.UpdateElements(mixedDeltas) }},
		{"update: delete a missing element", func(w writer) error {
			return w.UpdateElements([]ruleset.SetDelta{{Set: dst4, Remove: []string{"203.0.113.77"}}})
		}},
		{"update: add an overlapping element", func(w writer) error {
			return w.UpdateElements([]ruleset.SetDelta{{Set: dst4, Add: []string{"198.18.0.0/24"}}})
		}},
		{"update: ifnames and ports", func(w writer) error {
			return w.UpdateElements([]ruleset.SetDelta{
				{Set: ruleset.Set{Name: "egress-snat-ifaces", Type: ruleset.SetIfname}, Remove: []string{"wan0"}, Add: []string{"wan1", "eth0"}},
				{Set: ruleset.Set{Name: "egress-snat-ports", Type: ruleset.SetInetService, Interval: true}, Remove: []string{"443"}, Add: []string{"443-444"}},
			})
		}},
		{"delete", func(w writer) error { return w.Delete() }},
	}
	for _, step := range steps {
		var results [2]string
		for i, w := range []writer{kernel, fake} {
			var err error
			if step.do != nil {
				err = step.do(w)
			}
			got, rerr := w.Read()
			counters, cerr := w.Counters()
			names := make([]string, 0, len(counters))
			for n := range counters {
				names = append(names, n)
			}
			results[i] = fmt.Sprintf("err=%v invalid=%v read=%#v readErr=%v counters=%d %v", err != nil, errors.Is(err, ErrInvalidTable), got, rerr, len(names), cerr)
			if (step.name == "replace unsorted" || step.name == "update elements" || step.name == "update: ifnames and ports") && err != nil {
				t.Errorf("%T: %s: %v", w, step.name, err)
			}
		}
		if results[0] != results[1] {
			t.Errorf("%s: kernel and fake differ:\nkernel %s\nfake   %s", step.name, results[0], results[1])
		}
	}
}

func TestPrivilegedDropInvalidEffect(t *testing.T) {
	server := netnstest.NewNetNS(t, "nftsrv") // sends the stray segment
	box := netnstest.NewNetNS(t, "nftbox")    // runs ctguard
	server.MustRun(t, "ip", "link", "add", "ctg-s", "type", "veth", "peer", "name", "ctg-b", "netns", box.Name)
	server.MustRun(t, "ip", "addr", "add", "198.18.5.1/24", "dev", "ctg-s")
	server.MustRun(t, "ip", "link", "set", "ctg-s", "up")
	box.MustRun(t, "ip", "addr", "add", "198.18.5.2/24", "dev", "ctg-b")
	box.MustRun(t, "ip", "link", "set", "ctg-b", "up")
	c := newClient(t, box)

	match := policy.Match{Family: policy.FamilyIPv4, Destinations: prefixes("198.18.5.1/32"), DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}
	observe := ruleset.Build([]policy.Policy{policytest.New(policy.Document{Metadata: policy.Metadata{Name: "lab"}, Spec: policy.Spec{
		Workaround: policy.WorkaroundLiberal, Liberal: &policy.Liberal{Scope: policy.ScopePerFlow, Handshake: policy.HandshakeNone}, Match: match,
	}})}, testOpts)
	drop := ruleset.Build([]policy.Policy{policytest.New(policy.Document{Metadata: policy.Metadata{Name: "lab"}, Spec: policy.Spec{
		Workaround: policy.WorkaroundDropInvalid, DropInvalid: &policy.DropInvalid{Interfaces: []string{"ctg-b"}, Hooks: []policy.Hook{policy.HookInput}}, Match: match,
	}})}, testOpts)
	// SYN|FIN is invalid for conntrack; delivered, the box answers it with
	// a RST of its own (the incident's mechanism, without a real flow).
	segment := tcpSegment(addr("198.18.5.1"), addr("198.18.5.2"), 443, 34567, flagSYN|flagFIN)

	type snapshot struct {
		counters     map[string]ruleset.Counter
		outRsts, inv uint64
	}
	snap := func() snapshot {
		cs, err := c.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return snapshot{cs, snmpTCP(t, box, "OutRsts"), conntrackInvalid(t, box)}
	}

	// Observe-only: the segment reaches the stack, which sends the RST.
	if err := c.Replace(observe); err != nil {
		t.Fatal(err)
	}
	s0 := snap()
	sendRaw(t, server, segment)
	s1 := snap()
	if s1.outRsts != s0.outRsts+1 || s1.counters["lab_count-invalid_ipv4"].Packets != 1 || s1.counters["lab_count-invalid-rst_ipv4"].Packets != 1 {
		t.Fatalf("unmitigated: want one RST sent and counted, got OutRsts %d->%d, counters %+v", s0.outRsts, s1.outRsts, s1.counters)
	}
	if s1.inv != s0.inv+2 {
		t.Errorf("unmitigated: conntrack invalid %d -> %d, want +2 (the segment and the RST)", s0.inv, s1.inv)
	}

	// dropInvalid: the segment is dropped and counted, no RST leaves.
	if err := c.Replace(drop); err != nil {
		t.Fatal(err)
	}
	sendRaw(t, server, segment)
	s2 := snap()
	if s2.outRsts != s1.outRsts {
		t.Errorf("mitigated: the box still sent a RST (OutRsts %d -> %d)", s1.outRsts, s2.outRsts)
	}
	if got := s2.counters["lab_drop-invalid_ipv4"].Packets; got != 1 {
		t.Errorf("mitigated: drop counter = %d, want 1", got)
	}
	if got := s2.counters["lab_count-invalid-rst_ipv4"].Packets; got != 1 {
		t.Errorf("mitigated: RST counter = %d, want still 1 (carried over, no new RST)", got)
	}
	if s2.inv != s1.inv+1 {
		t.Errorf("mitigated: conntrack invalid %d -> %d, want +1 (the segment only)", s1.inv, s2.inv)
	}
	if !strings.Contains(nftList(t, box, "counter", "inet", "ctguard", "lab_drop-invalid_ipv4"), `"packets": 1`) {
		t.Errorf("nft -j does not show the drop counted")
	}
}

// snmpTCP reads one Tcp counter of /proc/net/snmp in the namespace.
func snmpTCP(t testing.TB, ns *netnstest.NS, field string) uint64 {
	t.Helper()
	var names []string
	for _, line := range strings.Split(string(ns.MustRun(t, "cat", "/proc/net/snmp")), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == field {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Tcp %s in /proc/net/snmp", field)
	return 0
}

// conntrackInvalid sums the invalid statistic of "conntrack -S".
func conntrackInvalid(t testing.TB, ns *netnstest.NS) uint64 {
	t.Helper()
	var sum uint64
	for _, m := range regexp.MustCompile(`\binvalid=(\d+)`).FindAllStringSubmatch(string(ns.MustRun(t, "conntrack", "-S")), -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		sum += v
	}
	return sum
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TCP flag bits.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
)

// tcpSegment builds an IPv4/TCP segment with a correct TCP checksum (the
// kernel fills in the IP header checksum for raw sockets).
func tcpSegment(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	pkt := make([]byte, 40)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pkt[2:], 40)
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	tcp := pkt[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 0x01020304)
	tcp[12], tcp[13] = 5<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	binary.BigEndian.PutUint16(tcp[16:], checksum(append(pseudo, tcp...)))
	return pkt
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sendRaw sends an IPv4 packet from a raw socket opened inside ns.
func sendRaw(t testing.TB, ns *netnstest.NS, pkt []byte) {
	t.Helper()
	fd := rawSocketIn(t, ns)
	defer unix.Close(fd)
	dst := [4]byte(pkt[16:20])
	if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
		t.Fatalf("send raw packet: %v", err)
	}
}

// rawSocketIn opens a raw IPv4 socket inside ns.
func rawSocketIn(t testing.TB, ns *netnstest.NS) int {
	t.Helper()
	var fd int
	var err error
	ns.Do(t, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) })
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	return fd
}

// hostsTable is one dropInvalid policy with n /32 hosts of 198.18.0.0/15
// (none adjacent, so none merge).
func hostsTable(n int) ruleset.Table {
	hosts := make([]netip.Prefix, n)
	for i := range hosts {
		v := 2 * i
		hosts[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, byte(18 + v>>16), byte(v >> 8), byte(v)}), 32)
	}
	return ruleset.Build([]policy.Policy{policytest.New(policy.Document{Metadata: policy.Metadata{Name: "big"}, Spec: policy.Spec{
		Workaround:  policy.WorkaroundDropInvalid,
		DropInvalid: &policy.DropInvalid{Hooks: []policy.Hook{policy.HookInput}},
		Match:       policy.Match{Family: policy.FamilyIPv4, Destinations: hosts},
	}})}, testOpts)
}

func TestPrivilegedLargeSet(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftbig")
	c := newClient(t, ns)
	want := hostsTable(10000)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read()
	if err != nil || !ruleset.Equal(got, &want) {
		t.Fatalf("Read of a 10,000-element set: %v (equal=%v)", err, ruleset.Equal(got, &want))
	}
	out := ns.MustRun(t, "nft", "list", "set", "inet", "ctguard", "big-dst4")
	if n := bytes.Count(out, []byte("198.")); n != 10000 {
		t.Errorf("nft lists %d elements, want 10000", n)
	}
}

// BenchmarkPrivilegedReplace10k replaces a table holding 10,000 /32s.
func BenchmarkPrivilegedReplace10k(b *testing.B) {
	ns := netnstest.NewNetNS(b, "nftbr")
	c := newClient(b, ns)
	table := hostsTable(10000)
	for b.Loop() {
		if err := c.Replace(table); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrivilegedNftFile10k loads the same table with "nft -f" of its
// String() (the replace done the nft way: delete and add in one file).
func BenchmarkPrivilegedNftFile10k(b *testing.B) {
	ns := netnstest.NewNetNS(b, "nftbf")
	file := filepath.Join(b.TempDir(), "ctguard.nft")
	text := "table inet ctguard\ndelete table inet ctguard\n" + hostsTable(10000).String()
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ns.MustRun(b, "nft", "-f", file)
	}
}

// TestPrivilegedManyPolicies replaces a table of 100 dropInvalid policies:
// thousands of batch messages, each acked, which overflowed the default
// receive buffer (ENOBUFS) although the kernel had committed the batch.
func TestPrivilegedManyPolicies(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftmany")
	c := newClient(t, ns)
	var ps []policy.Policy
	for i := range 100 {
		ps = append(ps, policytest.New(policy.Document{
			Metadata: policy.Metadata{Name: fmt.Sprintf("p%03d", i)},
			Spec: policy.Spec{
				Workaround:  policy.WorkaroundDropInvalid,
				DropInvalid: &policy.DropInvalid{Interfaces: []string{"eth0"}, Hooks: []policy.Hook{policy.HookInput, policy.HookForward}},
				Match: policy.Match{
					Family:           policy.FamilyAny,
					Destinations:     []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i)), netip.MustParsePrefix("2001:db8::/32")},
					DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
				},
			},
		}))
	}
	want := ruleset.Build(ps, testOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	got, err := c.Read()
	if err != nil || !ruleset.Equal(got, &want) {
		t.Fatalf("Read after replacing 100 policies: %v (equal=%v)", err, ruleset.Equal(got, &want))
	}
}

// gatePolicies are gated perFlow policies of every NAT kind and family.
func gatePolicies() []policy.Policy {
	return []policy.Policy{
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "gated"}, Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow},
			Match: policy.Match{
				Family:           policy.FamilyIPv4,
				Destinations:     prefixes("198.19.0.0/16"),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
				NAT:              []policy.NATKind{policy.NATSource, policy.NATDest},
			},
		}}),
		policytest.New(policy.Document{Metadata: policy.Metadata{Name: "all"}, Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow, Directions: []policy.Direction{policy.DirectionOriginal, policy.DirectionReply}},
			Match:      policy.Match{NAT: []policy.NATKind{policy.NATAny}},
		}}),
	}
}

// TestPrivilegedGateRulesRoundTrip writes gate rules with whatever queue
// encoding the kernel takes (xt NFQUEUE through nft_compat, in tables ip and
// ip6 ctguard, on a kernel without nft_queue) and reads them back to the
// same model; nft lists them (text and JSON), and Delete removes them.
func TestPrivilegedGateRulesRoundTrip(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftgate")
	c := newClient(t, ns)
	want := ruleset.Build(gatePolicies(), testOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	q, known := c.QueueEncoding()
	if !known {
		t.Fatal("QueueEncoding unknown after writing gate rules")
	}
	t.Logf("queue encoding: %s", q)
	got, err := c.Read()
	if err != nil || !ruleset.Equal(got, &want) {
		t.Fatalf("Read: %v\n got %s\nwant %s", err, got, &want)
	}
	// nft -j must not abort on ctguard's tables (it does on an xtables
	// target inside an inet table).
	ruleset := string(ns.MustRun(t, "nft", "-j", "list", "ruleset"))
	listed := string(ns.MustRun(t, "nft", "list", "table", "inet", "ctguard"))
	if q == QueueCompat {
		if strings.Contains(listed, "prerouting") {
			t.Errorf("inet ctguard holds the xt-encoded gate chain:\n%s", listed)
		}
		listed = string(ns.MustRun(t, "nft", "list", "table", "ip", "ctguard")) + string(ns.MustRun(t, "nft", "list", "table", "ip6", "ctguard"))
	}
	for _, s := range []string{"chain prerouting", "priority mangle", "ct direction reply", "ct mark & 0x00800000 == 0x00000000", "tcp flags syn,ack / syn,ack", "ct status snat,dnat", `counter name "all_gate"`} {
		if !strings.Contains(listed, s) {
			t.Errorf("nft list lacks %q:\n%s", s, listed)
		}
	}
	if !strings.Contains(ruleset, `"all_gate"`) {
		t.Errorf("nft -j list ruleset lacks the gate counter:\n%s", ruleset)
	}
	// A second replace keeps the encoding; Delete removes every table.
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	if q2, _ := c.QueueEncoding(); q2 != q {
		t.Errorf("encoding changed from %s to %s", q, q2)
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if out := string(ns.MustRun(t, "nft", "list", "tables")); strings.Contains(out, "ctguard") {
		t.Errorf("tables left after Delete:\n%s", out)
	}
}

// TestPrivilegedGateTablesDrift: a change to table ip ctguard, where the
// xt-encoded gate rules live, reads as a different table.
func TestPrivilegedGateTablesDrift(t *testing.T) {
	ns := netnstest.NewNetNS(t, "nftgdr")
	c := newClient(t, ns)
	want := ruleset.Build(gatePolicies(), testOpts)
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	if q, _ := c.QueueEncoding(); q != QueueCompat {
		t.Skip("the kernel takes nft's queue: the gate rules are in inet ctguard")
	}
	ns.MustRun(t, "nft", "flush", "chain", "ip6", "ctguard", "prerouting")
	got, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	if ruleset.Equal(got, &want) {
		t.Fatalf("a flushed ip6 gate chain reads as the same table:\n%s", got)
	}
	ns.MustRun(t, "nft", "add chain ip ctguard mine")
	if _, err := c.Read(); !errors.Is(err, ErrUnrecognised) {
		t.Errorf("Read with a foreign chain in ip ctguard: %v, want ErrUnrecognised", err)
	}
	if err := c.Replace(want); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(); err != nil || !ruleset.Equal(got, &want) {
		t.Errorf("after a replace: %v\n%s", err, got)
	}
}
