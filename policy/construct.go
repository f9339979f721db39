package policy

import (
	"fmt"
	"net/netip"
)

// fromDocument records which fields of a Document built in Go are present,
// as decode records them for YAML, and reports what decode would have
// reported about their elements (invalid prefixes and ports, duplicates),
// so that validate treats both alike. A field is present when it is not
// its zero value; every position is unknown (line 0).
func (d *document) fromDocument(doc *Document) {
	s := &doc.Spec
	m := &s.Match
	matchSet := m.Family != "" || len(m.Sources) > 0 || len(m.Destinations) > 0 ||
		len(m.DestinationPorts) > 0 || len(m.NAT) > 0 || m.NATOnly != nil
	d.present("apiVersion", doc.APIVersion != "")
	d.present("kind", doc.Kind != "")
	d.present("metadata", doc.Metadata.Name != "")
	d.present("metadata.name", doc.Metadata.Name != "")
	d.present("spec", s.Workaround != "" || s.Liberal != nil || s.DropInvalid != nil || matchSet)
	d.present("spec.workaround", s.Workaround != "")
	if l := s.Liberal; d.present("spec.liberal", l != nil) {
		d.present("spec.liberal.scope", l.Scope != "")
		elems(d, "spec.liberal.directions", l.Directions, keyOf[Direction])
		d.present("spec.liberal.existingFlows", l.ExistingFlows != nil)
		d.present("spec.liberal.handshake", l.Handshake != "")
	}
	if di := s.DropInvalid; d.present("spec.dropInvalid", di != nil) {
		elems(d, "spec.dropInvalid.interfaces", di.Interfaces, keyOf[string])
		elems(d, "spec.dropInvalid.hooks", di.Hooks, keyOf[Hook])
	}
	if d.present("spec.match", matchSet) {
		d.present("spec.match.family", m.Family != "")
		prefixKey := func(p netip.Prefix) (netip.Prefix, string) {
			if !p.IsValid() {
				return p, fmt.Sprintf("invalid CIDR %q", p)
			}
			return p, ""
		}
		elems(d, "spec.match.sources", m.Sources, prefixKey)
		elems(d, "spec.match.destinations", m.Destinations, prefixKey)
		elems(d, "spec.match.destinationPorts", m.DestinationPorts, func(r PortRange) (PortRange, string) {
			if r.From == 0 || r.From > r.To {
				_, msg := parsePortRange(r.String())
				return r, msg
			}
			return r, ""
		})
		elems(d, "spec.match.nat", m.NAT, keyOf[NATKind])
		d.present("spec.match.natOnly", m.NATOnly != nil)
	}
}

// present records path as present (at an unknown position) when set, and
// reports set.
func (d *document) present(path string, set bool) bool {
	if set {
		d.pos[path] = position{}
	}
	return set
}

// elems records a list as present and its elements as decoded (they keep
// their index), and reports an element whose check finds a problem or
// whose key an earlier element has. Elements get no position of their own:
// a problem with one is placed at the list's, which is unknown anyway.
func elems[T any, K comparable](d *document, path string, list []T, check func(T) (key K, problem string)) {
	if !d.present(path, len(list) > 0) {
		return
	}
	idx := make([]int, len(list))
	seen := make(map[K]int, len(list))
	for i, v := range list {
		idx[i] = i
		k, problem := check(v)
		if problem == "" {
			first, dup := seen[k]
			if !dup {
				seen[k] = i
				continue
			}
			problem = fmt.Sprintf("duplicate %q (also at index %d)", fmt.Sprint(v), first)
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		d.failed[p] = true
		d.errorf(position{}, p, "%s", problem)
	}
	d.elems[path] = idx
}

// keyOf keys a list of strings by the string.
func keyOf[T ~string](v T) (T, string) { return v, "" }
