package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// directionsPolicy is a perFlow policy on flows from 198.18.0.0/15 to port
// 443 flagging dirs, existing flows included.
func directionsPolicy(dirs string) string {
	return fmt.Sprintf(`apiVersion: ctguard.io/v1alpha1
kind: MitigationPolicy
metadata:
  name: web
spec:
  workaround: liberal
  liberal:
    scope: perFlow
    directions: [%s]
    existingFlows: true
  match:
    family: ipv4
    sources: [198.18.0.0/15]
    destinationPorts: [443]
    natOnly: false
`, dirs)
}

// makeFlows creates n ESTABLISHED TCP flows from 198.18.x.y:40000 to
// 198.19.0.10:443 through ctnetlink, and returns their original tuples.
func makeFlows(t *testing.T, ns *netnstest.NS, n int) []conntrack.Flow {
	t.Helper()
	ct, err := conntrack.Dial(&netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	out := make([]conntrack.Flow, n)
	for i := range n {
		src := netip.AddrFrom4([4]byte{198, 18, byte(2 + i>>8), byte(i)})
		f := conntrack.NewFlow(flows.ProtoTCP, conntrack.StatusConfirmed|conntrack.StatusSeenReply|conntrack.StatusAssured,
			src, netip.MustParseAddr("198.19.0.10"), 40000, 443, 600, 0)
		f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: uint8(flows.TCPEstablished), OriginalWindowScale: 7, ReplyWindowScale: 7,
			OriginalFlags: 0x0101, ReplyFlags: 0x0101}
		if err := ct.Create(f); err != nil {
			t.Fatalf("create flow %d: %v", i, err)
		}
		out[i] = f
	}
	return out
}

// flagCensus counts the dumped flows by (liberal directions, marked).
func flagCensus(t *testing.T, ns *netnstest.NS) map[string]int {
	t.Helper()
	c, err := flows.Open(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := map[string]int{}
	err = c.DumpFunc(context.Background(), func(f *flows.Flow) error {
		out[fmt.Sprintf("%v marked=%t", f.Liberal(), f.Mark&uint32(flows.DefaultMarkBit) != 0)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPrivilegedStaleFlagsCleared is finding 4 of issue 13: narrowing
// directions by one-shot apply, a change across a run restart after kill
// -9, and dropping the last perFlow policy left the old directions' flags
// on every flow while plan said the kernel matched. A flow the kernel (or
// another tool) made liberal keeps its flags throughout.
func TestPrivilegedStaleFlagsCleared(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	const n = 1000
	fs := makeFlows(t, c.ns, n+1)
	// The last flow is made liberal in both directions by someone else.
	fc, err := flows.Open(c.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	other := flows.Flow{Proto: flows.ProtoTCP, Orig: flows.Tuple{Src: fs[n].TupleOrig.IP.SourceAddress, Dst: fs[n].TupleOrig.IP.DestinationAddress, SrcPort: 40000, DstPort: 443}}
	if err := fc.SetLiberal(&other, flows.Both, 0); err != nil {
		t.Fatal(err)
	}
	both := writePolicy(t, directionsPolicy("original, reply"))
	reply := writePolicy(t, directionsPolicy("reply"))
	kept := "original,reply marked=false"

	c.mustRun(0, "apply", "-f", both)
	if got := flagCensus(t, c.ns); got["original,reply marked=true"] != n || got[kept] != 1 {
		t.Fatalf("after apply of both directions: %v", got)
	}

	// One-shot apply narrowing the directions.
	out := c.mustRun(2, "plan", "-f", reply)
	if !strings.Contains(out, fmt.Sprintf("clear ctguard's flag on %d flows", n)) {
		t.Fatalf("plan does not report the stale flags:\n%s", out)
	}
	c.mustRun(0, "apply", "-f", reply)
	if got := flagCensus(t, c.ns); got["reply marked=true"] != n || got[kept] != 1 {
		t.Fatalf("after apply narrowing to reply: %v", got)
	}
	if out := c.mustRun(0, "plan", "-f", reply); !strings.Contains(out, "No changes") {
		t.Fatalf("plan after the narrowing apply:\n%s", out)
	}

	// A controller flags both directions again and is killed; the policy
	// changes while it is down; the next start clears what it no longer wants.
	p := startRun(t, c.ns, c.stateDir, "-f", both)
	p.waitReady()
	poll(t, "both directions flagged by run", 10e9, func() bool { return flagCensus(t, c.ns)["original,reply marked=true"] == n })
	p.stop(syscall.SIGKILL)
	p = startRun(t, c.ns, c.stateDir, "-f", reply)
	p.waitReady()
	if got := flagCensus(t, c.ns); got["reply marked=true"] != n || got[kept] != 1 {
		t.Fatalf("after a restart with reply only: %v", got)
	}
	p.stop(syscall.SIGTERM)

	// Dropping the last perFlow policy clears the rest, and the mark.
	c.mustRun(0, "apply", "-f", writePolicy(t, dropPolicy("wan", "198.19.0.0/24")))
	got := flagCensus(t, c.ns)
	if got["none marked=false"] < n || got[kept] != 1 || got["reply marked=true"]+got["none marked=true"] != 0 {
		t.Fatalf("after dropping the perFlow policy: %v", got)
	}
}
