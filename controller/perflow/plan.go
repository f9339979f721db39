package perflow

import (
	"github.com/ctguard/ctguard/controller/flows"
)

// PlanSampleSize is the most sample flows a PlanEntry lists.
const PlanSampleSize = 5

// PlanEntry says what starting the engine would do for one policy.
type PlanEntry struct {
	// Matching counts the existing flows the policy would flag at start:
	// selected, missing the flag, and the policy flags existing flows.
	Matching int
	// Sample renders up to PlanSampleSize of them, e.g.
	// "198.18.1.2:40000 -> 198.19.0.10:443".
	Sample []string
}

// Plan computes, without touching the kernel, what the current per-flow
// policies would flag among the given flows (a dump), keyed by policy name.
// Every per-flow policy has an entry.
func (e *Engine) Plan(fs []flows.Flow) map[string]PlanEntry {
	sel := e.gen.Load().sel
	out := make(map[string]PlanEntry, sel.Len())
	for i := range sel.Len() {
		out[sel.Name(i)] = PlanEntry{}
	}
	for j := range fs {
		f := &fs[j]
		r := sel.Restrict(sel.Match(f))
		for i := range sel.Len() {
			if !r.Policies.Has(i) || (f.HasFlags && f.Liberal().Has(sel.Directions(i))) {
				continue
			}
			pe := out[sel.Name(i)]
			pe.Matching++
			if len(pe.Sample) < PlanSampleSize {
				pe.Sample = append(pe.Sample, f.String())
			}
			out[sel.Name(i)] = pe
		}
	}
	return out
}
