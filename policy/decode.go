package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// document decodes and validates one YAML document. It walks the yaml.v3
// node tree itself so that every problem carries a field path and a line,
// unknown fields are matched case-sensitively and no value changes type.
// Documents built in Go take the same validation (fromDocument).
type document struct {
	file   string
	name   string              // metadata.name when it is a string, for messages
	start  position            // where the document's content starts
	pos    map[string]position // where every field path present in the YAML is
	failed map[string]bool     // field paths whose value could not be decoded
	elems  map[string][]int    // list path -> YAML index of each decoded element
	errs   []positioned
}

// position is a place in a YAML file.
type position struct{ line, column int }

// positioned is a problem and where it is, to sort problems in file order.
type positioned struct {
	at  position
	err *FieldError
}

// newDocument starts decoding a document of file.
func newDocument(file string) *document {
	return &document{
		file:   file,
		pos:    map[string]position{},
		failed: map[string]bool{},
		elems:  map[string][]int{},
	}
}

// field is one known key of a YAML mapping and how to decode its value.
type field struct {
	name   string
	decode func(n *yaml.Node, path string)
}

// decode fills a Document from the document's root node. It reports false
// when the root is not a mapping, leaving nothing worth validating.
func (d *document) decode(root *yaml.Node) (Document, bool) {
	var p Document
	if root.Kind != yaml.MappingNode {
		d.errAt(root, "", "expected a %s mapping, found %s", Kind, describe(root))
		return p, false
	}
	d.mapping(root, "",
		field{"apiVersion", func(n *yaml.Node, path string) { p.APIVersion = d.text(n, path) }},
		field{"kind", func(n *yaml.Node, path string) { p.Kind = d.text(n, path) }},
		field{"metadata", func(n *yaml.Node, path string) {
			d.mapping(n, path, field{"name", func(n *yaml.Node, path string) { p.Metadata.Name = d.text(n, path) }})
		}},
		field{"spec", func(n *yaml.Node, path string) { d.spec(n, path, &p.Spec) }},
	)
	return p, true
}

// spec decodes the spec mapping.
func (d *document) spec(n *yaml.Node, path string, s *Spec) {
	d.mapping(n, path,
		field{"workaround", func(n *yaml.Node, path string) { s.Workaround = Workaround(d.text(n, path)) }},
		field{"liberal", func(n *yaml.Node, path string) {
			s.Liberal = &Liberal{}
			l := s.Liberal
			d.mapping(n, path,
				field{"scope", func(n *yaml.Node, path string) { l.Scope = Scope(d.text(n, path)) }},
				field{"directions", func(n *yaml.Node, path string) { l.Directions = strList[Direction](d, n, path) }},
				field{"existingFlows", func(n *yaml.Node, path string) { l.ExistingFlows = d.boolean(n, path) }},
				field{"handshake", func(n *yaml.Node, path string) { l.Handshake = Handshake(d.text(n, path)) }},
			)
		}},
		field{"dropInvalid", func(n *yaml.Node, path string) {
			s.DropInvalid = &DropInvalid{}
			di := s.DropInvalid
			d.mapping(n, path,
				field{"interfaces", func(n *yaml.Node, path string) { di.Interfaces = strList[string](d, n, path) }},
				field{"hooks", func(n *yaml.Node, path string) { di.Hooks = strList[Hook](d, n, path) }},
			)
		}},
		field{"match", func(n *yaml.Node, path string) { d.match(n, path, &s.Match) }},
	)
}

// match decodes the spec.match mapping.
func (d *document) match(n *yaml.Node, path string, m *Match) {
	d.mapping(n, path,
		field{"family", func(n *yaml.Node, path string) { m.Family = Family(d.text(n, path)) }},
		field{"sources", func(n *yaml.Node, path string) { m.Sources = d.prefixes(n, path) }},
		field{"destinations", func(n *yaml.Node, path string) { m.Destinations = d.prefixes(n, path) }},
		field{"destinationPorts", func(n *yaml.Node, path string) { m.DestinationPorts = d.ports(n, path) }},
		field{"nat", func(n *yaml.Node, path string) { m.NAT = strList[NATKind](d, n, path) }},
		field{"natOnly", func(n *yaml.Node, path string) { m.NATOnly = d.boolean(n, path) }},
	)
}

// mapping decodes the known fields of mapping n and reports unknown,
// duplicate and non-string keys. A null value counts as an absent field.
func (d *document) mapping(n *yaml.Node, path string, fields ...field) {
	if n.Kind != yaml.MappingNode {
		d.errAt(n, path, "expected a mapping, found %s", describe(n))
		return
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := resolve(n.Content[i]), resolve(n.Content[i+1])
		if key.Kind != yaml.ScalarNode || key.ShortTag() != "!!str" {
			d.errorf(at(key), path, "expected a field name, found %s", describe(key))
			continue
		}
		p := join(path, key.Value)
		if first, dup := seen[key.Value]; dup {
			d.errorf(at(key), p, "duplicate field (first at line %d)", first)
			continue
		}
		seen[key.Value] = key.Line
		i := slices.Index(names, key.Value)
		if i < 0 {
			if s := suggest(key.Value, names); s != "" {
				d.errAt(key, p, "unknown field (did you mean %q?)", s)
			} else {
				d.errAt(key, p, "unknown field (valid: %s)", strings.Join(names, ", "))
			}
			continue
		}
		if isNull(value) {
			continue
		}
		d.pos[p] = at(key)
		fields[i].decode(value, p)
	}
}

// str decodes a YAML string; other scalars (true, 123, 2024-01-01) are
// reported rather than converted.
func (d *document) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		return n.Value, true
	}
	hint := ""
	if n.Kind == yaml.ScalarNode {
		hint = " (quote it to mean the string)"
	}
	d.errAt(n, path, "expected a string, found %s%s", describe(n), hint)
	return "", false
}

// text is str for fields whose failure needs no further handling.
func (d *document) text(n *yaml.Node, path string) string {
	s, _ := d.str(n, path)
	return s
}

// boolean decodes a YAML true or false; yes, no, on, off and quoted
// strings are errors.
func (d *document) boolean(n *yaml.Node, path string) *bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			return ptr(true)
		case "false":
			return ptr(false)
		}
	}
	d.errAt(n, path, "expected a boolean, found %s (use true or false)", describe(n))
	return nil
}

// list decodes every element of sequence n with each, which returns the
// element, a key identifying it and whether it could be decoded. Elements
// with equal keys are reported as duplicates and left out.
func list[T any](d *document, n *yaml.Node, path string, each func(el *yaml.Node, path string) (T, string, bool)) []T {
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = " (write [...] around it for a list of one)"
		}
		d.errAt(n, path, "expected a list, found %s%s", describe(n), hint)
		return nil
	}
	var out []T
	seen := map[string]int{}
	for i, el := range n.Content {
		el = resolve(el)
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = at(el)
		v, key, ok := each(el, p)
		if !ok {
			continue
		}
		if first, dup := seen[key]; dup {
			d.errAt(el, p, "duplicate %q (also at index %d)", key, first)
			continue
		}
		seen[key] = i
		out = append(out, v)
		d.elems[path] = append(d.elems[path], i)
	}
	return out
}

// strList decodes a list of strings into a slice of string type T.
func strList[T ~string](d *document, n *yaml.Node, path string) []T {
	return list(d, n, path, func(el *yaml.Node, p string) (T, string, bool) {
		s, ok := d.str(el, p)
		return T(s), s, ok
	})
}

// prefixes decodes a list of CIDRs or bare addresses.
func (d *document) prefixes(n *yaml.Node, path string) []netip.Prefix {
	return list(d, n, path, func(el *yaml.Node, p string) (netip.Prefix, string, bool) {
		if el.Kind != yaml.ScalarNode || el.ShortTag() != "!!str" {
			d.errAt(el, p, "expected a CIDR string, found %s", describe(el))
			return netip.Prefix{}, "", false
		}
		prefix, ok := parsePrefix(el.Value)
		if !ok {
			d.errAt(el, p, "invalid CIDR %q", el.Value)
			return netip.Prefix{}, "", false
		}
		return prefix, prefix.String(), true
	})
}

// parsePrefix parses "198.18.1.0/24" or a bare address, taken as /32 or
// /128. Host bits are kept for validation to report.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p, err == nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// ports decodes a list of ports (integers) and "A-B" ranges (strings).
func (d *document) ports(n *yaml.Node, path string) []PortRange {
	return list(d, n, path, func(el *yaml.Node, p string) (PortRange, string, bool) {
		if el.Kind != yaml.ScalarNode || (el.ShortTag() != "!!int" && el.ShortTag() != "!!str") {
			d.errAt(el, p, "expected a port or an \"A-B\" range, found %s", describe(el))
			return PortRange{}, "", false
		}
		r, msg := parsePortRange(el.Value)
		if msg != "" {
			d.errAt(el, p, "%s", msg)
			return PortRange{}, "", false
		}
		return r, r.String(), true
	})
}

// errAt records a problem at node n's line and marks path as failed.
func (d *document) errAt(n *yaml.Node, path, format string, args ...any) {
	d.failed[path] = true
	d.errorf(at(n), path, format, args...)
}

func (d *document) errorf(at position, path, format string, args ...any) {
	d.errs = append(d.errs, positioned{at, &FieldError{
		File:   d.file,
		Line:   at.line,
		Policy: d.name,
		Field:  path,
		Msg:    fmt.Sprintf(format, clipArgs(args)...),
	}})
}

// errors returns the document's problems in file order.
func (d *document) errors() ErrorList {
	slices.SortStableFunc(d.errs, func(a, b positioned) int {
		return cmp.Or(a.at.line-b.at.line, a.at.column-b.at.column)
	})
	list := make(ErrorList, len(d.errs))
	for i, e := range d.errs {
		list[i] = e.err
	}
	return list
}

// at is where node n is.
func at(n *yaml.Node) position { return position{n.Line, n.Column} }

// peekName returns metadata.name of a policy mapping when it is a string,
// so that every message about the policy can name it.
func peekName(root *yaml.Node) string {
	meta := lookup(root, "metadata")
	if meta == nil {
		return ""
	}
	name := lookup(meta, "name")
	if name == nil || name.Kind != yaml.ScalarNode || name.ShortTag() != "!!str" {
		return ""
	}
	return name.Value
}

// lookup returns the value of key in mapping n, or nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode && k.Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

// resolve follows an alias (*name) to the node it refers to.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// isNull reports an explicit or implicit YAML null (~, null, nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's type and, for scalars, its value, for messages
// such as `expected a string, found boolean true`.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
	default:
		return "unsupported YAML node"
	}
	v := n.Value
	if utf8.RuneCountInString(v) > 40 {
		v = string([]rune(v)[:40]) + "..."
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("string %q", v)
	case "!!int":
		return "integer " + v
	case "!!float":
		return "number " + v
	case "!!bool":
		return "boolean " + v
	case "!!null":
		return "null"
	case "!!timestamp":
		return "timestamp " + v
	case "!!merge":
		return "merge key <<"
	default:
		return fmt.Sprintf("value %q with tag %q", v, n.ShortTag())
	}
}

// join appends key to a field path, quoting a key that is not a plain
// name so that a message stays on one line.
func join(path, key string) string {
	if strings.IndexFunc(key, func(r rune) bool { return !isNameRune(r) }) >= 0 || key == "" {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func isNameRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-'
}

// ptr returns a pointer to a copy of v.
func ptr[T any](v T) *T { return &v }
