package policy

import (
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, file string, data []byte) []Policy {
	t.Helper()
	policies, err := Parse(file, data)
	if err != nil {
		t.Fatalf("Parse(%s):\n%v", file, err)
	}
	return policies
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestParseAppliesDefaults(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	tests := []struct {
		name string
		spec string
		want Spec
	}{
		{"liberal", "workaround: liberal", Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionReply}, ExistingFlows: yes, Handshake: HandshakeGate},
			Match:      Match{Family: FamilyAny, NAT: []NATKind{NATSource}},
		}},
		{"null blocks count as absent", "workaround: liberal\nliberal:\ndropInvalid: ~\nmatch:", Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionReply}, ExistingFlows: yes, Handshake: HandshakeGate},
			Match:      Match{Family: FamilyAny, NAT: []NATKind{NATSource}},
		}},
		{"liberal global", "workaround: liberal\nliberal: {scope: global}\nmatch: {family: any}", Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopeGlobal},
			Match:      Match{Family: FamilyAny},
		}},
		{"liberal everything set", `workaround: liberal
liberal:
  scope: perFlow
  directions: [original, reply]
  existingFlows: false
match:
  family: any
  sources: [198.18.1.0/24, 198.18.2.9, "fd00:c79::/48"]
  destinations: ["2001:db8::1"]
  destinationPorts: [443, "8000-8100", "22"]
  natOnly: false`, Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionOriginal, DirectionReply}, ExistingFlows: no, Handshake: HandshakeGate},
			Match: Match{
				Family:           FamilyAny,
				Sources:          prefixes("198.18.1.0/24", "198.18.2.9/32", "fd00:c79::/48"),
				Destinations:     prefixes("2001:db8::1/128"),
				DestinationPorts: []PortRange{{443, 443}, {8000, 8100}, {22, 22}},
				NAT:              []NATKind{NATAny},
			},
		}},
		{"nat and handshake", "workaround: liberal\nliberal: {handshake: guard}\nmatch: {nat: [snat, dnat]}", Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionReply}, ExistingFlows: yes, Handshake: HandshakeGuard},
			Match:      Match{Family: FamilyAny, NAT: []NATKind{NATSource, NATDest}},
		}},
		{"natOnly true is [snat]", "workaround: liberal\nliberal: {handshake: none}\nmatch: {natOnly: true}", Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionReply}, ExistingFlows: yes, Handshake: HandshakeNone},
			Match:      Match{Family: FamilyAny, NAT: []NATKind{NATSource}},
		}},
		{"dropInvalid", "workaround: dropInvalid", Spec{
			Workaround:  WorkaroundDropInvalid,
			DropInvalid: &DropInvalid{Hooks: []Hook{HookInput}},
			Match:       Match{Family: FamilyAny},
		}},
		{"dropInvalid everything set", `workaround: dropInvalid
dropInvalid:
  interfaces: [eth0]
  hooks: [forward]
match:
  family: ipv6
  destinations: ["2001:db8::/32"]
  destinationPorts: [443]`, Spec{
			Workaround:  WorkaroundDropInvalid,
			DropInvalid: &DropInvalid{Interfaces: []string{"eth0"}, Hooks: []Hook{HookForward}},
			Match:       Match{Family: FamilyIPv6, Destinations: prefixes("2001:db8::/32"), DestinationPorts: []PortRange{{443, 443}}},
		}},
		{"empty match lists are absent", "workaround: dropInvalid\ndropInvalid: {interfaces: []}\nmatch: {destinations: [], destinationPorts: []}", Spec{
			Workaround:  WorkaroundDropInvalid,
			DropInvalid: &DropInvalid{Hooks: []Hook{HookInput}},
			Match:       Match{Family: FamilyAny},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := mustParse(t, "p.yaml", []byte(withSpec(tt.spec)))
			if len(ps) != 1 {
				t.Fatalf("got %d policies, want 1", len(ps))
			}
			if !reflect.DeepEqual(ps[0].doc.Spec, tt.want) {
				t.Errorf("Spec =\n%s\nwant\n%s", mustJSON(t, ps[0].doc.Spec), mustJSON(t, tt.want))
			}
		})
	}
}

func TestParseKeepsStringsStrings(t *testing.T) {
	// "no" is a string in YAML 1.2 (yaml.v3); sigs.k8s.io/yaml would turn it into "false".
	ps := mustParse(t, "p.yaml", []byte(strings.Replace(withSpec("workaround: liberal"), "name: t", "name: no", 1)))
	if got := ps[0].doc.Metadata.Name; got != "no" {
		t.Errorf("name = %q, want %q", got, "no")
	}
}

func TestParseMultipleDocuments(t *testing.T) {
	data := "---\n# nothing here\n---\n" +
		strings.Replace(withSpec("workaround: liberal"), "name: t", "name: first", 1) +
		"---\n---\n" +
		strings.Replace(withSpec("workaround: dropInvalid"), "name: t", "name: second", 1) +
		"...\n"
	ps := mustParse(t, "multi.yaml", []byte(data))
	var names []string
	for _, p := range ps {
		names = append(names, p.doc.Metadata.Name)
		if p.source != "multi.yaml" {
			t.Errorf("%s: Source = %q, want multi.yaml", p.doc.Metadata.Name, p.source)
		}
	}
	if want := []string{"first", "second"}; !reflect.DeepEqual(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
}

func TestParseEmptyInputs(t *testing.T) {
	for _, data := range []string{"", "\n", "# just a comment\n", "---\n", "---\n---\n", "~\n"} {
		ps, err := Parse("e.yaml", []byte(data))
		if err != nil || len(ps) != 0 {
			t.Errorf("Parse(%q) = %d policies, %v; want none and no error", data, len(ps), err)
		}
	}
}

func TestParseFollowsAliases(t *testing.T) {
	data := `apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: a}
spec:
  workaround: liberal
  match: &m
    sources: &nets [198.18.1.0/24]
    destinations: *nets
---
apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata: {name: b}
spec:
  workaround: liberal
  match: {destinations: [198.18.1.0/24, 198.18.1.0/24]}
`
	_, err := Parse("p.yaml", []byte(data))
	want := `p.yaml:15: policy "b": spec.match.destinations[1]: duplicate "198.18.1.0/24" (also at index 0)`
	if err == nil || err.Error() != want {
		t.Fatalf("Parse error = %v, want %s", err, want)
	}
	ps := mustParse(t, "p.yaml", []byte(strings.SplitN(data, "---\n", 2)[0]))
	if want := prefixes("198.18.1.0/24"); !reflect.DeepEqual(ps[0].doc.Spec.Match.Destinations, want) {
		t.Errorf("destinations = %v, want %v", ps[0].doc.Spec.Match.Destinations, want)
	}
}

func loadExamples(t *testing.T) []Policy {
	t.Helper()
	data, err := os.ReadFile("testdata/examples.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ps := mustParse(t, "examples.yaml", data)
	if len(ps) != 4 {
		t.Fatalf("examples.yaml: got %d policies, want 4", len(ps))
	}
	return ps
}

func withoutSource(ps []Policy) []Policy {
	out := make([]Policy, len(ps))
	for i, p := range ps {
		p.source = ""
		out[i] = p
	}
	return out
}

func TestJSONRoundTrip(t *testing.T) {
	ps := loadExamples(t)
	data := mustJSON(t, ps)
	if want := `"destinationPorts":[443,"8000-8100"]`; !strings.Contains(data, want) {
		t.Errorf("JSON lacks %s:\n%s", want, data)
	}
	var back []Policy
	if err := json.Unmarshal([]byte(data), &back); err != nil {
		t.Fatal(err)
	}
	// Source is not part of the schema (json:"-"), so it does not survive.
	if want := withoutSource(ps); !reflect.DeepEqual(back, want) {
		t.Errorf("round trip changed the policies:\n%s\nwant\n%s", mustJSON(t, back), data)
	}
}

func TestMarshalParsesBack(t *testing.T) {
	ps := append(loadExamples(t), Default()...)
	out, err := Marshal(ps)
	if err != nil {
		t.Fatal(err)
	}
	back := mustParse(t, "rendered.yaml", out)
	if !reflect.DeepEqual(withoutSource(back), withoutSource(ps)) {
		t.Errorf("Parse(Marshal(p)) differs from p; rendered:\n%s", out)
	}
}

func TestDefault(t *testing.T) {
	ps := Default()
	if len(ps) != 1 {
		t.Fatalf("Default() has %d policies, want 1", len(ps))
	}
	p := ps[0]
	want := seal(Document{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "default-snat"},
		Spec: Spec{
			Workaround: WorkaroundLiberal,
			Liberal:    &Liberal{Scope: ScopePerFlow, Directions: []Direction{DirectionReply}, ExistingFlows: ptr(true), Handshake: HandshakeGate},
			Match:      Match{Family: FamilyAny, NAT: []NATKind{NATSource}},
		},
	}, DefaultFile)
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Default() =\n%s\nwant\n%s", mustJSON(t, p), mustJSON(t, want))
	}
	if !strings.HasPrefix(string(defaultYAML), "# ") {
		t.Error("default.yaml must start with a comment explaining the policy")
	}
	p.doc.Spec.Liberal.Directions[0] = DirectionOriginal
	if Default()[0].doc.Spec.Liberal.Directions[0] != DirectionReply {
		t.Error("Default() results share memory")
	}
}

func TestPolicyAccessors(t *testing.T) {
	examples := loadExamples(t)
	tests := []struct {
		name          string
		p             Policy
		directions    []Direction
		existingFlows bool
		nat           NATMatch
		handshake     Handshake
		hooks         []Hook
	}{
		{"default", Default()[0], []Direction{DirectionReply}, true, NATMatchSource, HandshakeGate, nil},
		{"egress-snat", examples[0], []Direction{DirectionReply}, true, NATMatchSource, HandshakeGate, nil},
		{"v6-both-ways", examples[1], []Direction{DirectionOriginal, DirectionReply}, false, 0, HandshakeGuard, nil},
		{"global", examples[2], nil, false, 0, "", nil},
		{"drop-forward", examples[3], nil, false, 0, "", []Hook{HookForward, HookInput}},
		{"hand-built perFlow, defaults unset", built(t, Spec{Workaround: WorkaroundLiberal, Liberal: &Liberal{Scope: ScopePerFlow}}),
			[]Direction{DirectionReply}, true, NATMatchSource, HandshakeGate, nil},
		{"hand-built perFlow, natOnly false", built(t, Spec{Workaround: WorkaroundLiberal, Liberal: &Liberal{Scope: ScopePerFlow}, Match: Match{NATOnly: ptr(false)}}),
			[]Direction{DirectionReply}, true, 0, HandshakeGate, nil},
		{"hand-built perFlow, snat and dnat", built(t, Spec{Workaround: WorkaroundLiberal, Liberal: &Liberal{Scope: ScopePerFlow}, Match: Match{NAT: []NATKind{NATDest, NATSource}}}),
			[]Direction{DirectionReply}, true, NATMatchSource | NATMatchDest, HandshakeGate, nil},
		{"hand-built dropInvalid, defaults unset", built(t, Spec{Workaround: WorkaroundDropInvalid}),
			nil, false, 0, "", []Hook{HookInput}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &tt.p
			if got := p.Directions(); !reflect.DeepEqual(got, tt.directions) {
				t.Errorf("Directions() = %v, want %v", got, tt.directions)
			}
			if got := p.ExistingFlows(); got != tt.existingFlows {
				t.Errorf("ExistingFlows() = %v, want %v", got, tt.existingFlows)
			}
			if got := p.NATMatch(); got != tt.nat {
				t.Errorf("NATMatch() = %v, want %v", got, tt.nat)
			}
			if got := p.Handshake(); got != tt.handshake {
				t.Errorf("Handshake() = %q, want %q", got, tt.handshake)
			}
			if got := p.Hooks(); !reflect.DeepEqual(got, tt.hooks) {
				t.Errorf("Hooks() = %v, want %v", got, tt.hooks)
			}
		})
	}
}

func BenchmarkParseExamples(b *testing.B) {
	data, err := os.ReadFile("testdata/examples.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("examples.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// built is a policy of spec built with New.
func built(t *testing.T, spec Spec) Policy {
	t.Helper()
	p, err := New("built", Document{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "built"}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
