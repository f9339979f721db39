package selector

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

// perFlow is a per-flow policy; without nat or natOnly it selects any flow.
func perFlow(name string, m policy.Match, dirs ...policy.Direction) policy.Policy {
	if m.NAT == nil && m.NATOnly == nil {
		m.NAT = []policy.NATKind{policy.NATAny}
	}
	return policytest.New(policy.Document{
		Metadata: policy.Metadata{Name: name},
		Spec: policy.Spec{
			Workaround: policy.WorkaroundLiberal,
			Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow, Directions: dirs},
			Match:      m,
		},
	})
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func flow(src string, sport uint16, dst string, dport uint16, snat bool) *flows.Flow {
	f := &flows.Flow{Proto: flows.ProtoTCP, Orig: flows.Tuple{
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport,
	}}
	if snat {
		f.Status |= flows.StatusSrcNAT
	}
	return f
}

// dnatFlow is a client dialling service 198.18.100.1:80, DNATed to
// backend 198.19.5.5:8080.
func dnatFlow() *flows.Flow {
	f := withReply(flow("198.18.1.2", 40000, "198.18.100.1", 80, false), "198.19.5.5", 8080)
	f.Status |= flows.StatusDstNAT
	return f
}

// withReply sets the reply tuple's source (the server the reply comes from).
func withReply(f *flows.Flow, src string, sport uint16) *flows.Flow {
	f.Reply = flows.Tuple{Src: netip.MustParseAddr(src), SrcPort: sport, Dst: f.Orig.Src, DstPort: f.Orig.SrcPort}
	return f
}

func TestMatch(t *testing.T) {
	yes := true
	tests := []struct {
		name string
		m    policy.Match
		f    *flows.Flow
		want bool
	}{
		{"empty match selects any tcp", policy.Match{Family: policy.FamilyAny}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"udp never", policy.Match{}, &flows.Flow{Proto: 17, Orig: flows.Tuple{Src: netip.MustParseAddr("198.18.1.2"), Dst: netip.MustParseAddr("198.19.0.10")}}, false},
		{"family ipv4 rejects ipv6", policy.Match{Family: policy.FamilyIPv4}, flow("2001:db8::2", 40000, "2001:db8::10", 443, false), false},
		{"family ipv6 rejects ipv4", policy.Match{Family: policy.FamilyIPv6}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"family ipv6 accepts ipv6", policy.Match{Family: policy.FamilyIPv6}, flow("2001:db8::2", 40000, "2001:db8::10", 443, false), true},
		{"source inside", policy.Match{Sources: prefixes("198.18.1.0/24")}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"source outside", policy.Match{Sources: prefixes("198.18.2.0/24")}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"source first address", policy.Match{Sources: prefixes("198.18.1.0/24")}, flow("198.18.1.0", 40000, "198.19.0.10", 443, false), true},
		{"source last address", policy.Match{Sources: prefixes("198.18.1.0/24")}, flow("198.18.1.255", 40000, "198.19.0.10", 443, false), true},
		{"source one past", policy.Match{Sources: prefixes("198.18.1.0/24")}, flow("198.18.2.0", 40000, "198.19.0.10", 443, false), false},
		{"sources are OR-ed", policy.Match{Sources: prefixes("198.18.5.0/24", "198.18.1.2/32")}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"v4 list never matches v6", policy.Match{Sources: prefixes("0.0.0.0/0")}, flow("2001:db8::2", 40000, "2001:db8::10", 443, false), false},
		{"v4 /0", policy.Match{Destinations: prefixes("0.0.0.0/0")}, flow("198.18.1.2", 40000, "255.255.255.255", 443, false), true},
		{"v6 /0", policy.Match{Destinations: prefixes("::/0")}, flow("2001:db8::2", 40000, "ffff::1", 443, false), true},
		{"v6 /64 inside", policy.Match{Destinations: prefixes("2001:db8:0:1::/64")}, flow("2001:db8::2", 40000, "2001:db8:0:1:ffff:ffff:ffff:ffff", 443, false), true},
		{"v6 /64 outside", policy.Match{Destinations: prefixes("2001:db8:0:1::/64")}, flow("2001:db8::2", 40000, "2001:db8:0:2::", 443, false), false},
		{"v6 /127", policy.Match{Destinations: prefixes("2001:db8::10/127")}, flow("2001:db8::2", 40000, "2001:db8::11", 443, false), true},
		{"destination on orig dst", policy.Match{Destinations: prefixes("198.19.0.0/16")}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"destination not on orig src", policy.Match{Destinations: prefixes("198.18.1.0/24")}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"port single", policy.Match{DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"port not source port", policy.Match{DestinationPorts: []policy.PortRange{{From: 40000, To: 40000}}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"port range edge", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}, {From: 8000, To: 8443}}}, flow("198.18.1.2", 40000, "198.19.0.10", 8443, false), true},
		{"port 65535", policy.Match{DestinationPorts: []policy.PortRange{{From: 65000, To: 65535}}}, flow("198.18.1.2", 40000, "198.19.0.10", 65535, false), true},
		{"port between ranges", policy.Match{DestinationPorts: []policy.PortRange{{From: 80, To: 80}, {From: 8000, To: 8443}}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"natOnly rejects plain", policy.Match{NATOnly: &yes}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"natOnly accepts snat", policy.Match{NATOnly: &yes}, flow("198.18.1.2", 40000, "198.19.0.10", 443, true), true},
		{"nat snat rejects dnat", policy.Match{NAT: []policy.NATKind{policy.NATSource}}, dnatFlow(), false},
		{"nat dnat accepts dnat", policy.Match{NAT: []policy.NATKind{policy.NATDest}}, dnatFlow(), true},
		{"nat dnat rejects snat", policy.Match{NAT: []policy.NATKind{policy.NATDest}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, true), false},
		{"nat snat,dnat accepts both", policy.Match{NAT: []policy.NATKind{policy.NATSource, policy.NATDest}}, dnatFlow(), true},
		{"unset nat defaults to snat", policy.Match{NAT: []policy.NATKind{}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
		{"natOnly false is any", policy.Match{NATOnly: new(bool)}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), true},
		{"dnat: destination is the service address", policy.Match{Destinations: prefixes("198.18.100.1/32"), DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, dnatFlow(), true},
		{"dnat: destination is the backend", policy.Match{Destinations: prefixes("198.19.5.0/24"), DestinationPorts: []policy.PortRange{{From: 8080, To: 8080}}}, dnatFlow(), true},
		{"dnat: neither", policy.Match{Destinations: prefixes("198.19.6.0/24")}, dnatFlow(), false},
		{"snat: reply source is not looked at", policy.Match{Destinations: prefixes("198.19.5.0/24")}, withReply(flow("198.18.1.2", 40000, "198.19.0.10", 443, true), "198.19.5.5", 443), false},
		{"fields are AND-ed", policy.Match{Sources: prefixes("198.18.1.0/24"), DestinationPorts: []policy.PortRange{{From: 80, To: 80}}}, flow("198.18.1.2", 40000, "198.19.0.10", 443, false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Compile([]policy.Policy{perFlow("p", tt.m)})
			if err != nil {
				t.Fatal(err)
			}
			r := s.Match(tt.f)
			if got := r.Policies.Has(0); got != tt.want {
				t.Fatalf("match = %v, want %v", got, tt.want)
			}
			if tt.want && r.Dirs != flows.Reply {
				t.Fatalf("dirs = %v, want the default reply", r.Dirs)
			}
		})
	}
}

func TestCompileKeepsPerFlowPoliciesAndUnionsDirections(t *testing.T) {
	no := false
	global := policytest.Named("global", policy.Spec{Workaround: policy.WorkaroundLiberal, Liberal: &policy.Liberal{Scope: policy.ScopeGlobal}})
	drop := policytest.New(policy.Document{Metadata: policy.Metadata{Name: "drop"}, Spec: policy.Spec{Workaround: policy.WorkaroundDropInvalid}})
	web := perFlow("web", policy.Match{DestinationPorts: []policy.PortRange{{From: 443, To: 443}}}, policy.DirectionOriginal)
	d := perFlow("fresh", policy.Match{Sources: prefixes("198.18.0.0/15")}, policy.DirectionReply).Document()
	d.Spec.Liberal.ExistingFlows = &no
	fresh := policytest.New(d)
	s, err := Compile([]policy.Policy{global, web, drop, fresh})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 || s.Name(0) != "web" || s.Name(1) != "fresh" {
		t.Fatalf("compiled %d policies", s.Len())
	}
	if !s.ExistingFlows(0) || s.ExistingFlows(1) {
		t.Fatal("existingFlows: want default true, explicit false")
	}
	r := s.Match(flow("198.18.1.2", 40000, "198.19.0.10", 443, false))
	if r.Policies != 0b11 || r.Dirs != flows.Both {
		t.Fatalf("Match = %+v, want both policies, both directions", r)
	}
	if e := s.Restrict(r); e.Policies != 0b01 || e.Dirs != flows.Original {
		t.Fatalf("Restrict = %+v, want only web, original", e)
	}
}

func TestCompileTooManyPolicies(t *testing.T) {
	ps := make([]policy.Policy, policy.MaxPerFlowPolicies+1)
	for i := range ps {
		ps[i] = perFlow(fmt.Sprint(i), policy.Match{})
	}
	if _, err := Compile(ps); !errors.Is(err, policy.ErrTooManyPerFlow) {
		t.Fatalf("beyond MaxPerFlowPolicies: %v, want ErrTooManyPerFlow", err)
	}
}

func TestMergeOverlappingAndAdjacent(t *testing.T) {
	s := newAddrSet(prefixes("198.18.1.0/25", "198.18.1.128/25", "198.18.1.7/32", "198.18.3.0/24", "2001:db8::/33", "2001:db8:8000::/33"))
	if len(s.V4) != 2 || len(s.V6) != 1 {
		t.Fatalf("merged to %d v4 and %d v6 ranges, want 2 and 1", len(s.V4), len(s.V6))
	}
	p := newPortSet([]policy.PortRange{{From: 10, To: 20}, {From: 21, To: 30}, {From: 15, To: 16}, {From: 65535, To: 65535}})
	if len(p.ranges) != 2 {
		t.Fatalf("merged ports to %v", p.ranges)
	}
}

func TestDirections(t *testing.T) {
	global := policytest.Named("global", policy.Spec{Workaround: policy.WorkaroundLiberal, Liberal: &policy.Liberal{Scope: policy.ScopeGlobal}})
	tests := []struct {
		name string
		ps   []policy.Policy
		want flows.Directions
	}{
		{"none", nil, 0},
		{"global only", []policy.Policy{global}, 0},
		{"default reply", []policy.Policy{perFlow("a", policy.Match{})}, flows.Reply},
		{"original", []policy.Policy{perFlow("a", policy.Match{}, policy.DirectionOriginal)}, flows.Original},
		{"union", []policy.Policy{
			perFlow("a", policy.Match{}, policy.DirectionOriginal), perFlow("b", policy.Match{}), global,
		}, flows.Both},
	}
	for _, tt := range tests {
		if got := Directions(tt.ps); got != tt.want {
			t.Errorf("%s: Directions = %v, want %v", tt.name, got, tt.want)
		}
	}
}
