package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/policy"
)

// policyCommand runs "ctguard policy ARGS" in-process and returns its
// standard output.
func policyCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCommand(&out, &bytes.Buffer{})
	root.SetArgs(append([]string{"policy"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestPolicyPrintsTheEffectivePolicies(t *testing.T) {
	want, err := policy.Load("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	out, err := policyCommand(t, "-f", "../../examples")
	if err != nil {
		t.Fatal(err)
	}
	back, err := policy.Parse("out.yaml", []byte(out))
	if err != nil {
		t.Fatalf("the output does not parse back: %v\n%s", err, out)
	}
	if len(back) != len(want) || !strings.Contains(out, "existingFlows: true") {
		t.Fatalf("%d policies, want %d, defaults filled in:\n%s", len(back), len(want), out)
	}
	for i := range back {
		if !reflect.DeepEqual(back[i].Document(), want[i].Document()) {
			t.Errorf("policy %s differs after the round trip:\n%s", want[i].Name(), out)
		}
	}
	js, err := policyCommand(t, "-f", "../../examples", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON []policy.Policy
	if err := json.Unmarshal([]byte(js), &fromJSON); err != nil || len(fromJSON) != len(want) {
		t.Fatalf("-o json: %v (%d policies)\n%s", err, len(fromJSON), js)
	}
	def, err := policyCommand(t)
	if err != nil || !strings.Contains(def, "name: default-snat") || !strings.Contains(def, "handshake: gate") {
		t.Errorf("without -f: %v\n%s", err, def)
	}
}

func TestPolicyReportsBadInput(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "p.yaml")
	doc := "apiVersion: ctguard.io/v1alpha1\nkind: MitigationPolicy\nmetadata:\n  name: egress\nspec:\n  workaround: liberal\n" +
		"  match:\n    destinations: [10.0.0.300/8]\n"
	if err := os.WriteFile(bad, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := policyCommand(t, "-f", bad)
	var list policy.ErrorList
	if !errors.As(err, &list) || out != "" {
		t.Fatalf("policy -f bad = %q, %v; want no output and the problems", out, err)
	}
	if want := bad + `:8: policy "egress": spec.match.destinations[0]: invalid CIDR "10.0.0.300/8"`; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if _, err := policyCommand(t, "-o", "text"); err == nil || err.Error() != `-o: "text" is not one of yaml, json` {
		t.Errorf("-o text: %v", err)
	}
}
