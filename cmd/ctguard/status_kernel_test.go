package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab/topo"
)

// TestPrivilegedRunMetricsBindFailure: an address that cannot be bound ends
// "ctguard run" at once with exit 1, a message naming the address, and
// nothing applied.
func TestPrivilegedRunMetricsBindFailure(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	start := time.Now()
	p := startRun(t, c.ns, c.stateDir, "--metrics-addr", "192.0.2.1:9468")
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("ctguard run still running 10s after a metrics bind failure")
	}
	took := time.Since(start)
	if p.exit != 1 || !strings.Contains(p.logs.String(), "--metrics-addr: listen on 192.0.2.1:9468: bind: cannot assign requested address") {
		t.Fatalf("exit %d, output:\n%s", p.exit, p.logs.String())
	}
	if tableText(c.ns) != "" {
		t.Fatal("a run that could not bind its metrics address applied its table")
	}
	t.Logf("bind failure -> exit 1 in %v", took)
}

// TestPrivilegedStatusExitCodes walks status through its states: nothing
// applied (0), in force (0), drifted (3), failing (4, an interrupted
// apply), and checks the JSON form's version and state.
func TestPrivilegedStatusExitCodes(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24"))
	state := func(want int) string {
		t.Helper()
		var st struct {
			FormatVersion int
			State         string
			Problems      []string
		}
		if err := json.Unmarshal([]byte(c.mustRun(want, "status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		if st.FormatVersion != 1 {
			t.Fatalf("formatVersion %d", st.FormatVersion)
		}
		if (want != 0) != (len(st.Problems) > 0) {
			t.Fatalf("state %s with problems %q", st.State, st.Problems)
		}
		return st.State
	}
	if s := state(0); s != "notApplied" {
		t.Fatalf("fresh namespace: state %s", s)
	}
	c.mustRun(0, "apply", "-f", path)
	if s := state(0); s != "inForce" {
		t.Fatalf("after apply: state %s", s)
	}
	c.ns.MustRun(t, "nft", "delete", "table", "inet", "ctguard")
	if s := state(3); s != "drifted" {
		t.Fatalf("table deleted: state %s", s)
	}
	if out := c.mustRun(3, "status"); !strings.Contains(out, "State:") || !strings.Contains(out, "drifted") {
		t.Fatalf("status text when drifted:\n%s", out)
	}
	c.mustRun(0, "apply", "-f", path)
	// An apply cut short leaves its revision pending in the journal.
	b, err := os.ReadFile(filepath.Join(c.stateDir, "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	j["pending"] = j["revisions"].([]any)[0]
	if b, err = json.Marshal(j); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.stateDir, "journal.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if s := state(4); s != "failing" {
		t.Fatalf("interrupted apply: state %s", s)
	}
	c.mustRun(0, "apply", "-f", path)
	if s := state(0); s != "inForce" {
		t.Fatalf("after the apply again: state %s", s)
	}
}

// TestPrivilegedStatusMatchesMetrics: with a resync far away, the
// per-flow counters "ctguard status" shows catch up with /metrics within
// seconds (the live status is published every 2s), the controller counts
// as running from its lock, and as stopped once killed with -9.
func TestPrivilegedStatusMatchesMetrics(t *testing.T) {
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
	path := writePolicy(t, perFlowPolicy("egress", true, "none")) // the event engine's per-policy counters
	p := startRun(t, c.ns, c.stateDir, "-f", path, "--resync", "10m")
	p.waitReady()
	body := topo.NewBody(16 << 10)
	srv, err := tp.StartServer(topo.IPv4, body, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const downloads = 3
	for i := 1; i <= downloads; i++ {
		if d := tp.Fetch(ctx, srv.URL, ""); !d.OK(body) {
			t.Fatalf("download %d: %v", i, d.Err)
		}
	}
	poll(t, "the flows matched", 5*time.Second, func() bool {
		time.Sleep(10 * time.Millisecond)
		return p.metric("ctguard_flows_matched_total", "policy", "egress") == downloads
	})
	type counts struct{ Matched, Flagged, Confirmed, Failed, Gone, Reflagged, Ended, EndedByReset float64 }
	fromMetrics := func() counts {
		m := p.scrape()
		v := func(name string) float64 { return value(m, "ctguard_flows_"+name+"_total", "policy", "egress") }
		return counts{v("matched"), v("flagged"), v("confirmed"), v("failed"), v("gone"), v("reflagged"), v("ended"), v("ended_by_reset")}
	}
	var st struct {
		ControllerRunning bool
		Live              struct {
			Engine struct{ Policies map[string]counts }
		}
	}
	start := time.Now()
	var want counts
	poll(t, "status matching /metrics", 6*time.Second, func() bool {
		time.Sleep(100 * time.Millisecond)
		want = fromMetrics()
		if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.ControllerRunning && st.Live.Engine.Policies["egress"] == want
	})
	t.Logf("status matched /metrics %v after the last download (%+v)", time.Since(start), want)

	p.stop(syscall.SIGKILL)
	if err := json.Unmarshal([]byte(c.mustRun(0, "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.ControllerRunning {
		t.Fatal("status says a controller killed with -9 still runs (its live status is fresh, its lock is gone)")
	}
}

// TestPrivilegedMetricsReadAtScrape: with the resync ten minutes away, a
// change of the global sysctl by the operator (no global policy: ctguard
// leaves it alone) shows in /metrics at the next scrape, and the state
// gauges and per-flow series are right for a dropInvalid-only policy set.
func TestPrivilegedMetricsReadAtScrape(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	path := writePolicy(t, dropPolicy("wan", "198.19.0.0/24"))
	p := startRun(t, c.ns, c.stateDir, "-f", path, "--resync", "10m")
	p.waitReady()
	m := p.scrape()
	for name, want := range map[string]float64{
		"ctguard_table_present": 1, "ctguard_drift_present": 0, "ctguard_sysctl_be_liberal": 0,
		"ctguard_reconcile_failing": 0, "ctguard_policy_source_rejected": 0, "ctguard_kernel_read_errors_total": 0,
	} {
		if v := value(m, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v := value(m, "ctguard_policy_info", "policy", "wan", "workaround", "dropInvalid"); v != 1 {
		t.Errorf("ctguard_policy_info{policy=wan} = %v, want 1", v)
	}
	if v := value(m, "ctguard_flows_matched_total", "policy", "wan"); v != -1 {
		t.Errorf("a dropInvalid policy has per-flow series: ctguard_flows_matched_total = %v", v)
	}
	if v := value(m, "ctguard_nft_rule_packets_total", "policy", "wan", "purpose", "drop-invalid"); v != 0 {
		t.Errorf("drop-invalid counter = %v, want 0", v)
	}
	c.ns.MustRun(t, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1")
	// Scrapes share one read a second; the resync is ten minutes away.
	took := poll(t, "ctguard_sysctl_be_liberal 1 after the operator set it (read at scrape)", 5*time.Second, func() bool {
		time.Sleep(100 * time.Millisecond)
		return p.metric("ctguard_sysctl_be_liberal") == 1
	})
	t.Logf("sysctl change -> /metrics: %v", took)
}
