package ruleset

import (
	"cmp"
	"slices"
	"strings"

	"github.com/ctguard/ctguard/internal/intervals"
	"github.com/ctguard/ctguard/policy"
)

// Build returns the desired content of inet ctguard for the policies:
//
//   - dropInvalid: on each of its hooks (input when none is given), a rule
//     dropping invalid TCP packets, scoped by iifname, by the packet's SOURCE
//     address (match.destinations: the invalid packet comes from the server)
//     and SOURCE port (match.destinationPorts);
//   - perFlow liberal: the same scoping without the drop, on input (the
//     policy selects source-NATed or any flows) and forward (destination-
//     NATed flows), counting invalid packets the per-flow flag did not save
//     (sources and nat cannot be used: an invalid packet has no conntrack
//     entry); with handshake guard (or gate while opts.NoQueue) the rule
//     drops them (PurposeGuard);
//   - perFlow liberal with handshake gate: on prerouting, a gate rule
//     queueing the SYN-ACK of every flow of the policy's family and NAT
//     kinds not yet carrying opts.MarkBit (see addGate);
//   - observe: the perFlow counting rules on input and forward;
//   - every policy: an output rule counting the RSTs the box itself sends
//     with ct state invalid TO the policy's destinations and ports.
//
// A policy whose destinations hold both families gets one rule per family;
// a family without a matching destination gets no rule, so a rule is never
// wider than its policy. Names of sets and counters derive from the policy
// name (see ObjectName). The result is in canonical order.
func Build(policies []policy.Policy, opts Options) Table {
	return build(policies, opts, nil)
}

// build is Build, with the interval sets' elements taken from cache when
// it is not nil.
func build(policies []policy.Policy, opts Options, cache *SetCache) Table {
	b := builder{
		opts:     opts,
		cache:    cache,
		defs:     map[string]Set{},
		counters: map[string]bool{},
		rules:    map[Hook][]Rule{},
	}
	for _, p := range policies {
		b.add(p)
	}
	if opts.EvidenceGroup != 0 && len(policies) > 0 {
		b.addEvidence(opts.EvidenceGroup)
	}
	return b.table()
}

// Limits of the evidence rules' logging: a flood of invalid packets costs
// the box and the reader at most EvidenceRate messages a second per hook,
// each at most EvidenceSnaplen bytes (the IP and TCP headers with options).
const (
	EvidenceRate    = 100
	EvidenceBurst   = 100
	EvidenceSnaplen = 128
)

// EvidenceCounter is the name of the evidence rule's counter on a hook.
// Policy names start with a letter, so these never collide with theirs.
func EvidenceCounter(hook Hook) string { return "_evidence_" + string(hook) }

// Evidence returns a table holding only the evidence rules of group: on
// input and forward, "meta l4proto tcp ct state invalid", on output the
// same with "tcp flags rst" (the box's own resets); each counts every such
// packet and then logs a rate-limited sample to group. Build adds the same
// rules ahead of the policies' rules when Options.EvidenceGroup is set.
func Evidence(group uint16) Table {
	b := builder{defs: map[string]Set{}, counters: map[string]bool{}, rules: map[Hook][]Rule{}}
	b.addEvidence(group)
	return b.table()
}

// addEvidence adds the evidence rule of each hook.
func (b *builder) addEvidence(group uint16) {
	for _, h := range []Hook{HookInput, HookForward, HookOutput} {
		r := Rule{Purpose: PurposeEvidence, RSTOnly: h == HookOutput, Counter: EvidenceCounter(h), LogGroup: group}
		b.counters[r.Counter] = true
		b.rules[h] = append(b.rules[h], r)
	}
}

// ObjectName is the name of a set or counter of the policy: the policy
// name and suffix joined by sep, made a valid unquoted nft identifier
// (nft 1.0 accepts no quoted set or counter names): characters outside
// [A-Za-z0-9_.-] become "_", and a name not starting with a letter gets a
// leading "_".
func ObjectName(policyName, sep, suffix string) string {
	var sb strings.Builder
	name := policyName + sep + suffix
	if c := name[0]; !isLetter(c) && c != '_' && c != '.' {
		sb.WriteByte('_')
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isLetter(c) || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('_')
		}
	}
	return sb.String()
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// CounterName is the name of the counter of a policy's rule of one purpose
// and layer-3 protocol, e.g. "egress-snat_drop-invalid_ipv4"; a forward-hook
// rule has its own ("egress-snat_drop-invalid_forward_ipv4"), so forwarded
// drops are told apart from local ones.
func CounterName(policyName string, hook Hook, purpose Purpose, proto NFProto) string {
	suffix := string(purpose)
	if hook == HookForward {
		suffix += "_" + string(hook)
	}
	if proto != NFProtoAny {
		suffix += "_" + string(proto)
	}
	return ObjectName(policyName, "_", suffix)
}

// builder accumulates the table while Build walks the policies.
type builder struct {
	opts     Options
	cache    *SetCache      // nil: none
	defs     map[string]Set // candidate sets; only referenced ones are kept
	counters map[string]bool
	rules    map[Hook][]Rule
}

// variant is one layer-3 protocol a policy's rules are split into.
type variant struct {
	proto   NFProto
	addrSet string
}

// scope is the packet-header scoping shared by a policy's rules.
type scope struct {
	variants []variant
	portSet  string
	ifaceSet string
}

func (b *builder) add(p policy.Policy) {
	name := p.Name()
	sc := b.scope(name, p.Match())
	switch {
	case p.Workaround() == policy.WorkaroundDropInvalid:
		hooks := p.Hooks()
		if ifaces := p.Interfaces(); len(ifaces) > 0 {
			sc.ifaceSet = ObjectName(name, "-", "ifaces")
			b.defs[sc.ifaceSet] = Set{Name: sc.ifaceSet, Type: SetIfname, Elements: sortedUnique(ifaces)}
		}
		for _, h := range hooks {
			b.addRules(Hook(h), name, PurposeDropInvalid, sc)
		}
	case p.Workaround() == policy.WorkaroundObserve:
		b.addRules(HookInput, name, PurposeCountInvalid, sc)
		b.addRules(HookForward, name, PurposeCountInvalid, sc)
	case p.IsPerFlow():
		mode := p.Handshake()
		if mode == policy.HandshakeGate && b.opts.NoQueue {
			mode = policy.HandshakeGuard
		}
		purpose := PurposeCountInvalid
		if mode == policy.HandshakeGuard {
			purpose = PurposeGuard
		}
		nat := p.NATMatch()
		if nat == 0 || nat&policy.NATMatchSource != 0 {
			b.addRules(HookInput, name, purpose, sc)
		}
		if nat&policy.NATMatchDest != 0 {
			b.addRules(HookForward, name, purpose, sc)
		}
		if mode == policy.HandshakeGate {
			b.addGate(&p)
		}
	}
	b.addRules(HookOutput, name, PurposeCountInvalidRST, sc)
}

// scope defines the policy's address and port sets and splits it by family.
func (b *builder) scope(name string, m policy.Match) scope {
	var sc scope
	if len(m.DestinationPorts) > 0 {
		sc.portSet = ObjectName(name, "-", "ports")
		b.defs[sc.portSet] = Set{Name: sc.portSet, Type: SetInetService, Interval: true,
			Elements: elements(b.cache, portSets, sc.portSet, portSpans(m.DestinationPorts))}
	}
	v4, v6 := intervals.Spans(m.Destinations)
	families := map[policy.Family][]NFProto{
		policy.FamilyIPv4: {NFProtoIPv4},
		policy.FamilyIPv6: {NFProtoIPv6},
	}[m.Family]
	if families == nil {
		families = []NFProto{NFProtoIPv4, NFProtoIPv6}
		if len(m.Destinations) == 0 {
			families = []NFProto{NFProtoAny}
		}
	}
	for _, proto := range families {
		v := variant{proto: proto}
		switch {
		case len(m.Destinations) == 0:
		case proto == NFProtoIPv4 && len(v4) > 0:
			v.addrSet = ObjectName(name, "-", "dst4")
			b.defs[v.addrSet] = Set{Name: v.addrSet, Type: SetIPv4Addr, Interval: true, Elements: elements(b.cache, ipv4Sets, v.addrSet, v4)}
		case proto == NFProtoIPv6 && len(v6) > 0:
			v.addrSet = ObjectName(name, "-", "dst6")
			b.defs[v.addrSet] = Set{Name: v.addrSet, Type: SetIPv6Addr, Interval: true, Elements: elements(b.cache, ipv6Sets, v.addrSet, v6)}
		default:
			continue // this family has nothing to match
		}
		sc.variants = append(sc.variants, v)
	}
	return sc
}

// addRules adds one rule per family variant of the scope to the hook's chain.
func (b *builder) addRules(hook Hook, name string, purpose Purpose, sc scope) {
	out := hook == HookOutput
	for _, v := range sc.variants {
		r := Rule{
			Policy:     name,
			Purpose:    purpose,
			NFProto:    v.proto,
			RSTOnly:    purpose == PurposeCountInvalidRST,
			AddrSet:    v.addrSet,
			AddrIsDest: out && v.addrSet != "",
			PortSet:    sc.portSet,
			PortIsDest: out && sc.portSet != "",
			Counter:    CounterName(name, hook, purpose, v.proto),
			Drop:       purpose == PurposeDropInvalid || purpose == PurposeGuard,
		}
		if !out {
			r.IifnameSet = sc.ifaceSet
		}
		b.counters[r.Counter] = true
		b.rules[hook] = append(b.rules[hook], r)
	}
}

// addGate adds the gate rule of a perFlow policy: its family (one rule for
// both when it has none) and NAT kinds. Sources, destinations and ports are
// matched by the gate on the entry (a gate rule cannot: the packet is the
// reply and nft's ct address matches need what google/nftables v0.3.0 cannot
// encode), so a scoped policy queues the SYN-ACKs of every flow of its NAT
// kinds, and the gate flags only those the policy selects.
func (b *builder) addGate(p *policy.Policy) {
	var status uint32
	nat := p.NATMatch()
	if nat&policy.NATMatchSource != 0 {
		status |= StatusSrcNAT
	}
	if nat&policy.NATMatchDest != 0 {
		status |= StatusDstNAT
	}
	proto := map[policy.Family]NFProto{policy.FamilyIPv4: NFProtoIPv4, policy.FamilyIPv6: NFProtoIPv6}[p.Match().Family]
	r := Rule{
		Policy:    p.Name(),
		Purpose:   PurposeGate,
		NFProto:   proto,
		NATStatus: status,
		MarkBit:   b.opts.MarkBit,
		Queue:     b.opts.Queue,
		Counter:   CounterName(p.Name(), HookPrerouting, PurposeGate, proto),
	}
	b.counters[r.Counter] = true
	b.rules[HookPrerouting] = append(b.rules[HookPrerouting], r)
}

// table assembles the canonical Table: referenced sets only, sorted names,
// chains in hook order with rules by policy, purpose and protocol.
func (b *builder) table() Table {
	var t Table
	used := map[string]bool{}
	for _, hook := range []Hook{HookPrerouting, HookInput, HookForward, HookOutput} {
		rules := b.rules[hook]
		if len(rules) == 0 {
			continue
		}
		slices.SortStableFunc(rules, func(x, y Rule) int {
			return cmp.Or(cmp.Compare(x.Policy, y.Policy), cmp.Compare(x.Purpose, y.Purpose), cmp.Compare(x.NFProto, y.NFProto))
		})
		for _, r := range rules {
			for _, s := range []string{r.IifnameSet, r.AddrSet, r.PortSet} {
				if s != "" {
					used[s] = true
				}
			}
		}
		prio := Priority
		if hook == HookPrerouting {
			prio = GatePriority
		}
		t.Chains = append(t.Chains, Chain{Hook: hook, Priority: prio, Rules: rules})
	}
	for name := range used {
		t.Sets = append(t.Sets, b.defs[name])
	}
	slices.SortFunc(t.Sets, func(x, y Set) int { return cmp.Compare(x.Name, y.Name) })
	for name := range b.counters {
		t.Counters = append(t.Counters, Counter{Name: name})
	}
	slices.SortFunc(t.Counters, func(x, y Counter) int { return cmp.Compare(x.Name, y.Name) })
	return t
}

func sortedUnique(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	return slices.Compact(out)
}

// EvidenceGroup returns the nfnetlink_log group of the table's evidence
// rules, 0 if it has none (or t is nil).
func (t *Table) EvidenceGroup() uint16 {
	if t == nil {
		return 0
	}
	for _, ch := range t.Chains {
		for _, r := range ch.Rules {
			if r.Purpose == PurposeEvidence {
				return r.LogGroup
			}
		}
	}
	return 0
}
