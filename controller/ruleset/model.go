// Package ruleset models the one nftables table ctguard owns (inet ctguard)
// and builds it from policies. It is pure: the kernel edge lives in
// controller/nft, which translates this model to and from netlink.
package ruleset

// Family and name of the table ctguard alone owns.
const (
	TableFamily = "inet"
	TableName   = "ctguard"
)

// Priority of every ctguard base chain but the gate's: after conntrack
// (-200), ahead of the usual filter chains (0), so a local reject rule never
// sees the packet.
const Priority = -10

// GatePriority is the priority of the gate's prerouting chain: after
// conntrack (-200) has seen the SYN-ACK, before NAT (-100) rewrites it, so
// the queued packet's own addresses and ports are its entry's REPLY tuple,
// source-NATed or destination-NATed alike.
const GatePriority = -150

// DefaultQueue is the gate's NFQUEUE number unless configured.
const DefaultQueue uint16 = 7301

// Options are what Build needs besides the policies.
type Options struct {
	// MarkBit is ctguard's ownership mark bit: a flow carrying it is
	// flagged and not gated again.
	MarkBit uint32
	// Queue is the gate's NFQUEUE number.
	Queue uint16
	// NoQueue says the gate cannot run (the kernel has no NFQUEUE, or the
	// queue cannot be bound): gate policies get guard rules instead.
	NoQueue bool
	// EvidenceGroup is the nfnetlink_log group of the evidence rules (see
	// Evidence); 0 leaves them out.
	EvidenceGroup uint16
}

// IPS_* conntrack status bits the gate tests.
const (
	StatusSrcNAT uint32 = 1 << 4
	StatusDstNAT uint32 = 1 << 5
)

// Table is the whole desired (or observed) content of inet ctguard.
// Slices are kept in a canonical order so two equal tables compare equal
// with reflect.DeepEqual.
type Table struct {
	Counters []Counter // named counter objects, sorted by Name
	Sets     []Set     // named sets, sorted by Name
	Chains   []Chain   // base chains, in the order prerouting, input, forward, output
	// Foreign describes, one entry each, what the kernel's table holds
	// that ctguard never creates (another chain, a set of another kind, a
	// stateful object other than a counter, table flags). Only a read
	// fills it; a table to write has none.
	Foreign []string
}

// Counter is a named nft counter object. Values are observations only; they
// are ignored when tables are compared for planning.
type Counter struct {
	Name    string
	Packets uint64
	Bytes   uint64
}

// SetType is the nft key type of a named set.
type SetType string

// The set key types ctguard uses.
const (
	SetIPv4Addr    SetType = "ipv4_addr"
	SetIPv6Addr    SetType = "ipv6_addr"
	SetInetService SetType = "inet_service"
	SetIfname      SetType = "ifname"
)

// Set is a named nft set. Interval sets hold merged, non-overlapping,
// sorted elements ("198.18.0.0/15", "443", "8000-8100"); others hold sorted
// single values.
type Set struct {
	Name     string
	Type     SetType
	Interval bool
	Elements []string
}

// Hook is the netfilter hook of a base chain; the chain is named after it.
type Hook string

// The hooks ctguard installs base chains on.
const (
	HookPrerouting Hook = "prerouting"
	HookInput      Hook = "input"
	HookForward    Hook = "forward"
	HookOutput     Hook = "output"
)

// Chain is a filter base chain with policy accept.
type Chain struct {
	Hook     Hook
	Priority int
	Rules    []Rule
}

// Name is the chain's name in the table: the name of its hook.
func (c Chain) Name() string { return string(c.Hook) }

// Purpose says why a rule exists; with the policy name it identifies a rule.
type Purpose string

// The rule purposes.
const (
	// PurposeDropInvalid drops invalid TCP packets (dropInvalid workaround).
	PurposeDropInvalid Purpose = "drop-invalid"
	// PurposeCountInvalid counts invalid TCP packets that still reach the
	// box (observe-only, for perFlow liberal policies).
	PurposeCountInvalid Purpose = "count-invalid"
	// PurposeCountInvalidRST counts TCP RSTs the box itself emits with
	// ct state invalid: exactly the incident's RST.
	PurposeCountInvalidRST Purpose = "count-invalid-rst"
	// PurposeGuard drops invalid TCP packets from a perFlow policy's
	// servers (handshake guard, or gate without a queue).
	PurposeGuard Purpose = "guard"
	// PurposeGate queues the SYN-ACK of a flow a perFlow policy selects
	// that does not carry ctguard's mark yet, until ctguard flagged it.
	PurposeGate Purpose = "gate"
	// PurposeEvidence counts every invalid TCP packet on its hook (only
	// the RSTs on output) and logs a rate-limited sample of their headers
	// to an nfnetlink_log group: what "ctguard detect" and the incident
	// ring read. It belongs to no policy and never drops.
	PurposeEvidence Purpose = "evidence"
	// PurposeUnrecognised marks an observed rule in inet ctguard that
	// controller/nft could not map back to a ctguard rule (Build never
	// makes one); Detail says what it was.
	PurposeUnrecognised Purpose = "unrecognised"
)

// NFProto restricts a rule to one layer-3 protocol; empty means both.
type NFProto string

// The layer-3 protocols a rule can be restricted to.
const (
	NFProtoAny  NFProto = ""
	NFProtoIPv4 NFProto = "ipv4"
	NFProtoIPv6 NFProto = "ipv6"
)

// Rule matches "meta l4proto tcp ct state invalid" plus the optional scoping
// below, counts into a named counter, and drops when Drop is set. A gate
// rule (PurposeGate) matches instead the SYN-ACK of a flow without the mark
// bit, by the flow's conntrack entry (see the Gate fields), and queues it.
// Every rule carries the comment Comment() in its user data.
type Rule struct {
	Policy  string
	Purpose Purpose
	NFProto NFProto
	// RSTOnly adds "tcp flags rst" (only for PurposeCountInvalidRST).
	RSTOnly bool
	// IifnameSet names an ifname set for "iifname @set"; empty = any.
	IifnameSet string
	// AddrSet names an address set; AddrIsDest says whether it matches the
	// destination (output chain) or the source address.
	AddrSet    string
	AddrIsDest bool
	// PortSet names an inet_service set; PortIsDest as for AddrIsDest.
	PortSet    string
	PortIsDest bool
	Counter    string
	Drop       bool

	// Gate rules only. A gate rule selects by the entry's NAT status and
	// the family; the gate itself matches the rest of the policy (sources,
	// destinations, ports) on the entry it reads.
	//
	// NATStatus is the IPS_SRC_NAT/IPS_DST_NAT bits of which the entry
	// must carry one (0: any flow).
	NATStatus uint32
	// MarkBit is the ownership mark bit the entry must not carry yet.
	MarkBit uint32
	// Queue is the NFQUEUE number; the rule always bypasses the queue
	// when nobody listens on it.
	Queue uint16

	// LogGroup is the nfnetlink_log group of an evidence rule, which logs
	// at most EvidenceRate packets a second (burst EvidenceBurst), EvidenceSnaplen
	// bytes of each.
	LogGroup uint16

	// Detail describes an observed PurposeUnrecognised rule (its handle and
	// comment); empty for every other rule.
	Detail string
}

// EvidenceComment is the comment of every evidence rule.
const EvidenceComment = "ctguard evidence"

// Comment is the rule's nft comment; controller/nft stores and recognises it.
func (r Rule) Comment() string {
	if r.Purpose == PurposeEvidence {
		return EvidenceComment
	}
	c := "ctguard policy " + r.Policy + ": " + string(r.Purpose)
	if r.NFProto != NFProtoAny {
		c += " " + string(r.NFProto)
	}
	return c
}
