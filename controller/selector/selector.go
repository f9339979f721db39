// Package selector compiles the per-flow liberal policies into a matcher
// that runs on every conntrack event: allocation-free, and logarithmic in
// the number of CIDRs and port ranges (sorted merged ranges, binary search,
// per address family). It is pure: no kernel access.
package selector

import (
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/policy"
)

// Mask is a set of policy indices: bit i is the Selector's policy i. It
// holds policy.MaxPerFlowPolicies bits.
type Mask uint64

// Has reports whether policy i is in the set.
func (m Mask) Has(i int) bool { return m&(1<<uint(i)) != 0 }

// Result is what Match found: the matching policies and the union of the
// directions they flag.
type Result struct {
	Policies Mask
	Dirs     flows.Directions
}

// Selector matches flows against the compiled per-flow policies.
type Selector struct {
	policies []compiled
}

type compiled struct {
	name     string
	dirs     flows.Directions
	existing bool
	gated    bool // handshake gate: the gate flags its new flows
	family   policy.Family
	status   uint32 // IPS_SRC_NAT/IPS_DST_NAT bits of which one must be set; 0: any flow
	src, dst addrSet
	ports    portSet
}

// Compile keeps the per-flow liberal policies (p.IsPerFlow()), in order, and
// compiles their matches. It fails beyond policy.MaxPerFlowPolicies.
func Compile(policies []policy.Policy) (*Selector, error) {
	s := &Selector{}
	for i := range policies {
		p := &policies[i]
		if !p.IsPerFlow() {
			continue
		}
		if len(s.policies) == policy.MaxPerFlowPolicies {
			return nil, policy.ErrTooManyPerFlow
		}
		m := p.Match()
		var status uint32
		nat := p.NATMatch()
		if nat&policy.NATMatchSource != 0 {
			status |= flows.StatusSrcNAT
		}
		if nat&policy.NATMatchDest != 0 {
			status |= flows.StatusDstNAT
		}
		c := compiled{
			name:     p.Name(),
			dirs:     FlowDirections(p.Directions()),
			existing: p.ExistingFlows(),
			gated:    p.Handshake() == policy.HandshakeGate,
			family:   m.Family,
			status:   status,
			src:      newAddrSet(m.Sources),
			dst:      newAddrSet(m.Destinations),
			ports:    newPortSet(m.DestinationPorts),
		}
		s.policies = append(s.policies, c)
	}
	return s, nil
}

// Directions returns the union of the directions the per-flow liberal
// policies among ps flag, 0 when there is none: what ctguard may set on flows for them, e.g. the directions a
// rollback clears when computed over every policy set ctguard applied.
func Directions(ps []policy.Policy) flows.Directions {
	var d flows.Directions
	for i := range ps {
		if ps[i].IsPerFlow() {
			d |= FlowDirections(ps[i].Directions())
		}
	}
	return d
}

// FlowDirections converts policy directions to conntrack directions.
func FlowDirections(ds []policy.Direction) flows.Directions {
	var d flows.Directions
	for _, x := range ds {
		switch x {
		case policy.DirectionOriginal:
			d |= flows.Original
		case policy.DirectionReply:
			d |= flows.Reply
		}
	}
	return d
}

// Len returns the number of compiled policies.
func (s *Selector) Len() int { return len(s.policies) }

// Name returns policy i's name.
func (s *Selector) Name(i int) string { return s.policies[i].name }

// Directions returns the directions policy i flags.
func (s *Selector) Directions(i int) flows.Directions { return s.policies[i].dirs }

// ExistingFlows reports whether policy i flags the flows that exist when the
// engine starts.
func (s *Selector) ExistingFlows(i int) bool { return s.policies[i].existing }

// Gated returns the policies with handshake gate: while the gate runs, it
// flags their new flows, not the event engine.
func (s *Selector) Gated() Mask {
	var m Mask
	for i := range s.policies {
		if s.policies[i].gated {
			m |= 1 << uint(i)
		}
	}
	return m
}

// Without returns r without the policies of m, and their directions.
func (s *Selector) Without(r Result, m Mask) Result {
	var out Result
	for i := range s.policies {
		if r.Policies.Has(i) && !m.Has(i) {
			out.Policies |= 1 << uint(i)
			out.Dirs |= s.policies[i].dirs
		}
	}
	return out
}

// Restrict returns the subset of r's policies that flag existing flows, and
// their directions.
func (s *Selector) Restrict(r Result) Result {
	var out Result
	for i := range s.policies {
		if r.Policies.Has(i) && s.policies[i].existing {
			out.Policies |= 1 << uint(i)
			out.Dirs |= s.policies[i].dirs
		}
	}
	return out
}

// Match returns the policies selecting f. Sources match the original
// source; destinations and ports the original destination (the server, or
// the service address and port a DNATed client dialled) or, for a
// destination-NATed flow, the reply source (the backend). Only TCP flows
// match. It does not allocate.
func (s *Selector) Match(f *flows.Flow) Result {
	var r Result
	if f.Proto != flows.ProtoTCP {
		return r
	}
	for i := range s.policies {
		c := &s.policies[i]
		if c.matches(f) {
			r.Policies |= 1 << uint(i)
			r.Dirs |= c.dirs
		}
	}
	return r
}

func (c *compiled) matches(f *flows.Flow) bool {
	switch c.family {
	case policy.FamilyIPv4:
		if !f.Orig.Src.Is4() {
			return false
		}
	case policy.FamilyIPv6:
		if !f.Orig.Src.Is6() {
			return false
		}
	}
	if c.status != 0 && f.Status&c.status == 0 {
		return false
	}
	dnat := f.Status&flows.StatusDstNAT != 0
	return c.src.contains(f.Orig.Src) &&
		(c.ports.contains(f.Orig.DstPort) || dnat && c.ports.contains(f.Reply.SrcPort)) &&
		(c.dst.contains(f.Orig.Dst) || dnat && c.dst.contains(f.Reply.Src))
}
