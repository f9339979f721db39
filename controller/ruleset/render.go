package ruleset

import (
	"fmt"
	"strconv"
	"strings"
)

// elementsPerLine is how many set elements String puts on one line.
const elementsPerLine = 8

// String renders the table in nft syntax, as "nft -f" accepts it and close
// to what "nft list table inet ctguard" prints (nft list leaves out the
// "meta l4proto tcp" a tcp port match implies). Counter values are
// rendered, so loading the text also restores them.
func (t Table) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "table %s %s {\n", TableFamily, TableName)
	sep := ""
	for _, c := range t.Counters {
		fmt.Fprintf(&sb, "%s\tcounter %s {\n\t\tpackets %d bytes %d\n\t}\n", sep, c.Name, c.Packets, c.Bytes)
		sep = "\n"
	}
	for _, s := range t.Sets {
		sb.WriteString(sep)
		s.render(&sb)
		sep = "\n"
	}
	for _, c := range t.Chains {
		fmt.Fprintf(&sb, "%s\tchain %s {\n\t\ttype filter hook %s priority %s; policy accept;\n", sep, c.Name(), c.Hook, priority(c.Priority))
		for _, r := range c.Rules {
			fmt.Fprintf(&sb, "\t\t%s\n", r)
		}
		sb.WriteString("\t}\n")
		sep = "\n"
	}
	for _, f := range t.Foreign {
		fmt.Fprintf(&sb, "%s\t# not ctguard's: %s\n", sep, f)
		sep = ""
	}
	sb.WriteString("}\n")
	return sb.String()
}

// render writes the set declaration.
func (s Set) render(sb *strings.Builder) {
	fmt.Fprintf(sb, "\tset %s {\n\t\ttype %s\n", s.Name, s.Type)
	if s.Interval {
		sb.WriteString("\t\tflags interval\n")
	}
	if len(s.Elements) > 0 {
		sb.WriteString("\t\telements = { ")
		for i, e := range s.Elements {
			if i > 0 {
				sb.WriteString(",")
				if i%elementsPerLine == 0 {
					sb.WriteString("\n\t\t\t     ")
				} else {
					sb.WriteString(" ")
				}
			}
			if s.Type == SetIfname {
				e = strconv.Quote(e)
			}
			sb.WriteString(e)
		}
		sb.WriteString(" }\n")
	}
	sb.WriteString("\t}\n")
}

// priority renders a chain priority relative to "filter" as nft lists it.
func priority(p int) string {
	switch {
	case p == GatePriority:
		return "mangle"
	case p < 0:
		return fmt.Sprintf("filter - %d", -p)
	case p > 0:
		return fmt.Sprintf("filter + %d", p)
	}
	return "filter"
}

// String renders the rule as one nft rule statement. An unrecognised
// rule renders as an nft comment line carrying its Detail.
func (r Rule) String() string {
	if r.Purpose == PurposeUnrecognised {
		return "# unrecognised rule: " + r.Detail
	}
	if r.Purpose == PurposeGate {
		return r.gateString()
	}
	parts := []string{"meta l4proto tcp"}
	if r.RSTOnly {
		parts = append(parts, "tcp flags rst")
	}
	parts = append(parts, "ct state invalid")
	if r.IifnameSet != "" {
		parts = append(parts, "iifname @"+r.IifnameSet)
	}
	switch {
	case r.AddrSet != "":
		l3 := "ip"
		if r.NFProto == NFProtoIPv6 {
			l3 = "ip6"
		}
		parts = append(parts, l3+" "+direction(r.AddrIsDest)+"addr @"+r.AddrSet)
	case r.NFProto != NFProtoAny:
		parts = append(parts, "meta nfproto "+string(r.NFProto))
	}
	if r.PortSet != "" {
		parts = append(parts, "tcp "+direction(r.PortIsDest)+"port @"+r.PortSet)
	}
	parts = append(parts, "counter name "+strconv.Quote(r.Counter))
	if r.Purpose == PurposeEvidence {
		parts = append(parts, fmt.Sprintf("limit rate %d/second burst %d packets log group %d snaplen %d", EvidenceRate, EvidenceBurst, r.LogGroup, EvidenceSnaplen))
	}
	if r.Drop {
		parts = append(parts, "drop")
	}
	parts = append(parts, "comment "+strconv.Quote(r.Comment()))
	return strings.Join(parts, " ")
}

func direction(dest bool) string {
	if dest {
		return "d"
	}
	return "s"
}

// gateString renders a gate rule as nft lists it (the queue as the nft
// queue statement, whichever encoding the kernel took).
func (r Rule) gateString() string {
	parts := []string{"meta l4proto tcp", "tcp flags syn,ack / syn,ack", "ct direction reply",
		fmt.Sprintf("ct mark & 0x%08x == 0x00000000", r.MarkBit)}
	var status []string
	if r.NATStatus&StatusSrcNAT != 0 {
		status = append(status, "snat")
	}
	if r.NATStatus&StatusDstNAT != 0 {
		status = append(status, "dnat")
	}
	if len(status) > 0 {
		parts = append(parts, "ct status "+strings.Join(status, ","))
	}
	if r.NFProto != NFProtoAny {
		parts = append(parts, "meta nfproto "+string(r.NFProto))
	}
	parts = append(parts, "counter name "+strconv.Quote(r.Counter), fmt.Sprintf("queue num %d bypass", r.Queue),
		"comment "+strconv.Quote(r.Comment()))
	return strings.Join(parts, " ")
}
