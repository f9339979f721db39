package ruleset

import (
	"strings"
	"testing"

	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/policy"
)

func TestEvidenceRules(t *testing.T) {
	observe := policytest.New(policy.Document{Metadata: policy.Metadata{Name: "watch"}, Spec: policy.Spec{Workaround: policy.WorkaroundObserve, Match: policy.Match{Family: policy.FamilyAny}}})
	got := Build([]policy.Policy{observe}, Options{EvidenceGroup: 7302}).String()
	for _, want := range []string{
		"chain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n" +
			"\t\tmeta l4proto tcp ct state invalid counter name \"_evidence_input\" limit rate 100/second burst 100 packets log group 7302 snaplen 128 comment \"ctguard evidence\"\n" +
			"\t\tmeta l4proto tcp ct state invalid counter name \"watch_count-invalid\" comment \"ctguard policy watch: count-invalid\"\n",
		"chain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n" +
			"\t\tmeta l4proto tcp ct state invalid counter name \"_evidence_forward\" limit rate 100/second burst 100 packets log group 7302 snaplen 128 comment \"ctguard evidence\"\n" +
			"\t\tmeta l4proto tcp ct state invalid counter name \"watch_count-invalid_forward\" comment \"ctguard policy watch: count-invalid\"\n",
		"\t\tmeta l4proto tcp tcp flags rst ct state invalid counter name \"_evidence_output\" limit rate 100/second burst 100 packets log group 7302 snaplen 128 comment \"ctguard evidence\"\n" +
			"\t\tmeta l4proto tcp tcp flags rst ct state invalid counter name \"watch_count-invalid-rst\"",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks\n%s\ngot:\n%s", want, got)
		}
	}
	if tb := Build(nil, Options{EvidenceGroup: 7302}); len(tb.Chains) != 0 {
		t.Errorf("no policies, no table: %s", tb)
	}
	if tb := Build([]policy.Policy{observe}, Options{}); strings.Contains(tb.String(), "evidence") {
		t.Errorf("group 0 adds evidence rules: %s", tb)
	}
	if ev := Evidence(7); len(ev.Chains) != 3 || len(ev.Counters) != 3 || ev.Chains[2].Rules[0].LogGroup != 7 || ev.EvidenceGroup() != 7 {
		t.Errorf("Evidence(7) = %s", ev)
	}
}
