package perflow

import (
	"context"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/selector"
)

// PlanSampleSize is the most sample flows a PlanEntry lists.
const PlanSampleSize = 5

// PlanEntry says what starting the engine would do for one policy.
type PlanEntry struct {
	// Matching counts the existing flows the policy would flag at start:
	// selected, missing the flag in some of the policy's directions, and the
	// policy flags existing flows.
	Matching int
	// Sample renders up to PlanSampleSize of them, e.g.
	// "198.18.1.2:40000 -> 198.19.0.10:443".
	Sample []string
}

// Plan computes, from a dump and without changing anything, what FlagExisting
// (and the engine's start) would flag for sel's policies, keyed by policy
// name. Every policy of sel has an entry.
func Plan(ctx context.Context, conn Conn, sel *selector.Selector) (map[string]PlanEntry, error) {
	out := make(map[string]PlanEntry, sel.Len())
	for i := range sel.Len() {
		out[sel.Name(i)] = PlanEntry{}
	}
	err := conn.DumpFunc(ctx, func(f *flows.Flow) error {
		r := existingMatch(sel, f)
		for i := range sel.Len() {
			if !r.Policies.Has(i) || missing(f, sel.Directions(i)) == 0 {
				continue
			}
			pe := out[sel.Name(i)]
			pe.Matching++
			if len(pe.Sample) < PlanSampleSize {
				pe.Sample = append(pe.Sample, f.String())
			}
			out[sel.Name(i)] = pe
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
