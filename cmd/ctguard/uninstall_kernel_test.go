package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/topo"
)

// TestPrivilegedCleanupOnExitLeavesNothing is the Helm chart's uninstall
// path (cleanupOnExit: true, the default): a pod that stops removes
// everything ctguard applied on its node. With a perFlow, a dropInvalid and
// a global policy in force and flagged NATed flows in the table, SIGTERM
// leaves the ruleset and the sysctl as they were before and no flow with
// ctguard's mark or a BE_LIBERAL flag.
func TestPrivilegedCleanupOnExitLeavesNothing(t *testing.T) {
	t.Parallel()
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := topo.New(ctx, topo.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	c := &cli{t: t, ns: &netnstest.NS{Name: tp.NAT.Name, Handle: tp.NAT.Handle}, stateDir: t.TempDir()}
	rulesetBefore := c.ruleset()
	liberalBefore := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal")
	path := writePolicy(t, perFlowPolicy("egress", true, "")+"---\n"+dropPolicy("wan", "198.19.0.0/24")+"---\n"+globalPolicy)
	p := startRun(t, c.ns, c.stateDir, "-f", path, "--cleanup-on-exit")
	p.waitReady()

	body := topo.NewBody(16 << 10)
	srv, err := tp.StartServer(topo.IPv4, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const downloads = 3
	for i := range downloads {
		if d := tp.Fetch(ctx, srv.URL, ""); !d.OK(body) {
			t.Fatalf("download %d: %v", i, d.Err)
		}
	}
	mark := fmt.Sprint(flows.DefaultMarkBit)
	marked := func() int {
		out := string(c.ns.MustRun(t, "conntrack", "-L", "-p", "tcp", "--mark", mark+"/"+mark))
		return strings.Count(out, "dport=80 ")
	}
	poll(t, "the downloads' flows flagged", 10*time.Second, func() bool { return marked() == downloads })
	if tableText(c.ns) == "" || c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal") != "1" {
		t.Fatal("the policies are not in force")
	}

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM with --cleanup-on-exit: exit %d", code)
	}
	if after := c.ruleset(); after != rulesetBefore {
		t.Errorf("ruleset after the pod stopped:\n%s\nwant\n%s", after, rulesetBefore)
	}
	if got := c.ns.Sysctl(t, "net.netfilter.nf_conntrack_tcp_be_liberal"); got != liberalBefore {
		t.Errorf("be_liberal = %s after the pod stopped, want %s", got, liberalBefore)
	}
	if n := marked(); n != 0 {
		t.Errorf("%d flows still carry ctguard's mark", n)
	}
	conn, err := flows.Open(c.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen := 0
	err = conn.DumpFunc(ctx, func(f *flows.Flow) error {
		if f.Orig.DstPort == 80 {
			seen++
			if f.Liberal() != 0 {
				t.Errorf("flow %s still liberal (%s) after the pod stopped", f, f.Liberal())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < downloads {
		t.Fatalf("only %d of the %d download flows left in the table: the check proves little", seen, downloads)
	}
}
