package policy

import _ "embed"

// DefaultFile is the file name Default's policies carry in Policy.Source
// and in messages.
const DefaultFile = "<default>"

//go:embed default.yaml
var defaultYAML []byte

// Default returns ctguard's embedded default policy: default-snat, a
// per-flow liberal policy on the REPLY direction of every TCP flow this box
// source-NATs, existing flows included. It is parsed at each call, so the
// caller owns the result.
func Default() []Policy {
	policies, err := Parse(DefaultFile, defaultYAML)
	if err != nil {
		panic("policy: embedded default.yaml is invalid: " + err.Error())
	}
	return policies
}
