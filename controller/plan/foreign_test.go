package plan

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
)

// TestForeignObjectsAreListed is part of finding 2 of issue 13: plan
// misdescribed what replacing the table removes (one "unrecognised rule"
// for a chain, a set and a counter). Every object ctguard never created is
// now listed as removed.
func TestForeignObjectsAreListed(t *testing.T) {
	desired := ruleset.Table{Counters: []ruleset.Counter{{Name: "c"}}}
	observed := ruleset.Table{Counters: []ruleset.Counter{{Name: "c"}}, Foreign: []string{
		"chain mine (type filter, hook prerouting, priority -300, policy drop, 0 rules)",
		"quota q",
	}}
	p := Compute(State{Table: &desired}, State{Table: &observed})
	if p.Empty() || p.Summary() != (Summary{Remove: 2}) {
		t.Fatalf("summary %+v, want 2 to remove", p.Summary())
	}
	var text, js bytes.Buffer
	if err := WriteText(&text, p); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- chain mine (type filter, hook prerouting, priority -300, policy drop, 0 rules) (not created by ctguard)", "- quota q (not created by ctguard)", "# not ctguard's: quota q"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text plan lacks %q:\n%s", want, text.String())
		}
	}
	if err := WriteJSON(&js, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"foreign": [`) {
		t.Errorf("JSON plan lacks the foreign objects:\n%s", js.String())
	}
}
