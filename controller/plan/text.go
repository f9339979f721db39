package plan

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctguard/ctguard/controller/ruleset"
)

// WriteText renders the plan for an operator, terraform style: the table
// change object by object, then the nft text diff (observed -> desired,
// counter values left out), the sysctl changes, the perFlow policies with
// the existing flows they match, and a closing summary line ("Plan: N to
// add, M to change, K to remove." or "No changes. The kernel matches the
// policy."). The output is stable for equal plans.
func WriteText(w io.Writer, p Plan) error {
	tw := &textWriter{w: w}
	if !p.Empty() {
		tw.printf("ctguard will perform the following actions:\n")
	}
	if p.Table != nil {
		tw.table(*p.Table)
	}
	if len(p.Sysctls) > 0 {
		tw.section()
		for _, c := range p.Sysctls {
			old := "(absent)"
			if c.Old != nil {
				old = *c.Old
			}
			tw.printf("~ sysctl %s: %s -> %s\n", c.Name, old, c.New)
		}
	}
	tw.perFlow(p.PerFlow)
	if st := p.StaleFlags; st != nil {
		tw.section()
		tw.printf("~ per-flow flags: clear ctguard's flag on %s, in directions no policy wants any more%s\n", count(st.Flows, "flow"), sample(st.Sample))
	}
	s := p.Summary()
	tw.section()
	if s == (Summary{}) {
		tw.printf("No changes. The kernel matches the policy.\n")
	} else {
		tw.printf("Plan: %d to add, %d to change, %d to remove.\n", s.Add, s.Change, s.Remove)
	}
	return tw.err
}

// textWriter remembers the first write error and whether it wrote.
type textWriter struct {
	w     io.Writer
	err   error
	wrote bool
}

// printf writes unless an earlier write failed.
func (tw *textWriter) printf(format string, args ...any) {
	if tw.err == nil {
		_, tw.err = fmt.Fprintf(tw.w, format, args...)
		tw.wrote = true
	}
}

// section starts a section: a blank line unless it is the first output.
func (tw *textWriter) section() {
	if tw.wrote {
		tw.printf("\n")
	}
}

// mark is the terraform-style sign of an action.
func mark(a Action) string {
	switch a {
	case ActionCreate:
		return "+"
	case ActionDelete:
		return "-"
	case ActionReplace:
		return "-/+"
	}
	return "~"
}

// table writes the object list and the nft diff of a table change.
func (tw *textWriter) table(t TableChange) {
	tw.section()
	tw.printf("%s table %s %s (%s)\n", mark(t.Action), ruleset.TableFamily, ruleset.TableName, t.Action)
	for _, c := range t.Counters {
		tw.printf("    %s counter %s\n", mark(c.Action), c.Name)
	}
	for _, c := range t.Sets {
		tw.printf("    %s set %s%s\n", mark(c.Action), c.Name, setDetail(c))
	}
	for _, f := range t.Foreign {
		tw.printf("    - %s (not created by ctguard)\n", f)
	}
	for _, c := range t.Chains {
		if d := chainDetail(c); d != "" || c.Action != ActionUpdate {
			tw.printf("    %s chain %s%s\n", mark(c.Action), c.Name, d)
		}
		for _, r := range c.Rules {
			tw.printf("    %s rule %q in chain %s\n", mark(r.Action), r.ID, c.Name)
		}
	}
	tw.printf("\n    --- %s\n    +++ %s\n", tableLabel(t.Observed, "observed"), tableLabel(t.Desired, "desired"))
	if tw.err == nil {
		tw.err = writeUnified(tw.w, "    ", lineDiff(nftLines(t.Observed), nftLines(t.Desired)))
	}
}

// tableLabel names one side of the nft diff.
func tableLabel(t *ruleset.Table, side string) string {
	if t == nil {
		return side + " (absent)"
	}
	return side
}

// nftLines renders a table in nft syntax with counter values zeroed, as
// lines; nil for an absent table.
func nftLines(t *ruleset.Table) []string {
	if t == nil {
		return nil
	}
	z := *t
	z.Counters = make([]ruleset.Counter, len(t.Counters))
	for i, c := range t.Counters {
		z.Counters[i] = ruleset.Counter{Name: c.Name}
	}
	return splitLines(z.String())
}

// setDetail summarises a set change.
func setDetail(c SetChange) string {
	switch c.Action {
	case ActionCreate:
		return fmt.Sprintf(" (%s, %s)", setKind(*c.Desired), count(len(c.ElementsAdded), "element"))
	case ActionDelete:
		return fmt.Sprintf(" (%s, %s)", setKind(*c.Observed), count(len(c.ElementsRemoved), "element"))
	case ActionReplace:
		return fmt.Sprintf(": %s -> %s", setKind(*c.Observed), setKind(*c.Desired))
	}
	var parts []string
	if n := len(c.ElementsAdded); n > 0 {
		parts = append(parts, count(n, "element")+" added")
	}
	if n := len(c.ElementsRemoved); n > 0 {
		parts = append(parts, count(n, "element")+" removed")
	}
	return ": " + strings.Join(parts, ", ")
}

// setKind describes a set's type and flags.
func setKind(s ruleset.Set) string {
	if s.Interval {
		return string(s.Type) + " interval"
	}
	return string(s.Type)
}

// chainDetail describes what changes on an updated chain itself.
func chainDetail(c ChainChange) string {
	var parts []string
	if c.PriorityChanged() {
		parts = append(parts, fmt.Sprintf("priority %d -> %d", c.Observed.Priority, c.Desired.Priority))
	}
	if c.Reordered {
		parts = append(parts, "rules reordered")
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// perFlow writes the perFlow policy changes and the flows they match.
func (tw *textWriter) perFlow(changes []PerFlowChange) {
	first := true
	for _, c := range changes {
		if c.Action == ActionNone && c.Desired.MatchingFlows == 0 {
			continue
		}
		if first {
			tw.section()
			first = false
		}
		switch c.Action {
		case ActionCreate:
			tw.printf("+ perFlow policy %q (%s)\n", c.Name, perFlowKind(*c.Desired))
		case ActionUpdate:
			tw.printf("~ perFlow policy %q (%s -> %s)\n", c.Name, perFlowKind(*c.Observed), perFlowKind(*c.Desired))
		case ActionDelete:
			tw.printf("- perFlow policy %q (%s)\n", c.Name, perFlowKind(*c.Observed))
			continue
		}
		d := c.Desired
		switch {
		case c.Action == ActionNone:
			tw.printf("  perFlow policy %q (unchanged): %s not flagged yet, left to the per-flow engine%s\n",
				c.Name, count(d.MatchingFlows, "matching flow"), sample(d.Sample))
		case d.ExistingFlows:
			tw.printf("    perFlow policy %q: would flag %s%s\n", c.Name, count(c.FlowsToFlag(), "existing flow"), sample(d.Sample))
		case d.MatchingFlows > 0:
			tw.printf("    perFlow policy %q: %s match but existingFlows is false: only new flows are flagged%s\n",
				c.Name, count(d.MatchingFlows, "existing flow"), sample(d.Sample))
		}
	}
}

// perFlowKind describes a perFlow policy's settings.
func perFlowKind(p PerFlowPolicy) string {
	dirs := make([]string, len(p.Directions))
	for i, d := range p.Directions {
		dirs[i] = string(d)
	}
	s := fmt.Sprintf("directions %s, existingFlows %t", strings.Join(dirs, "+"), p.ExistingFlows)
	if p.Handshake != "" {
		s += ", handshake " + string(p.Handshake)
	}
	if len(p.NAT) > 0 {
		nat := make([]string, len(p.NAT))
		for i, k := range p.NAT {
			nat[i] = string(k)
		}
		s += ", nat " + strings.Join(nat, "+")
	}
	return s
}

// sample renders a flow sample as a parenthesised suffix.
func sample(flows []string) string {
	if len(flows) == 0 {
		return ""
	}
	return " (sample: " + strings.Join(flows, ", ") + ")"
}

// count renders "1 flow" or "12 flows".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
