package policy

import (
	"errors"
	"strings"
	"testing"
)

// withSpec returns a valid policy header for policy "t" followed by spec,
// indented under "spec:". The first line of spec is line 6 of the result.
func withSpec(spec string) string {
	var b strings.Builder
	b.WriteString("apiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata:\n  name: t\nspec:\n")
	for _, line := range strings.Split(strings.TrimPrefix(spec, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

// checkErrors parses yaml as p.yaml and asserts the exact error lines.
func checkErrors(t *testing.T, yaml string, want ...string) {
	t.Helper()
	policies, err := Parse("p.yaml", []byte(yaml))
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Parse: unexpected error:\n%v", err)
		}
		return
	}
	if policies != nil {
		t.Errorf("Parse returned %d policies along with errors, want none", len(policies))
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Parse error = %v (%T), want an ErrorList", err, err)
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("Parse errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestParseHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"yaml syntax", "apiVersion: [x\n",
			[]string{`p.yaml:1: invalid YAML: did not find expected ',' or ']'`}},
		{"not a mapping", "- apiVersion: ctguard.io/v1alpha1\n",
			[]string{`p.yaml:1: expected a MitigationPolicy mapping, found list`}},
		{"scalar document", "hello\n",
			[]string{`p.yaml:1: expected a MitigationPolicy mapping, found string "hello"`}},
		{"wrong apiVersion and kind", strings.Replace(strings.Replace(withSpec("workaround: liberal"),
			"ctguard.io/v1alpha1", "ctguard.io/v1", 1), "kind: MitigationPolicy", "kind: Policy", 1),
			[]string{
				`p.yaml:1: policy "t": apiVersion: found "ctguard.io/v1", expected "ctguard.io/v1alpha1"`,
				`p.yaml:2: policy "t": kind: found "Policy", expected "MitigationPolicy"`,
			}},
		{"missing everything", "metadata: {}\n",
			[]string{
				`p.yaml:1: apiVersion: required ("ctguard.io/v1alpha1")`,
				`p.yaml:1: kind: required ("MitigationPolicy")`,
				`p.yaml:1: metadata.name: required`,
				`p.yaml:1: spec: required`,
			}},
		{"case-insensitive key is unknown", strings.Replace(withSpec("workaround: liberal"), "kind:", "Kind:", 1),
			[]string{
				`p.yaml:1: policy "t": kind: required ("MitigationPolicy")`,
				`p.yaml:2: policy "t": Kind: unknown field (did you mean "kind"?)`,
			}},
		{"unknown top-level field", withSpec("workaround: liberal") + "status: {}\n",
			[]string{`p.yaml:7: policy "t": status: unknown field (valid: apiVersion, kind, metadata, spec)`}},
		{"duplicate field", withSpec("workaround: liberal\nworkaround: dropInvalid\nliberal: {scope: x}"),
			[]string{
				`p.yaml:7: policy "t": spec.workaround: duplicate field (first at line 6)`,
				`p.yaml:8: policy "t": spec.liberal.scope: unknown scope "x", valid: perFlow, global`,
			}},
		{"non-string key", withSpec("workaround: liberal\n1: x\nliberal: {scope: x}"),
			[]string{
				`p.yaml:7: policy "t": spec: expected a field name, found integer 1`,
				`p.yaml:8: policy "t": spec.liberal.scope: unknown scope "x", valid: perFlow, global`,
			}},
		{"odd unknown key is quoted", withSpec("workaround: liberal\n\"a b\\n\": x"),
			[]string{`p.yaml:7: policy "t": spec."a b\n": unknown field (valid: workaround, liberal, dropInvalid, match)`}},
		{"invalid name", strings.Replace(withSpec("workaround: liberal"), "name: t", "name: Egress_1", 1),
			[]string{`p.yaml:4: policy "Egress_1": metadata.name: invalid name "Egress_1": must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)`}},
		{"name ends with dash", strings.Replace(withSpec("workaround: liberal"), "name: t", "name: egress-", 1),
			[]string{`p.yaml:4: policy "egress-": metadata.name: invalid name "egress-": must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)`}},
		{"empty name", strings.Replace(withSpec("workaround: liberal"), "name: t", `name: ""`, 1),
			[]string{`p.yaml:4: metadata.name: invalid name "": must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)`}},
		{"name too long", strings.Replace(withSpec("workaround: liberal"), "name: t", "name: "+strings.Repeat("a", 41), 1),
			[]string{`p.yaml:4: policy "` + strings.Repeat("a", 41) + `": metadata.name: name is 41 characters, at most 40 allowed (it is embedded in nftables set and counter names)`}},
		{"name not a string", strings.Replace(withSpec("workaround: liberal"), "name: t", "name: true", 1),
			[]string{`p.yaml:4: metadata.name: expected a string, found boolean true (quote it to mean the string)`}},
		{"metadata not a mapping", strings.Replace(withSpec("workaround: liberal"), "metadata:\n  name: t", "metadata: t", 1),
			[]string{`p.yaml:3: metadata: expected a mapping, found string "t"`}},
		{"spec not a mapping", strings.Replace(withSpec("workaround: liberal"), "spec:\n  workaround: liberal", "spec: liberal", 1),
			[]string{`p.yaml:5: policy "t": spec: expected a mapping, found string "liberal"`}},
		{"spec missing", "apiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata:\n  name: t\n",
			[]string{`p.yaml:1: policy "t": spec: required`}},
		{"workaround missing", withSpec("match: {}"),
			[]string{`p.yaml:5: policy "t": spec.workaround: required (one of liberal, dropInvalid, observe)`}},
		{"workaround unknown", withSpec("workaround: sysctl"),
			[]string{`p.yaml:6: policy "t": spec.workaround: unknown workaround "sysctl", valid: liberal, dropInvalid, observe`}},
		{"workaround wrong case", withSpec("workaround: DropInvalid"),
			[]string{`p.yaml:6: policy "t": spec.workaround: unknown workaround "DropInvalid", valid: liberal, dropInvalid, observe (did you mean "dropInvalid"?)`}},
		{"workaround not a string", withSpec("workaround: [liberal]"),
			[]string{`p.yaml:6: policy "t": spec.workaround: expected a string, found list`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.yaml, tt.want...) })
	}
}

func TestParseLiberalErrors(t *testing.T) {
	const global = "the sysctl net.netfilter.nf_conntrack_tcp_be_liberal applies to "
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"scope unknown", "workaround: liberal\nliberal: {scope: perflow}",
			[]string{`p.yaml:7: policy "t": spec.liberal.scope: unknown scope "perflow", valid: perFlow, global (did you mean "perFlow"?)`}},
		{"direction unknown", "workaround: liberal\nliberal:\n  directions: [reply, both]",
			[]string{`p.yaml:8: policy "t": spec.liberal.directions[1]: unknown direction "both", valid: original, reply`}},
		{"direction duplicate", "workaround: liberal\nliberal:\n  directions:\n  - reply\n  - original\n  - reply",
			[]string{`p.yaml:11: policy "t": spec.liberal.directions[2]: duplicate "reply" (also at index 0)`}},
		{"directions empty", "workaround: liberal\nliberal:\n  directions: []",
			[]string{`p.yaml:8: policy "t": spec.liberal.directions: must not be empty (leave it out for the default [reply])`}},
		{"directions not a list", "workaround: liberal\nliberal:\n  directions: reply",
			[]string{`p.yaml:8: policy "t": spec.liberal.directions: expected a list, found string "reply" (write [...] around it for a list of one)`}},
		{"existingFlows no", "workaround: liberal\nliberal:\n  existingFlows: no",
			[]string{`p.yaml:8: policy "t": spec.liberal.existingFlows: expected a boolean, found string "no" (use true or false)`}},
		{"existingFlows quoted", "workaround: liberal\nliberal:\n  existingFlows: \"true\"",
			[]string{`p.yaml:8: policy "t": spec.liberal.existingFlows: expected a boolean, found string "true" (use true or false)`}},
		{"natOnly yes", "workaround: liberal\nmatch:\n  natOnly: yes",
			[]string{`p.yaml:8: policy "t": spec.match.natOnly: expected a boolean, found string "yes" (use true or false)`}},
		{"nat unknown", "workaround: liberal\nmatch:\n  nat: [snat, masquerade]",
			[]string{`p.yaml:8: policy "t": spec.match.nat[1]: unknown NAT kind "masquerade", valid: snat, dnat, any`}},
		{"nat any with others", "workaround: liberal\nmatch:\n  nat: [any, dnat]",
			[]string{`p.yaml:8: policy "t": spec.match.nat: any selects every flow: it cannot be combined with other kinds`}},
		{"nat empty", "workaround: liberal\nmatch:\n  nat: []",
			[]string{`p.yaml:8: policy "t": spec.match.nat: must not be empty (leave it out for the default [snat])`}},
		{"nat and natOnly", "workaround: liberal\nmatch:\n  nat: [dnat]\n  natOnly: true",
			[]string{`p.yaml:9: policy "t": spec.match.natOnly: not allowed with spec.match.nat: natOnly is its older form (true means [snat], false [any]); keep only nat`}},
		{"handshake unknown", "workaround: liberal\nliberal:\n  handshake: gated",
			[]string{`p.yaml:8: policy "t": spec.liberal.handshake: unknown handshake "gated", valid: gate, guard, none (did you mean "gate"?)`}},
		{"global with handshake", "workaround: liberal\nliberal:\n  scope: global\n  handshake: gate",
			[]string{`p.yaml:9: policy "t": spec.liberal.handshake: not allowed with scope global: ` + global + `every flow from its first packet on`}},
		{"dropInvalid block", "workaround: liberal\ndropInvalid: {hooks: [input]}",
			[]string{`p.yaml:7: policy "t": spec.dropInvalid: not allowed with workaround liberal (it configures the dropInvalid workaround)`}},
		{"global with directions and existingFlows", "workaround: liberal\nliberal:\n  scope: global\n  directions: [reply]\n  existingFlows: true",
			[]string{
				`p.yaml:9: policy "t": spec.liberal.directions: not allowed with scope global: ` + global + `both directions of every flow on the box`,
				`p.yaml:10: policy "t": spec.liberal.existingFlows: not allowed with scope global: ` + global + `every flow on the box, existing and new`,
			}},
		{"global with match", "workaround: liberal\nliberal: {scope: global}\nmatch:\n  family: ipv4\n  sources: [198.18.1.0/24]\n  destinations: [198.19.0.0/16]\n  destinationPorts: [443]\n  natOnly: true",
			[]string{
				`p.yaml:9: policy "t": spec.match.family: not allowed with scope global: ` + global + `every flow on the box (use scope perFlow to select flows)`,
				`p.yaml:10: policy "t": spec.match.sources: not allowed with scope global: ` + global + `every flow on the box (use scope perFlow to select flows)`,
				`p.yaml:11: policy "t": spec.match.destinations: not allowed with scope global: ` + global + `every flow on the box (use scope perFlow to select flows)`,
				`p.yaml:12: policy "t": spec.match.destinationPorts: not allowed with scope global: ` + global + `every flow on the box (use scope perFlow to select flows)`,
				`p.yaml:13: policy "t": spec.match.natOnly: not allowed with scope global: ` + global + `every flow on the box (use scope perFlow to select flows)`,
			}},
		{"unknown liberal field", "workaround: liberal\nliberal:\n  existingFlow: true",
			[]string{`p.yaml:8: policy "t": spec.liberal.existingFlow: unknown field (did you mean "existingFlows"?)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, withSpec(tt.spec), tt.want...) })
	}
}

func TestParseObserveErrors(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"sources", "workaround: observe\nmatch:\n  sources: [198.18.1.0/24]",
			[]string{`p.yaml:8: policy "t": spec.match.sources: not allowed with workaround observe: an invalid packet has lost its conntrack entry; on the input hook it carries the server as source and this box's own address as destination, so the client address is not in it`}},
		{"nat", "workaround: observe\nmatch:\n  nat: [dnat]",
			[]string{`p.yaml:8: policy "t": spec.match.nat: not allowed with workaround observe: an invalid packet has no conntrack entry, so there is no NAT status to test`}},
		{"settings", "workaround: observe\nliberal: {scope: perFlow}\ndropInvalid: {hooks: [input]}",
			[]string{
				`p.yaml:7: policy "t": spec.liberal: not allowed with workaround observe (it mitigates nothing: it has no settings)`,
				`p.yaml:8: policy "t": spec.dropInvalid: not allowed with workaround observe (it mitigates nothing: it has no settings)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, withSpec(tt.spec), tt.want...) })
	}
}

func TestParseObserve(t *testing.T) {
	ps, err := Parse("p.yaml", []byte(withSpec("workaround: observe\nmatch:\n  destinations: [198.19.0.0/16]\n  destinationPorts: [443]")))
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if p.doc.Spec.Workaround != WorkaroundObserve || p.IsPerFlow() || p.doc.Spec.Liberal != nil || p.doc.Spec.DropInvalid != nil || p.Hooks() != nil || p.doc.Spec.Match.Family != FamilyAny {
		t.Errorf("observe policy: %+v", p)
	}
}

func TestParseDropInvalidErrors(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string
	}{
		{"sources", "workaround: dropInvalid\nmatch:\n  sources: [198.18.1.0/24]",
			[]string{`p.yaml:8: policy "t": spec.match.sources: not allowed with workaround dropInvalid: an invalid packet has lost its conntrack entry; on the input hook it carries the server as source and this box's own address as destination, so the client address is not in it`}},
		{"natOnly", "workaround: dropInvalid\nmatch:\n  natOnly: false",
			[]string{`p.yaml:8: policy "t": spec.match.natOnly: not allowed with workaround dropInvalid: an invalid packet has no conntrack entry, so there is no NAT status to test`}},
		{"nat", "workaround: dropInvalid\nmatch:\n  nat: [dnat]",
			[]string{`p.yaml:8: policy "t": spec.match.nat: not allowed with workaround dropInvalid: an invalid packet has no conntrack entry, so there is no NAT status to test`}},
		{"liberal block", "workaround: dropInvalid\nliberal: {scope: perFlow}",
			[]string{`p.yaml:7: policy "t": spec.liberal: not allowed with workaround dropInvalid (it configures the liberal workaround)`}},
		{"interfaces", "workaround: dropInvalid\ndropInvalid:\n  interfaces:\n  - eth0\n  - \"\"\n  - a-very-long-name0\n  - eth0:1\n  - br/0\n  - \"eth 0\"\n  - ..\n  - eth0",
			[]string{
				`p.yaml:10: policy "t": spec.dropInvalid.interfaces[1]: invalid interface name "": empty`,
				`p.yaml:11: policy "t": spec.dropInvalid.interfaces[2]: invalid interface name "a-very-long-name0": longer than 15 bytes`,
				`p.yaml:12: policy "t": spec.dropInvalid.interfaces[3]: invalid interface name "eth0:1": contains ':'`,
				`p.yaml:13: policy "t": spec.dropInvalid.interfaces[4]: invalid interface name "br/0": contains '/'`,
				`p.yaml:14: policy "t": spec.dropInvalid.interfaces[5]: invalid interface name "eth 0": contains whitespace`,
				`p.yaml:15: policy "t": spec.dropInvalid.interfaces[6]: invalid interface name "..": reserved`,
				`p.yaml:16: policy "t": spec.dropInvalid.interfaces[7]: duplicate "eth0" (also at index 0)`,
			}},
		{"interface wildcards", "workaround: dropInvalid\ndropInvalid:\n  interfaces: [eth+, \"wan*\"]",
			[]string{
				`p.yaml:8: policy "t": spec.dropInvalid.interfaces[0]: invalid interface name "eth+": wildcards are not supported: list every interface by name`,
				`p.yaml:8: policy "t": spec.dropInvalid.interfaces[1]: invalid interface name "wan*": wildcards are not supported: list every interface by name`,
			}},
		{"interface not a string", "workaround: dropInvalid\ndropInvalid:\n  interfaces: [eth0, 7, eth1:x]",
			[]string{
				`p.yaml:8: policy "t": spec.dropInvalid.interfaces[1]: expected a string, found integer 7 (quote it to mean the string)`,
				`p.yaml:8: policy "t": spec.dropInvalid.interfaces[2]: invalid interface name "eth1:x": contains ':'`,
			}},
		{"hooks", "workaround: dropInvalid\ndropInvalid:\n  hooks: [input, output, input]",
			[]string{
				`p.yaml:8: policy "t": spec.dropInvalid.hooks[1]: unknown hook "output", valid: input, forward`,
				`p.yaml:8: policy "t": spec.dropInvalid.hooks[2]: duplicate "input" (also at index 0)`,
			}},
		{"hooks empty", "workaround: dropInvalid\ndropInvalid:\n  hooks: []",
			[]string{`p.yaml:8: policy "t": spec.dropInvalid.hooks: must not be empty (leave it out for the default [input])`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, withSpec(tt.spec), tt.want...) })
	}
}

func TestParseMatchErrors(t *testing.T) {
	tests := []struct {
		name  string
		match string // lines under "match:", the first is line 8
		want  []string
	}{
		{"family unknown", "family: ip4",
			[]string{`p.yaml:8: policy "t": spec.match.family: unknown family "ip4", valid: any, ipv4, ipv6 (did you mean "ipv4"?)`}},
		{"ipv6 prefix with family ipv4", "family: ipv4\ndestinations: [198.19.0.0/16, \"2001:db8::/32\"]",
			[]string{`p.yaml:9: policy "t": spec.match.destinations[1]: IPv6 prefix "2001:db8::/32" does not match family ipv4`}},
		{"ipv4 prefix with family ipv6", "sources: [198.18.1.0/24]\nfamily: ipv6",
			[]string{`p.yaml:8: policy "t": spec.match.sources[0]: IPv4 prefix "198.18.1.0/24" does not match family ipv6`}},
		{"invalid CIDR", "destinations:\n- 198.19.0.0/16\n- 10.0.0.300/8\n- 198.19.0.0/33\n- fe80::1%eth0\n- example.com",
			[]string{
				`p.yaml:10: policy "t": spec.match.destinations[1]: invalid CIDR "10.0.0.300/8"`,
				`p.yaml:11: policy "t": spec.match.destinations[2]: invalid CIDR "198.19.0.0/33"`,
				`p.yaml:12: policy "t": spec.match.destinations[3]: invalid CIDR "fe80::1%eth0"`,
				`p.yaml:13: policy "t": spec.match.destinations[4]: invalid CIDR "example.com"`,
			}},
		{"host bits", "sources: [198.18.1.1/24, \"2001:db8::1/64\"]",
			[]string{
				`p.yaml:8: policy "t": spec.match.sources[0]: "198.18.1.1/24" has host bits set (did you mean "198.18.1.0/24"?)`,
				`p.yaml:8: policy "t": spec.match.sources[1]: "2001:db8::1/64" has host bits set (did you mean "2001:db8::/64"?)`,
			}},
		{"IPv4-mapped", "sources: [\"::ffff:198.18.1.0/120\"]",
			[]string{`p.yaml:8: policy "t": spec.match.sources[0]: IPv4-mapped IPv6 prefix "::ffff:198.18.1.0/120" never matches: conntrack keeps IPv4 flows as IPv4 (did you mean "198.18.1.0/24"?)`}},
		{"CIDR not a string", "sources: [10, {a: b}]",
			[]string{
				`p.yaml:8: policy "t": spec.match.sources[0]: expected a CIDR string, found integer 10`,
				`p.yaml:8: policy "t": spec.match.sources[1]: expected a CIDR string, found mapping`,
			}},
		{"duplicate CIDR", "sources:\n- 198.18.1.5\n- 198.18.1.5/32",
			[]string{`p.yaml:10: policy "t": spec.match.sources[1]: duplicate "198.18.1.5/32" (also at index 0)`}},
		{"ports", "destinationPorts: [0, 65536, \"8100-8000\", \"0-10\", \"80-\", http, 1.5, 443, \"443\", \"443-443\", [1]]",
			[]string{
				`p.yaml:8: policy "t": spec.match.destinationPorts[0]: port 0 out of range 1-65535`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[1]: port 65536 out of range 1-65535`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[2]: reversed port range "8100-8000" (did you mean "8000-8100"?)`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[3]: port 0 in "0-10" out of range 1-65535`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[4]: invalid port "80-": want a port 1-65535 or a range "A-B"`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[5]: invalid port "http": want a port 1-65535 or a range "A-B"`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[6]: expected a port or an "A-B" range, found number 1.5`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[8]: duplicate "443" (also at index 7)`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[9]: duplicate "443" (also at index 7)`,
				`p.yaml:8: policy "t": spec.match.destinationPorts[10]: expected a port or an "A-B" range, found list`,
			}},
		{"unknown field", "destination: [198.19.0.0/16]",
			[]string{`p.yaml:8: policy "t": spec.match.destination: unknown field (did you mean "destinations"?)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErrors(t, withSpec("workaround: liberal\nmatch:\n  "+strings.ReplaceAll(tt.match, "\n", "\n  ")), tt.want...)
		})
	}
}

func TestParseCollectsErrorsOfAllDocuments(t *testing.T) {
	yaml := withSpec("workaround: liberal\nmatch: {family: ip6}") + // lines 1-7
		"---\n" + // 8
		withSpec("workaround: dropInvalid") + // lines 9-14, name t again
		"---\n" + // 15
		"kind: MitigationPolicy\n" // 16
	checkErrors(t, yaml,
		`p.yaml:7: policy "t": spec.match.family: unknown family "ip6", valid: any, ipv4, ipv6 (did you mean "ipv6"?)`,
		`p.yaml:12: policy "t": metadata.name: duplicate name "t" (also defined at p.yaml:4)`,
		`p.yaml:16: apiVersion: required ("ctguard.io/v1alpha1")`,
		`p.yaml:16: metadata.name: required`,
		`p.yaml:16: spec: required`,
	)
}
