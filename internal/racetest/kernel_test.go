package racetest

import "testing"

// TestPrivilegedAdversaryResets checks that the race reproduces: without any
// mitigation, the adversarial server's connections are reset.
func TestPrivilegedAdversaryResets(t *testing.T) {
	for _, kind := range []Kind{SNAT, DNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(string(kind)+map[bool]string{false: "-ipv4", true: "-ipv6"}[v6], func(t *testing.T) {
				tp := New(t, kind, v6)
				a := tp.StartAdversary(t)
				res := tp.Run(t, a, 10, 10)
				t.Logf("%s: %d of %d reset", t.Name(), res.Reset, res.Connections)
				if res.Reset < res.Connections/2 {
					t.Errorf("without mitigation %d of %d connections were reset, want most", res.Reset, res.Connections)
				}
			})
		}
	}
}
