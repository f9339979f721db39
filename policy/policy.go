package policy

import (
	"encoding/json"
	"slices"
)

// Policy is one validated MitigationPolicy, every default applied. Only
// Parse, Load, Default and New produce one (its fields are unexported), so
// the code that enforces a policy reads its settings as plain values and
// never applies a default of its own. Slices a Policy returns are shared:
// read them, never modify them. The zero Policy selects nothing and asks
// for nothing.
type Policy struct {
	doc    Document // the effective document: every default filled in
	source string
	nat    NATMatch
}

// seal makes a Policy of a document validate accepted and completed.
func seal(doc Document, source string) Policy {
	p := Policy{doc: doc, source: source}
	if p.IsPerFlow() {
		for _, k := range doc.Spec.Match.NAT {
			switch k {
			case NATSource:
				p.nat |= NATMatchSource
			case NATDest:
				p.nat |= NATMatchDest
			}
		}
		if slices.Contains(doc.Spec.Match.NAT, NATAny) {
			p.nat = 0
		}
	}
	return p
}

// Name is the policy's metadata.name, unique among the policies loaded
// together.
func (p Policy) Name() string { return p.doc.Metadata.Name }

// Source is the file the policy was read from (DefaultFile for the
// embedded one, the source given to New, "" for one read from JSON).
func (p Policy) Source() string { return p.source }

// Workaround is what the policy asks for.
func (p Policy) Workaround() Workaround { return p.doc.Spec.Workaround }

// Scope is where a liberal policy applies, "" for the other workarounds.
func (p Policy) Scope() Scope {
	if p.doc.Spec.Liberal == nil {
		return ""
	}
	return p.doc.Spec.Liberal.Scope
}

// IsPerFlow reports whether the policy runs the per-flow liberal engine.
func (p Policy) IsPerFlow() bool {
	return p.Workaround() == WorkaroundLiberal && p.Scope() == ScopePerFlow
}

// IsGlobalLiberal reports whether the policy asks for the global sysctl.
func (p Policy) IsGlobalLiberal() bool {
	return p.Workaround() == WorkaroundLiberal && p.Scope() == ScopeGlobal
}

// Match is what the policy selects: Family is always set and NATOnly never
// is; NAT is set for a per-flow policy (NATMatch is its bit form).
func (p Policy) Match() Match { return p.doc.Spec.Match }

// Directions returns the conntrack directions a per-flow policy flags, or
// nil when the policy is not per-flow.
func (p Policy) Directions() []Direction {
	if !p.IsPerFlow() {
		return nil
	}
	return p.doc.Spec.Liberal.Directions
}

// ExistingFlows reports whether a per-flow policy also flags matching flows
// already in the conntrack table; false when the policy is not per-flow.
func (p Policy) ExistingFlows() bool {
	return p.IsPerFlow() && *p.doc.Spec.Liberal.ExistingFlows
}

// NATMatch returns the NAT kinds a per-flow policy selects (match.nat). It
// is 0 (every flow) for [any] and for a policy that is not per-flow.
func (p Policy) NATMatch() NATMatch { return p.nat }

// Handshake returns how a per-flow policy protects the handshake, or ""
// when the policy is not per-flow.
func (p Policy) Handshake() Handshake {
	if !p.IsPerFlow() {
		return ""
	}
	return p.doc.Spec.Liberal.Handshake
}

// Hooks returns the hooks a dropInvalid policy's rule goes on, or nil for
// the other workarounds.
func (p Policy) Hooks() []Hook {
	if p.doc.Spec.DropInvalid == nil {
		return nil
	}
	return p.doc.Spec.DropInvalid.Hooks
}

// Interfaces returns the input interfaces a dropInvalid policy is limited
// to, nil for every interface and for the other workarounds.
func (p Policy) Interfaces() []string {
	if p.doc.Spec.DropInvalid == nil {
		return nil
	}
	return p.doc.Spec.DropInvalid.Interfaces
}

// WithoutHandshake returns the policy with handshake none when it is
// per-flow, else the policy unchanged: what a ctguard from before the
// handshake protections enforced.
func (p Policy) WithoutHandshake() Policy {
	if !p.IsPerFlow() {
		return p
	}
	l := *p.doc.Spec.Liberal
	l.Handshake = HandshakeNone
	p.doc.Spec.Liberal = &l
	return p
}

// Document returns the effective document: the policy as written with
// every default filled in, in the form Parse and New read back to an
// equal Policy. It is a copy the caller may change.
func (p Policy) Document() Document {
	d := p.doc
	d.Spec = cloneSpec(d.Spec)
	return d
}

// cloneSpec copies s and every list in it.
func cloneSpec(s Spec) Spec {
	if s.Liberal != nil {
		l := *s.Liberal
		l.Directions = slices.Clone(l.Directions)
		if l.ExistingFlows != nil {
			l.ExistingFlows = ptr(*l.ExistingFlows)
		}
		s.Liberal = &l
	}
	if s.DropInvalid != nil {
		di := *s.DropInvalid
		di.Interfaces, di.Hooks = slices.Clone(di.Interfaces), slices.Clone(di.Hooks)
		s.DropInvalid = &di
	}
	m := &s.Match
	m.Sources, m.Destinations = slices.Clone(m.Sources), slices.Clone(m.Destinations)
	m.DestinationPorts, m.NAT = slices.Clone(m.DestinationPorts), slices.Clone(m.NAT)
	if m.NATOnly != nil {
		m.NATOnly = ptr(*m.NATOnly)
	}
	return s
}

// MarshalJSON encodes the effective document (Source is not part of it).
func (p Policy) MarshalJSON() ([]byte, error) { return json.Marshal(&p.doc) }

// UnmarshalJSON decodes a document and validates it as New does: a
// journal, like a policy file, can only yield a valid Policy.
func (p *Policy) UnmarshalJSON(data []byte) error {
	var doc Document
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	v, err := newPolicy("", doc)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// New validates doc exactly as Parse validates a YAML document, applies the
// defaults and returns the Policy; source names it in messages and
// Policy.Source. A field is absent when it holds its zero value (nil, "",
// an empty list). On any problem New returns an ErrorList naming source,
// policy and field path (no line). It checks one policy: names unique
// across a set and MaxPerFlowPolicies are Load's and Parse's to check.
func New(source string, doc Document) (Policy, error) {
	doc.Spec = cloneSpec(doc.Spec)
	return newPolicy(source, doc)
}

// newPolicy is New on a document the caller hands over.
func newPolicy(source string, doc Document) (Policy, error) {
	d := newDocument(source)
	d.name = doc.Metadata.Name
	d.fromDocument(&doc)
	d.validate(&doc)
	if err := d.errors().orNil(); err != nil {
		return Policy{}, err
	}
	return seal(doc, source), nil
}

// WithSource returns the policy with Source source.
func (p Policy) WithSource(source string) Policy {
	p.source = source
	return p
}
