package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxNameLength bounds metadata.name: the name is embedded in nftables set
// and counter names.
const MaxNameLength = 40

// GlobalSysctl is the sysctl the global liberal scope sets.
const GlobalSysctl = "net.netfilter.nf_conntrack_tcp_be_liberal"

// validate checks what decoding cannot (allowed values, names, fields that
// cannot apply together) and fills in defaults.
func (d *document) validate(p *Document) {
	d.checkConst("apiVersion", p.APIVersion, APIVersion)
	d.checkConst("kind", p.Kind, Kind)
	switch {
	case d.failed["metadata"]:
	case !d.has("metadata.name"):
		d.errField("metadata.name", "required")
	case d.ok("metadata.name"):
		if msg := checkName(p.Metadata.Name); msg != "" {
			d.errField("metadata.name", "%s", msg)
		}
	}
	if !d.has("spec") {
		d.errField("spec", "required")
	}
	if !d.ok("spec") {
		return
	}
	d.checkMatch(&p.Spec.Match)
	switch {
	case !d.has("spec.workaround"):
		d.errField("spec.workaround", "required (one of %s)", strings.Join(valueNames(workarounds), ", "))
	case !d.ok("spec.workaround") || !checkEnum(d, "spec.workaround", "workaround", p.Spec.Workaround, workarounds):
	case p.Spec.Workaround == WorkaroundLiberal:
		d.checkLiberal(&p.Spec)
	case p.Spec.Workaround == WorkaroundDropInvalid:
		d.checkDropInvalid(&p.Spec)
	case p.Spec.Workaround == WorkaroundObserve:
		d.checkObserve(&p.Spec)
	}
}

var (
	workarounds = []Workaround{WorkaroundLiberal, WorkaroundDropInvalid, WorkaroundObserve}
	scopes      = []Scope{ScopePerFlow, ScopeGlobal}
	directions  = []Direction{DirectionOriginal, DirectionReply}
	hooks       = []Hook{HookInput, HookForward}
	families    = []Family{FamilyAny, FamilyIPv4, FamilyIPv6}
	natKinds    = []NATKind{NATSource, NATDest, NATAny}
	handshakes  = []Handshake{HandshakeGate, HandshakeGuard, HandshakeNone}
	matchFields = []string{"family", "sources", "destinations", "destinationPorts", "nat", "natOnly"}
)

// checkConst checks a required field with one allowed value.
func (d *document) checkConst(path, got, want string) {
	switch {
	case !d.has(path):
		d.errField(path, "required (%q)", want)
	case d.ok(path) && got != want:
		d.errField(path, "found %q, expected %q", got, want)
	}
}

// checkLiberal checks a liberal policy and fills in its defaults.
func (d *document) checkLiberal(s *Spec) {
	if d.has("spec.dropInvalid") {
		d.errField("spec.dropInvalid", "not allowed with workaround liberal (it configures the dropInvalid workaround)")
	}
	s.DropInvalid = nil
	if s.Liberal == nil {
		s.Liberal = &Liberal{}
	}
	l := s.Liberal
	if !d.has("spec.liberal.scope") {
		l.Scope = ScopePerFlow
	} else if !d.ok("spec.liberal.scope") || !checkEnum(d, "spec.liberal.scope", "scope", l.Scope, scopes) {
		return
	}
	if l.Scope == ScopeGlobal {
		const why = "the sysctl " + GlobalSysctl + " applies to "
		if d.has("spec.liberal.directions") {
			d.errField("spec.liberal.directions", "not allowed with scope global: %sboth directions of every flow on the box", why)
		}
		if d.has("spec.liberal.existingFlows") {
			d.errField("spec.liberal.existingFlows", "not allowed with scope global: %severy flow on the box, existing and new", why)
		}
		if d.has("spec.liberal.handshake") {
			d.errField("spec.liberal.handshake", "not allowed with scope global: %severy flow from its first packet on", why)
		}
		for _, f := range matchFields {
			path := "spec.match." + f
			if d.has(path) && !(f == "family" && s.Match.Family == FamilyAny) { // any restricts nothing
				d.errField(path, "not allowed with scope global: %severy flow on the box (use scope perFlow to select flows)", why)
			}
		}
		return
	}
	if d.has("spec.liberal.directions") {
		checkList(d, "spec.liberal.directions", "direction", l.Directions, directions, "[reply]")
	} else {
		l.Directions = []Direction{DirectionReply}
	}
	if l.ExistingFlows == nil {
		l.ExistingFlows = ptr(true)
	}
	if !d.has("spec.liberal.handshake") {
		l.Handshake = HandshakeGate
	} else if d.ok("spec.liberal.handshake") {
		checkEnum(d, "spec.liberal.handshake", "handshake", l.Handshake, handshakes)
	}
	d.checkNAT(&s.Match)
}

// checkNAT checks match.nat and its older alias natOnly, and fills in
// match.nat: [snat] by default, natOnly true as [snat], false as [any].
func (d *document) checkNAT(m *Match) {
	const path = "spec.match.nat"
	switch {
	case d.has(path) && d.has("spec.match.natOnly"):
		d.errField("spec.match.natOnly", "not allowed with spec.match.nat: natOnly is its older form "+
			"(true means [snat], false [any]); keep only nat")
	case d.has(path):
		checkList(d, path, "NAT kind", m.NAT, natKinds, "[snat]")
		if len(m.NAT) > 1 && slices.Contains(m.NAT, NATAny) {
			d.errField(path, "any selects every flow: it cannot be combined with other kinds")
		}
	case d.ok("spec.match.natOnly") && !*m.NATOnly:
		m.NAT = []NATKind{NATAny}
	case d.has("spec.match.natOnly") && !d.ok("spec.match.natOnly"):
	default:
		m.NAT = []NATKind{NATSource}
	}
	m.NATOnly = nil
}

// checkObserve checks an observe policy: a scope of packet headers only,
// like dropInvalid's, and no workaround settings.
func (d *document) checkObserve(s *Spec) {
	for _, f := range []string{"spec.liberal", "spec.dropInvalid"} {
		if d.has(f) {
			d.errField(f, "not allowed with workaround observe (it mitigates nothing: it has no settings)")
		}
	}
	d.checkHeaderScope("observe")
	s.Liberal, s.DropInvalid = nil, nil
}

// checkHeaderScope rejects the match fields an invalid packet cannot be
// scoped by (workarounds dropInvalid and observe).
func (d *document) checkHeaderScope(workaround string) {
	if d.has("spec.match.sources") {
		d.errField("spec.match.sources", "not allowed with workaround "+workaround+": an invalid packet has lost its "+
			"conntrack entry; on the input hook it carries the server as source and this box's own address as "+
			"destination, so the client address is not in it")
	}
	for _, f := range []string{"spec.match.nat", "spec.match.natOnly"} {
		if d.has(f) {
			d.errField(f, "not allowed with workaround "+workaround+": an invalid packet has no "+
				"conntrack entry, so there is no NAT status to test")
		}
	}
}

// checkDropInvalid checks a dropInvalid policy and fills in its defaults.
func (d *document) checkDropInvalid(s *Spec) {
	if d.has("spec.liberal") {
		d.errField("spec.liberal", "not allowed with workaround dropInvalid (it configures the liberal workaround)")
	}
	d.checkHeaderScope("dropInvalid")
	s.Liberal = nil
	if s.DropInvalid == nil {
		s.DropInvalid = &DropInvalid{}
	}
	di := s.DropInvalid
	for i, name := range di.Interfaces {
		if reason := checkInterface(name); reason != "" {
			d.errField(d.elemPath("spec.dropInvalid.interfaces", i), "invalid interface name %q: %s", name, reason)
		}
	}
	if d.has("spec.dropInvalid.hooks") {
		checkList(d, "spec.dropInvalid.hooks", "hook", di.Hooks, hooks, "[input]")
	} else {
		di.Hooks = []Hook{HookInput}
	}
}

// checkList checks a list of enum values that must not be empty when given.
func checkList[T ~string](d *document, path, what string, got, valid []T, def string) {
	if d.ok(path) && len(d.elems[path]) == 0 && !d.anyFailed(path) {
		d.errField(path, "must not be empty (leave it out for the default %s)", def)
	}
	for i, v := range got {
		checkEnum(d, d.elemPath(path, i), what, v, valid)
	}
}

// checkMatch checks the family and prefixes of a match and defaults family.
func (d *document) checkMatch(m *Match) {
	if !d.has("spec.match.family") {
		m.Family = FamilyAny
	} else if d.ok("spec.match.family") {
		checkEnum(d, "spec.match.family", "family", m.Family, families)
	}
	for _, l := range []struct {
		path     string
		prefixes []netip.Prefix
	}{{"spec.match.sources", m.Sources}, {"spec.match.destinations", m.Destinations}} {
		for i, p := range l.prefixes {
			if msg := checkPrefix(p, m.Family); msg != "" {
				d.errField(d.elemPath(l.path, i), "%s", msg)
			}
		}
	}
}

// checkPrefix reports a prefix that can never match as written.
func checkPrefix(p netip.Prefix, family Family) string {
	a := p.Addr()
	switch {
	case a.Is4In6():
		msg := fmt.Sprintf("IPv4-mapped IPv6 prefix %q never matches: conntrack keeps IPv4 flows as IPv4", p)
		if p.Bits() >= 96 {
			msg += fmt.Sprintf(" (did you mean %q?)", netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked())
		}
		return msg
	case p != p.Masked():
		return fmt.Sprintf("%q has host bits set (did you mean %q?)", p, p.Masked())
	case family == FamilyIPv4 && a.Is6():
		return fmt.Sprintf("IPv6 prefix %q does not match family ipv4", p)
	case family == FamilyIPv6 && a.Is4():
		return fmt.Sprintf("IPv4 prefix %q does not match family ipv6", p)
	}
	return ""
}

// checkName reports a metadata.name that is not a DNS-1123 label of at most
// MaxNameLength characters.
func checkName(name string) string {
	if len(name) > MaxNameLength {
		return fmt.Sprintf("name is %d characters, at most %d allowed (it is embedded in nftables set and counter names)",
			len(name), MaxNameLength)
	}
	valid := name != ""
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && (c != '-' || i == 0 || i == len(name)-1) {
			valid = false
		}
	}
	if !valid {
		return fmt.Sprintf("invalid name %q: must be a DNS-1123 label "+
			"(lowercase letters, digits and '-', starting and ending with a letter or digit)", name)
	}
	return ""
}

// checkInterface returns why name is not a valid Linux interface name, or "".
func checkInterface(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > 15:
		return "longer than 15 bytes"
	case name == "." || name == "..":
		return "reserved"
	case strings.Contains(name, "/"):
		return "contains '/'"
	case strings.Contains(name, ":"):
		return "contains ':'"
	case strings.ContainsAny(name, " \t\n\v\f\r"):
		return "contains whitespace"
	case strings.Contains(name, "\x00"):
		return "contains a NUL byte"
	case strings.HasSuffix(name, "+") || strings.Contains(name, "*"):
		return "wildcards are not supported: list every interface by name"
	}
	return ""
}

// checkEnum reports a value that is not one of valid, listing them.
func checkEnum[T ~string](d *document, path, what string, got T, valid []T) bool {
	if slices.Contains(valid, got) {
		return true
	}
	names := valueNames(valid)
	msg := fmt.Sprintf("unknown %s %q, valid: %s", what, got, strings.Join(names, ", "))
	if s := suggest(string(got), names); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.errField(path, "%s", msg)
	return false
}

// valueNames converts enum values to strings for messages.
func valueNames[T ~string](valid []T) []string {
	names := make([]string, len(valid))
	for i, v := range valid {
		names[i] = string(v)
	}
	return names
}

// has reports whether the field at path is present (and not null).
func (d *document) has(path string) bool {
	_, ok := d.pos[path]
	return ok
}

// ok reports whether the field at path is present and was decoded.
func (d *document) ok(path string) bool {
	return d.has(path) && !d.failed[path]
}

// anyFailed reports whether an element of the list at path failed to decode.
func (d *document) anyFailed(path string) bool {
	for p := range d.failed {
		if strings.HasPrefix(p, path+"[") {
			return true
		}
	}
	return false
}

// elemPath is the path of the i-th decoded element of the list at path,
// counting in the YAML (elements that failed to decode are not in the slice).
func (d *document) elemPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, d.elems[path][i])
}

// errField records a problem at path, placed at the nearest enclosing field
// present in the YAML.
func (d *document) errField(path, format string, args ...any) {
	p := path
	for {
		if at, ok := d.pos[p]; ok {
			d.errorf(at, path, format, args...)
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			d.errorf(d.start, path, format, args...)
			return
		}
		p = p[:i]
	}
}
