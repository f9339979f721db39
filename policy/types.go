// Package policy defines ctguard's MitigationPolicy: its YAML schema
// (Document), defaults and validation, and the validated Policy everything
// downstream takes. Only Parse, Load, Default and New produce a Policy, each
// default is applied once, here, and every problem names its file, line,
// policy and field path. Everything here is pure: no kernel access.
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

// Document is a MitigationPolicy as written: the YAML (and JSON) schema,
// where every optional field may be left out. It is the input of New; a
// Policy's Document is the effective one, every default filled in.
type Document struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
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

// Liberal configures the liberal workaround. In an effective Document it
// is non-nil exactly when Workaround is liberal.
type Liberal struct {
	Scope         Scope       `json:"scope"`
	Directions    []Direction `json:"directions,omitempty"`
	ExistingFlows *bool       `json:"existingFlows,omitempty"`
	Handshake     Handshake   `json:"handshake,omitempty"`
}

// DropInvalid configures the dropInvalid workaround. In an effective
// Document it is non-nil exactly when Workaround is dropInvalid.
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
	// An effective Document never carries it.
	NATOnly *bool `json:"natOnly,omitempty"`
}

// PortRange is an inclusive TCP port range; a single port has From == To.
type PortRange struct {
	From uint16 `json:"from"`
	To   uint16 `json:"to"`
}
