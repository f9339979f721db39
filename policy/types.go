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
	NATOnly          *bool          `json:"natOnly,omitempty"`
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

// NATOnly reports whether a per-flow policy selects only flows this box
// source-NATs (true when unset).
func (p *Policy) NATOnly() bool {
	return p.IsPerFlow() && (p.Spec.Match.NATOnly == nil || *p.Spec.Match.NATOnly)
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
