// Package policytest builds policies for tests through policy.New, the
// one constructor, so a test runs with the settings production would.
package policytest

import "github.com/ctguard/ctguard/policy"

// New returns the policy of doc, filling in apiVersion and kind when they
// are empty. It panics when policy.New rejects doc: a test's policies are
// fixed, and one that is invalid is a bug in the test.
func New(doc policy.Document) policy.Policy {
	if doc.APIVersion == "" {
		doc.APIVersion = policy.APIVersion
	}
	if doc.Kind == "" {
		doc.Kind = policy.Kind
	}
	p, err := policy.New("", doc)
	if err != nil {
		panic("policytest: invalid test policy: " + err.Error())
	}
	return p
}

// Named returns the policy named name with spec, as New builds it.
func Named(name string, spec policy.Spec) policy.Policy {
	return New(policy.Document{Metadata: policy.Metadata{Name: name}, Spec: spec})
}
