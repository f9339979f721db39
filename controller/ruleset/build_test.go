package ruleset

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/ctguard/ctguard/policy"
)

func TestBuild(t *testing.T) {
	any4 := policy.Match{Family: policy.FamilyAny}
	tests := []struct {
		name     string
		policies []policy.Policy
		want     Table
	}{
		{name: "no policies", want: Table{}},
		{
			name:     "unscoped dropInvalid on input",
			policies: []policy.Policy{dropInvalid("all", any4, nil, policy.HookInput)},
			want: Table{
				Counters: []Counter{{Name: "all_count-invalid-rst"}, {Name: "all_drop-invalid"}},
				Chains: []Chain{
					{Hook: HookInput, Priority: Priority, Rules: []Rule{{Policy: "all", Purpose: PurposeDropInvalid, Counter: "all_drop-invalid", Drop: true}}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{{Policy: "all", Purpose: PurposeCountInvalidRST, RSTOnly: true, Counter: "all_count-invalid-rst"}}},
				},
			},
		},
		{
			name: "dropInvalid on both hooks, ipv4 only, scoped",
			policies: []policy.Policy{dropInvalid("egress-snat", policy.Match{
				Family:           policy.FamilyIPv4,
				Destinations:     prefixes("198.18.0.0/24"),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
			}, []string{"wan0", "eth1"}, policy.HookInput, policy.HookForward)},
			want: Table{
				Counters: []Counter{{Name: "egress-snat_count-invalid-rst_ipv4"}, {Name: "egress-snat_drop-invalid_forward_ipv4"}, {Name: "egress-snat_drop-invalid_ipv4"}},
				Sets: []Set{
					{Name: "egress-snat-dst4", Type: SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/24"}},
					{Name: "egress-snat-ifaces", Type: SetIfname, Elements: []string{"eth1", "wan0"}},
					{Name: "egress-snat-ports", Type: SetInetService, Interval: true, Elements: []string{"443"}},
				},
				Chains: []Chain{
					{Hook: HookInput, Priority: Priority, Rules: []Rule{{Policy: "egress-snat", Purpose: PurposeDropInvalid, NFProto: NFProtoIPv4, IifnameSet: "egress-snat-ifaces", AddrSet: "egress-snat-dst4", PortSet: "egress-snat-ports", Counter: "egress-snat_drop-invalid_ipv4", Drop: true}}},
					{Hook: HookForward, Priority: Priority, Rules: []Rule{{Policy: "egress-snat", Purpose: PurposeDropInvalid, NFProto: NFProtoIPv4, IifnameSet: "egress-snat-ifaces", AddrSet: "egress-snat-dst4", PortSet: "egress-snat-ports", Counter: "egress-snat_drop-invalid_forward_ipv4", Drop: true}}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{{Policy: "egress-snat", Purpose: PurposeCountInvalidRST, NFProto: NFProtoIPv4, RSTOnly: true, AddrSet: "egress-snat-dst4", AddrIsDest: true, PortSet: "egress-snat-ports", PortIsDest: true, Counter: "egress-snat_count-invalid-rst_ipv4"}}},
				},
			},
		},
		{
			name:     "perFlow with both families splits per family",
			policies: []policy.Policy{handshake(liberal("web", policy.ScopePerFlow, policy.Match{Family: policy.FamilyAny, Sources: prefixes("198.19.0.0/16"), Destinations: prefixes("2001:db8::/32", "198.18.0.0/16")}), policy.HandshakeNone)},
			want: Table{
				Counters: []Counter{{Name: "web_count-invalid-rst_ipv4"}, {Name: "web_count-invalid-rst_ipv6"}, {Name: "web_count-invalid_ipv4"}, {Name: "web_count-invalid_ipv6"}},
				Sets: []Set{
					{Name: "web-dst4", Type: SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/16"}},
					{Name: "web-dst6", Type: SetIPv6Addr, Interval: true, Elements: []string{"2001:db8::/32"}},
				},
				Chains: []Chain{
					{Hook: HookInput, Priority: Priority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeCountInvalid, NFProto: NFProtoIPv4, AddrSet: "web-dst4", Counter: "web_count-invalid_ipv4"},
						{Policy: "web", Purpose: PurposeCountInvalid, NFProto: NFProtoIPv6, AddrSet: "web-dst6", Counter: "web_count-invalid_ipv6"},
					}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeCountInvalidRST, NFProto: NFProtoIPv4, RSTOnly: true, AddrSet: "web-dst4", AddrIsDest: true, Counter: "web_count-invalid-rst_ipv4"},
						{Policy: "web", Purpose: PurposeCountInvalidRST, NFProto: NFProtoIPv6, RSTOnly: true, AddrSet: "web-dst6", AddrIsDest: true, Counter: "web_count-invalid-rst_ipv6"},
					}},
				},
			},
		},
		{
			name: "perFlow gate, snat and dnat, scoped: one gate rule per policy, count on input and forward",
			policies: []policy.Policy{liberal("web", policy.ScopePerFlow, policy.Match{Family: policy.FamilyIPv4,
				Sources: prefixes("198.19.0.0/16"), Destinations: prefixes("198.18.0.0/16"), DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
				NAT: []policy.NATKind{policy.NATSource, policy.NATDest}})},
			want: Table{
				Counters: []Counter{{Name: "web_count-invalid-rst_ipv4"}, {Name: "web_count-invalid_forward_ipv4"}, {Name: "web_count-invalid_ipv4"}, {Name: "web_gate_ipv4"}},
				Sets: []Set{
					{Name: "web-dst4", Type: SetIPv4Addr, Interval: true, Elements: []string{"198.18.0.0/16"}},
					{Name: "web-ports", Type: SetInetService, Interval: true, Elements: []string{"443"}},
				},
				Chains: []Chain{
					{Hook: HookPrerouting, Priority: GatePriority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeGate, NFProto: NFProtoIPv4, NATStatus: StatusSrcNAT | StatusDstNAT, MarkBit: 0x00800000, Queue: 7301, Counter: "web_gate_ipv4"},
					}},
					{Hook: HookInput, Priority: Priority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeCountInvalid, NFProto: NFProtoIPv4, AddrSet: "web-dst4", PortSet: "web-ports", Counter: "web_count-invalid_ipv4"},
					}},
					{Hook: HookForward, Priority: Priority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeCountInvalid, NFProto: NFProtoIPv4, AddrSet: "web-dst4", PortSet: "web-ports", Counter: "web_count-invalid_forward_ipv4"},
					}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{
						{Policy: "web", Purpose: PurposeCountInvalidRST, NFProto: NFProtoIPv4, RSTOnly: true, AddrSet: "web-dst4", AddrIsDest: true, PortSet: "web-ports", PortIsDest: true, Counter: "web_count-invalid-rst_ipv4"},
					}},
				},
			},
		},
		{
			name:     "perFlow gate unscoped, both directions: one rule for both families",
			policies: []policy.Policy{directions(liberal("all", policy.ScopePerFlow, policy.Match{Family: policy.FamilyAny}), policy.DirectionOriginal, policy.DirectionReply)},
			want: Table{
				Counters: []Counter{{Name: "all_count-invalid"}, {Name: "all_count-invalid-rst"}, {Name: "all_gate"}},
				Chains: []Chain{
					{Hook: HookPrerouting, Priority: GatePriority, Rules: []Rule{{Policy: "all", Purpose: PurposeGate, NATStatus: StatusSrcNAT, MarkBit: 0x00800000, Queue: 7301, Counter: "all_gate"}}},
					{Hook: HookInput, Priority: Priority, Rules: []Rule{{Policy: "all", Purpose: PurposeCountInvalid, Counter: "all_count-invalid"}}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{{Policy: "all", Purpose: PurposeCountInvalidRST, RSTOnly: true, Counter: "all_count-invalid-rst"}}},
				},
			},
		},
		{
			name:     "perFlow guard on dnat: a dropping rule on forward, no gate",
			policies: []policy.Policy{handshake(liberal("svc", policy.ScopePerFlow, policy.Match{Family: policy.FamilyAny, NAT: []policy.NATKind{policy.NATDest}}), policy.HandshakeGuard)},
			want: Table{
				Counters: []Counter{{Name: "svc_count-invalid-rst"}, {Name: "svc_guard_forward"}},
				Chains: []Chain{
					{Hook: HookForward, Priority: Priority, Rules: []Rule{{Policy: "svc", Purpose: PurposeGuard, Counter: "svc_guard_forward", Drop: true}}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{{Policy: "svc", Purpose: PurposeCountInvalidRST, RSTOnly: true, Counter: "svc_count-invalid-rst"}}},
				},
			},
		},
		{
			name:     "global liberal only counts the RST",
			policies: []policy.Policy{liberal("global", policy.ScopeGlobal, policy.Match{Family: policy.FamilyAny})},
			want: Table{
				Counters: []Counter{{Name: "global_count-invalid-rst"}},
				Chains: []Chain{{Hook: HookOutput, Priority: Priority, Rules: []Rule{
					{Policy: "global", Purpose: PurposeCountInvalidRST, RSTOnly: true, Counter: "global_count-invalid-rst"},
				}}},
			},
		},
		{
			name:     "dropInvalid without hooks defaults to input",
			policies: []policy.Policy{dropInvalid("d", policy.Match{Family: policy.FamilyAny}, nil)},
			want: Table{
				Counters: []Counter{{Name: "d_count-invalid-rst"}, {Name: "d_drop-invalid"}},
				Chains: []Chain{
					{Hook: HookInput, Priority: Priority, Rules: []Rule{{Policy: "d", Purpose: PurposeDropInvalid, Counter: "d_drop-invalid", Drop: true}}},
					{Hook: HookOutput, Priority: Priority, Rules: []Rule{{Policy: "d", Purpose: PurposeCountInvalidRST, RSTOnly: true, Counter: "d_count-invalid-rst"}}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Build(tt.policies, testOpts)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Build:\n got %#v\nwant %#v\n%s", got, tt.want, got)
			}
		})
	}
}

func TestBuildGateWithoutQueueIsGuard(t *testing.T) {
	p := []policy.Policy{liberal("web", policy.ScopePerFlow, policy.Match{Family: policy.FamilyIPv6, NAT: []policy.NATKind{policy.NATAny}})}
	noQueue := testOpts
	noQueue.NoQueue = true
	got := Build(p, noQueue)
	want := Build([]policy.Policy{handshake(p[0], policy.HandshakeGuard)}, testOpts)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("gate without a queue:\n%s\nwant guard:\n%s", got, want)
	}
	if got.Chains[0].Hook != HookInput || got.Chains[0].Rules[0].Purpose != PurposeGuard || !got.Chains[0].Rules[0].Drop {
		t.Fatalf("want a dropping guard rule on input, got %s", got)
	}
}

func TestBuildOrderIndependent(t *testing.T) {
	a := dropInvalid("b-drop", policy.Match{Family: policy.FamilyAny}, nil, policy.HookInput)
	b := liberal("a-flow", policy.ScopePerFlow, policy.Match{Family: policy.FamilyAny})
	x, y := Build([]policy.Policy{a, b}, testOpts), Build([]policy.Policy{b, a}, testOpts)
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("Build depends on policy order:\n%s\n%s", x, y)
	}
	in := x.Chains[1].Rules
	if in[0].Policy != "a-flow" || in[1].Policy != "b-drop" {
		t.Fatalf("input rules not ordered by policy name: %v", in)
	}
}

func TestObjectName(t *testing.T) {
	tests := []struct{ policy, sep, suffix, want string }{
		{"egress-snat", "_", "drop-invalid_ipv4", "egress-snat_drop-invalid_ipv4"},
		{"egress.snat", "-", "dst4", "egress.snat-dst4"},
		{"1st", "-", "ports", "_1st-ports"},
		{"a b\"c", "-", "ifaces", "a_b_c-ifaces"},
	}
	for _, tt := range tests {
		if got := ObjectName(tt.policy, tt.sep, tt.suffix); got != tt.want {
			t.Errorf("ObjectName(%q, %q, %q) = %q, want %q", tt.policy, tt.sep, tt.suffix, got, tt.want)
		}
	}
}

// hosts returns n distinct /32 prefixes spread over 198.18.0.0/15, none
// adjacent, so merging keeps all of them.
func hosts(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		v := 2 * i
		out[i] = netip.MustParsePrefix(fmt.Sprintf("198.%d.%d.%d/32", 18+v>>16, v>>8&0xff, v&0xff))
	}
	return out
}

// BenchmarkBuild10kCIDRs builds a dropInvalid policy with 10,000 CIDRs.
func BenchmarkBuild10kCIDRs(b *testing.B) {
	p := []policy.Policy{dropInvalid("big", policy.Match{Family: policy.FamilyIPv4, Destinations: hosts(10000)}, []string{"wan0"}, policy.HookInput)}
	b.ReportAllocs()
	for b.Loop() {
		t := Build(p, testOpts)
		if len(t.Sets[0].Elements) != 10000 {
			b.Fatalf("got %d elements", len(t.Sets[0].Elements))
		}
	}
}
