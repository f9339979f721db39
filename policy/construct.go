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
		prefixKey := func(p netip.Prefix) (string, string) {
			if !p.IsValid() {
				return "", fmt.Sprintf("invalid CIDR %q", p)
			}
			return p.String(), ""
		}
		elems(d, "spec.match.sources", m.Sources, prefixKey)
		elems(d, "spec.match.destinations", m.Destinations, prefixKey)
		elems(d, "spec.match.destinationPorts", m.DestinationPorts, func(r PortRange) (string, string) {
			if _, msg := parsePortRange(r.String()); msg != "" {
				return "", msg
			}
			return r.String(), ""
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

// elems records a list and its elements as present, and reports an element
// key reports a problem with, or whose key an earlier element has.
func elems[T any](d *document, path string, list []T, key func(T) (k, problem string)) {
	if !d.present(path, len(list) > 0) {
		return
	}
	seen := map[string]int{}
	for i, v := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = position{}
		d.elems[path] = append(d.elems[path], i)
		k, problem := key(v)
		if problem != "" {
			d.failed[p] = true
			d.errorf(position{}, p, "%s", problem)
			continue
		}
		if first, dup := seen[k]; dup {
			d.failed[p] = true
			d.errorf(position{}, p, "duplicate %q (also at index %d)", k, first)
			continue
		}
		seen[k] = i
	}
}

// keyOf keys a list of strings by the string.
func keyOf[T ~string](v T) (string, string) { return string(v), "" }
