package incident

import (
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/ctguard/ctguard/controller/evidence"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
	"github.com/ctguard/ctguard/policy"
)

// Incident is one connection reset because the box could not track a
// server's segment: what "ctguard detect" prints and "ctguard run" keeps.
type Incident struct {
	Time time.Time `json:"time"`
	// NAT is how the box translates the flow: "snat", "dnat", "none" (a
	// flow the box does not NAT), or "" when no conntrack entry was found.
	NAT string `json:"nat"`
	// ResetBy is "box" (the box's own RST) or "client" (the client's RST
	// to a server segment the box forwarded untranslated, DNAT).
	ResetBy string `json:"resetBy"`
	// Server is who sent the invalid segment and was reset: the server,
	// or the backend of a DNATed service.
	Server netip.AddrPort `json:"server"`
	// Client is the client's own address and port, from the conntrack
	// entry's original direction (invalid when no entry was found).
	Client netip.AddrPort `json:"client"`
	// Box is the box's address and NAT port the RST came from (SNAT, and
	// any reset by the box); invalid for a client's reset.
	Box netip.AddrPort `json:"box,omitzero"`
	// Service is the address and port the client dialled when the box
	// destination-NATs the flow.
	Service netip.AddrPort `json:"service,omitzero"`
	// Stray is the invalid segment; nil when the log's rate limit left it
	// out. RST is the reset.
	Stray *SegmentInfo `json:"stray"`
	RST   SegmentInfo  `json:"rst"`
	// Conntrack is the flow's entry at the time of the reset.
	Conntrack *EntryInfo `json:"conntrack"`
	// Policies are the policies whose scope covers the flow; a mitigating
	// one here means the flow was covered and still reset.
	Policies []PolicyRef `json:"policies"`
	// InvalidDelta is how much conntrack's invalid statistic grew since
	// the previous incident (or the start); -1 when it could not be read.
	InvalidDelta int64 `json:"invalidDelta"`
}

// SegmentInfo is what an incident shows of a TCP segment.
type SegmentInfo struct {
	Hook  string `json:"hook"`
	Seq   uint32 `json:"seq"`
	Ack   uint32 `json:"ack"`
	Flags string `json:"flags"`
	Len   int    `json:"len"`
}

// EntryInfo is what an incident shows of a conntrack entry.
type EntryInfo struct {
	State string `json:"state"`
	// Liberal is the directions carrying BE_LIBERAL: none, original,
	// reply, original,reply.
	Liberal string `json:"liberal"`
	Mark    uint32 `json:"mark"`
}

// PolicyRef names a policy covering an incident.
type PolicyRef struct {
	Name       string            `json:"name"`
	Workaround policy.Workaround `json:"workaround"`
}

// Source is what the Detector asks the kernel.
type Source interface {
	// LookupReply returns the conntrack entry holding tuple t (as its
	// REPLY tuple, or its ORIGINAL one), or flows.ErrFlowGone.
	LookupReply(t flows.Tuple) (flows.Flow, error)
	// Invalid returns conntrack's invalid statistic.
	Invalid() (uint64, error)
	// IfName returns the name of an interface index ("" if unknown).
	IfName(index uint32) string
}

// Detector turns logged packets into incidents.
type Detector struct {
	corr     Correlator
	src      Source
	policies []policy.Policy
	sel      *selector.Selector
	invalid  uint64
	haveInv  bool
	// LookupErrors counts conntrack lookups that failed otherwise than by
	// finding no entry.
	LookupErrors uint64
}

// NewDetector returns a Detector reading the kernel through src, judging
// coverage against policies (validated).
func NewDetector(src Source, policies []policy.Policy) (*Detector, error) {
	d := &Detector{src: src}
	if err := d.SetPolicies(policies); err != nil {
		return nil, err
	}
	if v, err := src.Invalid(); err == nil {
		d.invalid, d.haveInv = v, true
	}
	return d, nil
}

// SetPolicies replaces the policies coverage is judged against.
func (d *Detector) SetPolicies(ps []policy.Policy) error {
	sel, err := selector.Compile(ps)
	if err != nil {
		return err
	}
	d.policies, d.sel = slices.Clone(ps), sel
	return nil
}

// Correlator returns the Detector's correlator, for its counters.
func (d *Detector) Correlator() *Correlator { return &d.corr }

// Handle takes one logged packet and returns the incident it completes.
func (d *Detector) Handle(p evidence.Packet) (Incident, bool) {
	r, ok := d.corr.Add(p)
	if !ok {
		return Incident{}, false
	}
	return d.incident(r), true
}

// incident enriches a reset with the flow's entry, policies and statistic.
func (d *Detector) incident(r Reset) Incident {
	inc := Incident{Time: r.Time, Server: r.Server, RST: segmentInfo(r.RST, evidence.HookOutput), InvalidDelta: -1}
	inc.ResetBy = "client"
	if r.ByBox {
		inc.ResetBy, inc.Box = "box", r.Peer
	} else {
		inc.RST.Hook = evidence.HookForward.String()
	}
	if r.Stray != nil {
		s := segmentInfo(*r.Stray, r.StrayHook)
		inc.Stray = &s
	}
	var entry *flows.Flow
	t := flows.Tuple{Src: r.Server.Addr(), Dst: r.Peer.Addr(), SrcPort: r.Server.Port(), DstPort: r.Peer.Port()}
	f, err := d.src.LookupReply(t)
	switch {
	case err == nil:
		entry = &f
		inc.Client = netip.AddrPortFrom(f.Orig.Src, f.Orig.SrcPort)
		if f.Reply != t && f.Orig == t {
			// The server opened the connection: the other end is the
			// reply's source.
			inc.Client = netip.AddrPortFrom(f.Reply.Src, f.Reply.SrcPort)
		}
		inc.NAT = "none"
		switch {
		case f.Status&flows.StatusDstNAT != 0:
			inc.NAT = "dnat"
			inc.Service = netip.AddrPortFrom(f.Orig.Dst, f.Orig.DstPort)
		case f.Status&flows.StatusSrcNAT != 0:
			inc.NAT = "snat"
		}
		ei := &EntryInfo{State: StateName(f.State), Liberal: "unknown", Mark: f.Mark}
		if f.HasFlags {
			ei.Liberal = f.Liberal().String()
		}
		inc.Conntrack = ei
	case !errors.Is(err, flows.ErrFlowGone):
		d.LookupErrors++
	}
	inIf := ""
	if r.Stray != nil && r.StrayInIf != 0 {
		inIf = d.src.IfName(r.StrayInIf)
	}
	inc.Policies = d.covering(r, entry, inIf)
	if v, err := d.src.Invalid(); err == nil {
		if d.haveInv {
			inc.InvalidDelta = int64(v - d.invalid)
		}
		d.invalid, d.haveInv = v, true
	}
	return inc
}

// covering returns the policies whose scope covers the reset flow: a
// per-flow policy by its selector on the entry (none without one), the
// others by the packet headers (family, server address and port, hook and
// interface for dropInvalid); the global sysctl covers every flow.
func (d *Detector) covering(r Reset, entry *flows.Flow, inIf string) []PolicyRef {
	var perFlow selector.Mask
	if entry != nil {
		perFlow = d.sel.Match(entry).Policies
	}
	hook := policy.HookInput
	if !r.ByBox || r.Stray != nil && r.StrayHook == evidence.HookForward {
		hook = policy.HookForward
	}
	out := []PolicyRef{}
	flowIndex := 0
	for i := range d.policies {
		p := &d.policies[i]
		covered := false
		switch {
		case p.IsPerFlow():
			covered = perFlow.Has(flowIndex)
			flowIndex++
		case p.IsGlobalLiberal():
			covered = true
		default:
			covered = headerScope(p, r.Server, entry)
			if p.Workaround() == policy.WorkaroundDropInvalid {
				covered = covered && slices.Contains(p.Hooks(), hook) &&
					(len(p.Interfaces()) == 0 || slices.Contains(p.Interfaces(), inIf))
			}
		}
		if covered {
			out = append(out, PolicyRef{Name: p.Name(), Workaround: p.Workaround()})
		}
	}
	return out
}

// headerScope reports whether the server (or, DNAT, the service address the
// client dialled) is in the policy's family, destinations and ports.
func headerScope(p *policy.Policy, server netip.AddrPort, entry *flows.Flow) bool {
	m := p.Match()
	switch {
	case m.Family == policy.FamilyIPv4 && !server.Addr().Is4(), m.Family == policy.FamilyIPv6 && !server.Addr().Is6():
		return false
	}
	cands := []netip.AddrPort{server}
	if entry != nil && entry.Status&flows.StatusDstNAT != 0 {
		cands = append(cands, netip.AddrPortFrom(entry.Orig.Dst, entry.Orig.DstPort))
	}
	for _, c := range cands {
		if inPrefixes(m.Destinations, c.Addr()) && inPorts(m.DestinationPorts, c.Port()) {
			return true
		}
	}
	return false
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func inPorts(rs []policy.PortRange, port uint16) bool {
	if len(rs) == 0 {
		return true
	}
	for _, r := range rs {
		if r.From <= port && port <= r.To {
			return true
		}
	}
	return false
}

// segmentInfo renders a segment as an incident shows it.
func segmentInfo(s evidence.Segment, hook evidence.Hook) SegmentInfo {
	return SegmentInfo{Hook: hook.String(), Seq: s.Seq, Ack: s.Ack, Flags: FlagNames(s.Flags), Len: s.PayloadLen}
}

// FlagNames renders TCP flags as tcpdump does ("R.", "S.", "P.", ...).
func FlagNames(f uint8) string {
	out := ""
	for _, x := range []struct {
		bit  uint8
		name string
	}{{evidence.FlagSYN, "S"}, {evidence.FlagFIN, "F"}, {0x08, "P"}, {evidence.FlagRST, "R"}, {0x20, "U"}} {
		if f&x.bit != 0 {
			out += x.name
		}
	}
	if f&evidence.FlagACK != 0 {
		out += "."
	}
	if out == "" {
		return "none"
	}
	return out
}

// StateName names a conntrack TCP state as conntrack -L does.
func StateName(s flows.TCPState) string {
	names := []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}
	if int(s) < len(names) {
		return names[s]
	}
	return "UNKNOWN"
}
