package mitigate

import (
	"strings"
	"testing"

	"github.com/ctguard/ctguard/lab/topo"
	"github.com/ctguard/ctguard/policy"
)

// TestDocuments checks every workaround's policy for both kinds of NAT box:
// it parses, dropInvalid sits on the hook the invalid packet takes, and a
// per-flow policy on a DNAT box selects destination-NATed flows.
func TestDocuments(t *testing.T) {
	for _, kind := range []topo.NAT{topo.SNAT, topo.DNAT} {
		for _, name := range Names {
			doc, err := Document(name, kind)
			if err != nil {
				t.Fatalf("%s/%s: %v", kind, name, err)
			}
			ps, err := policy.Parse(name+".yaml", []byte(doc))
			if err != nil {
				t.Fatalf("%s/%s: %v\n%s", kind, name, err, doc)
			}
			p := ps[0]
			switch {
			case name == DropInvalid:
				want := policy.HookInput
				if kind == topo.DNAT {
					want = policy.HookForward
				}
				if h := p.Hooks(); len(h) != 1 || h[0] != want {
					t.Errorf("%s/%s: hooks %v, want [%s]", kind, name, h, want)
				}
			case name == LiberalGlobal:
				if !p.IsGlobalLiberal() {
					t.Errorf("%s/%s: not global", kind, name)
				}
			default:
				if !p.IsPerFlow() {
					t.Errorf("%s/%s: not perFlow", kind, name)
				}
				dnat := strings.Contains(doc, "nat: [dnat]")
				if dnat != (kind == topo.DNAT) {
					t.Errorf("%s/%s: selects destination-NATed flows %v:\n%s", kind, name, dnat, doc)
				}
			}
		}
	}
	if _, err := Document("sideways", topo.SNAT); err == nil {
		t.Error("unknown workaround accepted")
	}
	if ByName("sideways", nil) != nil || Binary(Liberal, "", nil) != nil {
		t.Error("ByName or Binary returned a workaround for nothing")
	}
}
