// Package examples_test keeps every example policy valid and buildable.
package examples_test

import (
	"path/filepath"
	"testing"

	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
)

func TestExamplePoliciesAreValid(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies found: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			ps, err := policy.Load(f)
			if err != nil {
				t.Fatalf("example %s is invalid:\n%v", f, err)
			}
			table := ruleset.Build(ps, testOpts)
			if len(table.Chains) == 0 {
				t.Fatalf("example %s builds an empty table", f)
			}
		})
	}
}

// testOpts are the ruleset.Build options of the tests.
var testOpts = ruleset.Options{MarkBit: 0x00800000, Queue: 7301}
