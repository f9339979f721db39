package gate

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/policytest"
	"github.com/ctguard/ctguard/internal/racetest"
	"github.com/ctguard/ctguard/policy"
)

const testQueue = 7301

// gatedPolicy is the default perFlow policy for the NAT kind, gated.
func gatedPolicy(kind racetest.Kind, m policy.Match) policy.Policy {
	m.NAT = []policy.NATKind{policy.NATKind(kind)}
	return policytest.New(policy.Document{Metadata: policy.Metadata{Name: "gated"}, Spec: policy.Spec{
		Workaround: policy.WorkaroundLiberal,
		Liberal:    &policy.Liberal{Scope: policy.ScopePerFlow, Handshake: policy.HandshakeGate},
		Match:      m,
	}})
}

// startGate installs ctguard's table with the gate rule in the NAT
// namespace and runs a gate there until the test ends.
func startGate(t *testing.T, tp *racetest.Topo, ps []policy.Policy) *Gate {
	t.Helper()
	c, err := nft.New(tp.NAT.Fd())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	g, err := Open(Config{NetNSFd: tp.NAT.Fd(), Queue: testQueue})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetPolicies(ps); err != nil {
		t.Fatal(err)
	}
	if err := c.Replace(ruleset.Build(ps, ruleset.Options{MarkBit: 0x00800000, Queue: testQueue})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		g.Close()
	})
	return g
}

// TestPrivilegedGateClosesTheRace runs the adversarial server through a
// NAT box whose only protection is the gate: no connection may be reset,
// SNAT and DNAT, IPv4 and IPv6, unscoped (no GET) and scoped (GET first)
// policies. conntrack -L on the box shows the flows flagged and marked.
func TestPrivilegedGateClosesTheRace(t *testing.T) {
	const n = 40
	for _, kind := range []racetest.Kind{racetest.SNAT, racetest.DNAT} {
		for _, v6 := range []bool{false, true} {
			for _, scoped := range []bool{false, true} {
				name := string(kind) + map[bool]string{false: "-ipv4", true: "-ipv6"}[v6] + map[bool]string{false: "", true: "-scoped"}[scoped]
				t.Run(name, func(t *testing.T) {
					tp := racetest.New(t, kind, v6)
					var m policy.Match
					if scoped {
						// DNAT: the service address the client dialled.
						m.Destinations = prefixesOf(tp.Target.Addr().String())
					}
					g := startGate(t, tp, []policy.Policy{gatedPolicy(kind, m)})
					a := tp.StartAdversary(t)
					res := tp.Run(t, a, n, 8)
					st := g.Stats()
					t.Logf("%d of %d reset; gate %+v", res.Reset, n, st)
					if res.Reset != 0 {
						t.Errorf("%d of %d connections reset with the gate", res.Reset, n)
					}
					if st.Flagged < n || st.Errors != 0 {
						t.Errorf("gate flagged %d of %d flows, %d errors", st.Flagged, n, st.Errors)
					}
					// Independent view: conntrack's own listing.
					if marked := conntrackCount(t, tp, v6, "--mark", "8388608/8388608"); marked < n {
						t.Errorf("conntrack -L shows %d flows with ctguard's mark, want %d", marked, n)
					}
				})
			}
		}
	}
}

// TestPrivilegedGateBypassWhenNotListening checks that the gate rule never
// black-holes: with the gate closed (as after kill -9), connections still
// open (unprotected: the server's segment resets them).
func TestPrivilegedGateBypassWhenNotListening(t *testing.T) {
	tp := racetest.New(t, racetest.SNAT, false)
	ps := []policy.Policy{gatedPolicy(racetest.SNAT, policy.Match{})}
	c, err := nft.New(tp.NAT.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Replace(ruleset.Build(ps, ruleset.Options{MarkBit: 0x00800000, Queue: testQueue})); err != nil {
		t.Fatal(err)
	}
	g, err := Open(Config{NetNSFd: tp.NAT.Fd(), Queue: testQueue})
	if err != nil {
		t.Fatal(err)
	}
	g.Close() // bound, then gone
	a := tp.StartAdversary(t)
	a.Settle = 0
	start := time.Now()
	res := tp.Run(t, a, 10, 10)
	for i, d := range res.Setup {
		if d > time.Second {
			t.Errorf("connection %d took %s to set up: the SYN-ACK was held", i, d)
		}
	}
	t.Logf("10 connections in %s, %d reset (unprotected)", time.Since(start), res.Reset)
	counters, err := c.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := counters["gated_gate"].Packets; got < 10 {
		t.Errorf("gate rule counted %d SYN-ACKs, want 10 (bypassed)", got)
	}
}

func prefixesOf(addrs ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range addrs {
		ad := netip.MustParseAddr(a)
		out = append(out, netip.PrefixFrom(ad, ad.BitLen()))
	}
	return out
}

// conntrackCount runs conntrack -L with filter in the NAT namespace and
// returns how many entries it listed.
func conntrackCount(t *testing.T, tp *racetest.Topo, v6 bool, filter ...string) int {
	t.Helper()
	args := append([]string{"-L", "-p", "tcp", "-f", map[bool]string{false: "ipv4", true: "ipv6"}[v6]}, filter...)
	out := string(tp.NAT.MustRun(t, "conntrack", args...))
	i := strings.Index(out, "(conntrack-tools): ")
	var n int
	if i < 0 {
		t.Fatalf("conntrack -L output without a count:\n%s", out)
	}
	if _, err := fmt.Sscanf(out[i:], "(conntrack-tools): %d flow entries", &n); err != nil {
		t.Fatalf("conntrack -L count: %v\n%s", err, out)
	}
	return n
}
