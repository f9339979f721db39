// Package policy defines ctguard's MitigationPolicy: its YAML schema, defaults
// and validation. Everything here is pure: no kernel access.
package policy

import "net/netip"

// APIVersion and Kind identify a ctguard policy document.
const (
	APIVersion = "ctguard.io/v1alpha1"
	Kind       = "MitigationPolicy"
)

// Workaround names one of the two known mitigations.
type Workaround string

// The workarounds a policy can ask for.
const (
	WorkaroundLiberal     Workaround = "liberal"
	WorkaroundDropInvalid Workaround = "dropInvalid"
	// WorkaroundObserve mitigates nothing: it counts the invalid packets
	// and the box's resets within its scope, so "ctguard detect" and the
	// incident metrics can name what a mitigation would cover.
	WorkaroundObserve Workaround = "observe"
)

// Scope says where the liberal workaround applies.
type Scope string

// The scopes of the liberal workaround.
const (
	ScopePerFlow Scope = "perFlow"
	ScopeGlobal  Scope = "global"
)

// Direction is a conntrack tuple direction.
type Direction string

// The two conntrack directions.
const (
	DirectionOriginal Direction = "original"
	DirectionReply    Direction = "reply"
)

// Hook is a netfilter hook the dropInvalid rule is installed on.
type Hook string

// The hooks dropInvalid supports.
const (
	HookInput   Hook = "input"
	HookForward Hook = "forward"
)

// NATKind is one kind of network address translation a per-flow policy can
// select flows by (match.nat).
type NATKind string

// The NAT kinds of match.nat.
const (
	// NATSource selects flows this box source-NATs (conntrack IPS_SRC_NAT):
	// masquerade, SNAT.
	NATSource NATKind = "snat"
	// NATDest selects flows this box destination-NATs (IPS_DST_NAT): DNAT,
	// a kube-proxy service address.
	NATDest NATKind = "dnat"
	// NATAny selects every flow, NATed or not.
	NATAny NATKind = "any"
)

// NATMatch is the set of NAT kinds a per-flow policy selects; 0 selects
// every flow, NATed or not.
type NATMatch uint8

// The bits of NATMatch.
const (
	NATMatchSource NATMatch = 1 << 0
	NATMatchDest   NATMatch = 1 << 1
)

// Handshake says how a per-flow policy protects a flow between its SYN-ACK
// and the moment its flag lands (liberal.handshake).
type Handshake string

// The handshake protections.
const (
	// HandshakeGate holds the SYN-ACK of a selected, not yet flagged flow
	// in an NFQUEUE until ctguard has flagged the flow: nothing from the
	// server can beat the flag.
	HandshakeGate Handshake = "gate"
	// HandshakeGuard drops invalid TCP packets from the policy's servers
	// (input hook for SNAT, forward hook for DNAT) instead of only counting
	// them, so a segment that beats the event-driven flag is retransmitted
	// rather than answered with a RST.
	HandshakeGuard Handshake = "guard"
	// HandshakeNone flags flows from conntrack events only.
	HandshakeNone Handshake = "none"
)

// Family restricts a policy to one address family.
type Family string

// The address families a policy can select.
const (
	FamilyAny  Family = "any"
	FamilyIPv4 Family = "ipv4"
	FamilyIPv6 Family = "ipv6"
)

// Policy is one validated MitigationPolicy document, defaults applied.
type Policy struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
	// Source is the file the policy was read from ("<default>" for the
	// embedded one). It is not part of the YAML schema.
	Source string `json:"-"`
}

// Metadata carries the policy's identity.
type Metadata struct {
	Name string `json:"name"`
}

// Spec is what the policy asks for.
type Spec struct {
	Workaround  Workaround   `json:"workaround"`
	Liberal     *Liberal     `json:"liberal,omitempty"`
	DropInvalid *DropInvalid `json:"dropInvalid,omitempty"`
	Match       Match        `json:"match"`
}

// Liberal configures the liberal workaround. After validation it is non-nil
// exactly when Workaround is liberal.
type Liberal struct {
	Scope         Scope       `json:"scope"`
	Directions    []Direction `json:"directions,omitempty"`
	ExistingFlows *bool       `json:"existingFlows,omitempty"`
	Handshake     Handshake   `json:"handshake,omitempty"`
}

// DropInvalid configures the dropInvalid workaround. After validation it is
// non-nil exactly when Workaround is dropInvalid.
type DropInvalid struct {
	Interfaces []string `json:"interfaces,omitempty"`
	Hooks      []Hook   `json:"hooks,omitempty"`
}

// Match selects flows (liberal) or packets (dropInvalid). Fields are AND-ed,
// list items OR-ed; an empty Match selects every TCP flow.
type Match struct {
	Family           Family         `json:"family"`
	Sources          []netip.Prefix `json:"sources,omitempty"`
	Destinations     []netip.Prefix `json:"destinations,omitempty"`
	DestinationPorts []PortRange    `json:"destinationPorts,omitempty"`
	NAT              []NATKind      `json:"nat,omitempty"`
	// NATOnly is the older form of NAT: true means [snat], false [any].
	NATOnly *bool `json:"natOnly,omitempty"`
}

// PortRange is an inclusive TCP port range; a single port has From == To.
type PortRange struct {
	From uint16 `json:"from"`
	To   uint16 `json:"to"`
}

// IsPerFlow reports whether the policy runs the per-flow liberal engine.
func (p *Policy) IsPerFlow() bool {
	return p.Spec.Workaround == WorkaroundLiberal && p.Spec.Liberal != nil && p.Spec.Liberal.Scope == ScopePerFlow
}

// IsGlobalLiberal reports whether the policy asks for the global sysctl.
func (p *Policy) IsGlobalLiberal() bool {
	return p.Spec.Workaround == WorkaroundLiberal && p.Spec.Liberal != nil && p.Spec.Liberal.Scope == ScopeGlobal
}

// Directions returns the conntrack directions a per-flow policy flags
// ([reply] when unset), or nil when the policy is not per-flow.
func (p *Policy) Directions() []Direction {
	if !p.IsPerFlow() {
		return nil
	}
	if len(p.Spec.Liberal.Directions) == 0 {
		return []Direction{DirectionReply}
	}
	return p.Spec.Liberal.Directions
}

// ExistingFlows reports whether a per-flow policy also flags matching flows
// already in the conntrack table (true when unset).
func (p *Policy) ExistingFlows() bool {
	return p.IsPerFlow() && (p.Spec.Liberal.ExistingFlows == nil || *p.Spec.Liberal.ExistingFlows)
}

// NATMatch returns the NAT kinds a per-flow policy selects: match.nat,
// else the natOnly alias (true: snat, false: any), else snat. It is 0
// (every flow) for any and for a policy that is not per-flow.
func (p *Policy) NATMatch() NATMatch {
	if !p.IsPerFlow() {
		return 0
	}
	m := &p.Spec.Match
	if len(m.NAT) == 0 {
		if m.NATOnly != nil && !*m.NATOnly {
			return 0
		}
		return NATMatchSource
	}
	var out NATMatch
	for _, k := range m.NAT {
		switch k {
		case NATSource:
			out |= NATMatchSource
		case NATDest:
			out |= NATMatchDest
		case NATAny:
			return 0
		}
	}
	return out
}

// Handshake returns how a per-flow policy protects the handshake (gate when
// unset), or "" when the policy is not per-flow.
func (p *Policy) Handshake() Handshake {
	if !p.IsPerFlow() {
		return ""
	}
	if p.Spec.Liberal.Handshake == "" {
		return HandshakeGate
	}
	return p.Spec.Liberal.Handshake
}

// Hooks returns the hooks a dropInvalid policy's rule goes on ([input] when
// unset), or nil for a liberal policy.
func (p *Policy) Hooks() []Hook {
	if p.Spec.Workaround != WorkaroundDropInvalid {
		return nil
	}
	if p.Spec.DropInvalid == nil || len(p.Spec.DropInvalid.Hooks) == 0 {
		return []Hook{HookInput}
	}
	return p.Spec.DropInvalid.Hooks
}
