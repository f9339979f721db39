package policy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestNewAppliesTheDefaultsParseApplies(t *testing.T) {
	for _, want := range append(loadExamples(t), Default()...) {
		doc := want.Document()
		// Leave out what a default fills in: New must fill it in again.
		if doc.Spec.Liberal != nil && doc.Spec.Liberal.Scope == ScopePerFlow && doc.Spec.Liberal.Handshake == HandshakeGate {
			doc.Spec.Liberal.Handshake = ""
		}
		got, err := New(want.Source(), doc)
		if err != nil {
			t.Fatalf("%s: New: %v", want.Name(), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: New =\n%s\nParse =\n%s", want.Name(), mustJSON(t, got), mustJSON(t, want))
		}
	}
	p, err := New("go", Document{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "bare"},
		Spec: Spec{Workaround: WorkaroundLiberal}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.IsPerFlow() || !p.ExistingFlows() || p.NATMatch() != NATMatchSource || p.Handshake() != HandshakeGate ||
		!reflect.DeepEqual(p.Directions(), []Direction{DirectionReply}) || p.Match().Family != FamilyAny || p.Source() != "go" {
		t.Errorf("defaults not applied: %s", mustJSON(t, p))
	}
}

func TestNewRejectsWhatParseRejects(t *testing.T) {
	doc := Document{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "bad"}, Spec: Spec{
		Workaround:  WorkaroundDropInvalid,
		DropInvalid: &DropInvalid{Interfaces: []string{"wan0", "wan0"}, Hooks: []Hook{"output"}},
		Match: Match{Family: FamilyIPv4, Sources: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")},
			Destinations: []netip.Prefix{{}, netip.MustParsePrefix("2001:db8::/32")}, DestinationPorts: []PortRange{{From: 9, To: 8}}},
	}}
	_, err := New("go", doc)
	want := []string{
		`go: policy "bad": spec.dropInvalid.interfaces[1]: duplicate "wan0" (also at index 0)`,
		`go: policy "bad": spec.dropInvalid.hooks[0]: unknown hook "output", valid: input, forward`,
		`go: policy "bad": spec.match.sources: not allowed with workaround dropInvalid: an invalid packet has lost its conntrack entry; on the input hook it carries the server as source and this box's own address as destination, so the client address is not in it`,
		`go: policy "bad": spec.match.destinations[0]: invalid CIDR "invalid Prefix"`,
		`go: policy "bad": spec.match.destinations[1]: IPv6 prefix "2001:db8::/32" does not match family ipv4`,
		`go: policy "bad": spec.match.destinationPorts[0]: reversed port range "9-8" (did you mean "8-9"?)`,
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("New = %v, want an ErrorList", err)
	}
	got := strings.Split(err.Error(), "\n")
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if len(got) != len(want) {
		t.Errorf("New reported %d problems, want %d:\n%v", len(got), len(want), err)
	}
	if _, err := New("go", Document{}); err == nil || !strings.Contains(err.Error(), "spec: required") {
		t.Errorf("New(Document{}) = %v, want spec: required", err)
	}
}

func TestNewCopiesItsInput(t *testing.T) {
	dst := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}
	p, err := New("go", Document{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: "web"},
		Spec: Spec{Workaround: WorkaroundLiberal, Match: Match{Destinations: dst}}})
	if err != nil {
		t.Fatal(err)
	}
	dst[0] = netip.MustParsePrefix("10.0.0.0/8")
	d := p.Document()
	d.Spec.Liberal.Directions[0] = DirectionOriginal
	if p.Match().Destinations[0] != netip.MustParsePrefix("198.19.0.0/16") || p.Directions()[0] != DirectionReply {
		t.Errorf("the policy changed with its input or its Document: %s", mustJSON(t, p))
	}
}

func TestUnmarshalJSONValidates(t *testing.T) {
	var p Policy
	err := json.Unmarshal([]byte(`{"apiVersion":"ctguard.io/v1alpha1","kind":"MitigationPolicy","metadata":{"name":"x"},`+
		`"spec":{"workaround":"liberal","liberal":{"scope":"global","directions":["reply"]}}}`), &p)
	if err == nil || !strings.Contains(err.Error(), "spec.liberal.directions: not allowed with scope global") {
		t.Errorf("Unmarshal of an invalid policy = %v", err)
	}
	if p.Name() != "" {
		t.Error("Unmarshal filled the policy in although it failed")
	}
}

func TestWithoutHandshake(t *testing.T) {
	p := Default()[0]
	q := p.WithoutHandshake()
	if q.Handshake() != HandshakeNone || p.Handshake() != HandshakeGate {
		t.Errorf("WithoutHandshake: %q (original now %q)", q.Handshake(), p.Handshake())
	}
}
