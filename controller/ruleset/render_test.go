package ruleset

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctguard/ctguard/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenMixes are the policy mixes whose rendering is kept in testdata.
func goldenMixes() map[string][]policy.Policy {
	return map[string][]policy.Policy{
		"empty": nil,
		"drop-unscoped": {
			dropInvalid("all", policy.Match{Family: policy.FamilyAny}, nil, policy.HookInput),
		},
		"drop-scoped-dual-stack": {
			dropInvalid("egress-snat", policy.Match{
				Family:           policy.FamilyAny,
				Destinations:     prefixes("198.18.0.0/24", "198.18.1.0/24", "203.0.113.9/32", "2001:db8::/32", "fd00:c79::/48"),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}, {From: 8000, To: 8100}, {From: 8050, To: 8200}},
			}, []string{"wan0", "wan1"}, policy.HookInput, policy.HookForward),
		},
		"perflow-guard-and-gate": {
			handshake(liberal("guarded", policy.ScopePerFlow, policy.Match{Family: policy.FamilyAny, Destinations: prefixes("198.18.0.0/15", "fd00:c7::/64"),
				NAT: []policy.NATKind{policy.NATDest}}), policy.HandshakeGuard),
			directions(liberal("gated", policy.ScopePerFlow, policy.Match{Family: policy.FamilyIPv6, NAT: []policy.NATKind{policy.NATAny}}),
				policy.DirectionOriginal, policy.DirectionReply),
		},
		"mixed": {
			liberal("zz-global", policy.ScopeGlobal, policy.Match{Family: policy.FamilyAny}),
			liberal("flows", policy.ScopePerFlow, policy.Match{
				Family:           policy.FamilyIPv4,
				Sources:          prefixes("198.19.0.0/16"),
				Destinations:     prefixes("198.18.0.0/15"),
				DestinationPorts: []policy.PortRange{{From: 443, To: 443}},
				NAT:              []policy.NATKind{policy.NATSource, policy.NATDest},
			}),
			dropInvalid("box", policy.Match{Family: policy.FamilyIPv6}, []string{"wan0"}, policy.HookInput),
		},
	}
}

func TestStringGolden(t *testing.T) {
	for name, policies := range goldenMixes() {
		t.Run(name, func(t *testing.T) {
			got := Build(policies, testOpts).String()
			path := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("String() differs from %s (run with -update to accept):\n%s", path, got)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{Policy: "p", Purpose: PurposeDropInvalid, Counter: "p_drop-invalid", Drop: true},
			`meta l4proto tcp ct state invalid counter name "p_drop-invalid" drop comment "ctguard policy p: drop-invalid"`},
		{Rule{Policy: "p", Purpose: PurposeDropInvalid, NFProto: NFProtoIPv6, IifnameSet: "p-ifaces", Counter: "c", Drop: true},
			`meta l4proto tcp ct state invalid iifname @p-ifaces meta nfproto ipv6 counter name "c" drop comment "ctguard policy p: drop-invalid ipv6"`},
		{Rule{Policy: "p", Purpose: PurposeCountInvalidRST, NFProto: NFProtoIPv6, RSTOnly: true, AddrSet: "p-dst6", AddrIsDest: true, PortSet: "p-ports", PortIsDest: true, Counter: "c"},
			`meta l4proto tcp tcp flags rst ct state invalid ip6 daddr @p-dst6 tcp dport @p-ports counter name "c" comment "ctguard policy p: count-invalid-rst ipv6"`},
		{Rule{Purpose: PurposeUnrecognised, Detail: `handle 7 comment "x"`}, `# unrecognised rule: handle 7 comment "x"`},
	}
	for _, tt := range tests {
		if got := tt.rule.String(); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}
