package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ctguard/ctguard/lab"
)

const testsLog = `hack/kernels: booting
=== PACKAGE controller/nft
=== RUN   TestPrivilegedA
--- PASS: TestPrivilegedA (0.83s)
=== RUN   TestPrivilegedB
    --- FAIL: TestPrivilegedB/sub (0.1s)
--- FAIL: TestPrivilegedB (0.84s)
--- SKIP: TestPrivilegedC (0.00s)
=== RESULT controller/nft FAIL 10.1
=== PACKAGE lab
--- PASS: TestPrivilegedRun (20.0s)
=== RESULT lab ok 19.4
=== PACKAGE lab/topo
--- PASS: TestPrivilegedTopology (2.33s)
`

func TestParseTests(t *testing.T) {
	got := parseTests(strings.NewReader(testsLog))
	if len(got) != 3 {
		t.Fatalf("%d packages, want 3: %+v", len(got), got)
	}
	nft, l, topo := got[0], got[1], got[2]
	if nft.pkg != "controller/nft" || nft.ok || !nft.done || nft.passed != 1 || nft.secs != 10.1 ||
		!slices.Equal(nft.failed, []string{"TestPrivilegedB"}) || !slices.Equal(nft.skipped, []string{"TestPrivilegedC"}) {
		t.Errorf("controller/nft: %+v", nft)
	}
	if !l.ok || !l.done || l.passed != 1 || len(l.failed) != 0 {
		t.Errorf("lab: %+v", l)
	}
	if topo.done || topo.passed != 1 {
		t.Errorf("lab/topo did not finish but got %+v", topo)
	}
}

func result(f lab.Family, c lab.Case, w string, reproducible, protected bool) lab.Result {
	r := lab.Result{Family: f, Case: c, Workaround: w, Injected: true, Reproducible: reproducible, Protected: protected,
		RSTFromNAT: w == lab.Baseline && reproducible, DownloadOK: w != lab.Baseline || !reproducible}
	switch {
	case w == lab.Baseline && reproducible:
		r.Verdict = lab.VerdictReproduced
	case w == lab.Baseline:
		r.Verdict = "not reproducible on this kernel (x)"
	case !reproducible:
		r.Skipped, r.Verdict = true, lab.VerdictSkipped
	case protected:
		r.Verdict = lab.VerdictProtected
	default:
		r.Verdict = lab.VerdictNotProtected
	}
	return r
}

// report builds a lab report where the old retransmission reproduces as
// given and every workaround protects unless broken names one.
func report(oldReproduces bool, broken string) lab.Report {
	var rep lab.Report
	for _, f := range []lab.Family{lab.IPv4, lab.IPv6} {
		for _, c := range []lab.Case{lab.OldRetransmission, lab.BeyondWindow} {
			repro := c == lab.BeyondWindow || oldReproduces
			rep.Results = append(rep.Results, result(f, c, lab.Baseline, repro, false))
			for _, w := range []string{"liberal", "dropInvalid"} {
				rep.Results = append(rep.Results, result(f, c, w, repro, repro && w != broken))
			}
		}
	}
	return rep
}

func TestJudgeLab(t *testing.T) {
	for _, tc := range []struct {
		name, line    string
		rep           lab.Report
		wantProblems  int
		wantSubstring string
	}{
		{name: "5.10 reproduces the incident as written", line: "5.10", rep: report(true, "")},
		{name: "6.1 ignores the old retransmission", line: "6.1", rep: report(false, "")},
		{name: "6.12 ignores it too", line: "6.12", rep: report(false, "")},
		{name: "5.10 not reproducing is a failure", line: "5.10", rep: report(false, ""), wantProblems: 2,
			wantSubstring: "ipv4/old-retransmission/none: reproduced false, want true on Linux 5.10"},
		{name: "6.1 reproducing it contradicts the README", line: "6.1", rep: report(true, ""), wantProblems: 2},
		{name: "an unprotected workaround", line: "6.1", rep: report(false, "liberal"), wantProblems: 1,
			wantSubstring: "FAILED"},
		{name: "no runs", line: "6.1", rep: lab.Report{}, wantProblems: 2, wantSubstring: "no baseline"},
		{name: "an error is never a kernel verdict", line: "6.1", rep: lab.Report{Results: []lab.Result{
			{Family: lab.IPv4, Case: lab.BeyondWindow, Workaround: lab.Baseline, Error: "netlink: protocol not supported"}}},
			wantProblems: 3, wantSubstring: "protocol not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judgeLab(tc.line, tc.rep)
			if len(got) != tc.wantProblems {
				t.Fatalf("problems %q, want %d", got, tc.wantProblems)
			}
			if tc.wantSubstring != "" && !strings.Contains(strings.Join(got, "\n"), tc.wantSubstring) {
				t.Errorf("problems %q, want one containing %q", got, tc.wantSubstring)
			}
		})
	}
}

func TestLabRowsFoldFamilies(t *testing.T) {
	rep := report(true, "")
	rep.Results[len(rep.Results)-1].Protected = false
	rep.Results[len(rep.Results)-1].Verdict = lab.VerdictNotProtected
	rows, workarounds, cells := labRows(rep)
	if !slices.Equal(rows, []string{"old-retransmission", "beyond-window"}) ||
		!slices.Equal(workarounds, []string{lab.Baseline, "liberal", "dropInvalid"}) {
		t.Fatalf("rows %v, workarounds %v", rows, workarounds)
	}
	if got := cells["old-retransmission\x00none"]; got != "RST from NAT, download dies (IPv4, IPv6)" {
		t.Errorf("baseline cell %q", got)
	}
	if got := cells["beyond-window\x00dropInvalid"]; got != "IPv4: protected; IPv6: NOT protected" {
		t.Errorf("split cell %q", got)
	}
}

// TestLoadAndWrite reads a results directory as the matrix script writes
// it and checks the table and the verdict.
func TestLoadAndWrite(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kernels", "6.12 5.10 6.1\n") // the table lists them oldest first
	write("skipped", "TestPrivilegedRunMemory: a throughput bound\n")
	for _, k := range []struct{ line, pkg, labJSON string }{
		{"5.10", "linux-image-5.10.0-46-cloud-amd64 5.10.262-1",
			`{"kernel":"5.10.0-46-cloud-amd64","results":[{"family":"ipv4","case":"beyond-window","workaround":"none","injected":true,"rstFromNAT":true,"reproducible":true,"verdict":"reproduced"}]}`},
		{"6.1", "linux-image-6.1.0-57-cloud-amd64 6.1.192-3", `not json`},
	} {
		write(k.line+"/package", k.pkg)
		write(k.line+"/tests.log", testsLog)
		write(k.line+"/tests.rc", "1")
		write(k.line+"/lab.json", k.labJSON)
		write(k.line+"/lab.rc", "0")
	}
	// --lab-only: no kernel tests, the lab alone.
	write("6.12/package", "linux-image-6.12.117+deb12-cloud-amd64 6.12.117-1~deb12u1")
	write("6.12/lab.rc", "0")
	write("6.12/lab.json", `{"kernel":"6.12.117+deb12-cloud-amd64","results":[{"family":"ipv6","case":"beyond-window","workaround":"none","injected":true,"rstFromNAT":true,"reproducible":true,"verdict":"reproduced"}]}`)
	m, err := load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := m.write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| 5.10 (`linux-image-5.10.0-46-cloud-amd64` 5.10.262-1) | beyond-window | RST from NAT, download dies (IPv4) |",
		"| 6.1 (`linux-image-6.1.0-57-cloud-amd64` 6.1.192-3) | lab | **lab output is not its JSON report",
		"controller/nft.TestPrivilegedB", "lab/topo (did not finish)",
		"Not run under emulation: TestPrivilegedRunMemory: a throughput bound",
		"| 6.12 (`linux-image-6.12.117+deb12-cloud-amd64` 6.12.117-1~deb12u1) | not run | - | - | - | ok |",
		"| 1: controller/nft.TestPrivilegedC |",
		"matrix of 3 kernel(s): FAILED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if m.ok() {
		t.Error("matrix ok with failed tests")
	}
	if i, j := strings.Index(out, "| 5.10 ("), strings.Index(out, "| 6.12 ("); i < 0 || j < i {
		t.Errorf("5.10 not listed before 6.12:\n%s", out)
	}
	if k := m.kernels[2]; !k.testsOK() || !k.labOK() {
		t.Errorf("lab-only kernel judged failed: tests %v lab %v %q", k.testsOK(), k.labOK(), k.labProblems)
	}
}

func TestHandshakeCellsPerTopology(t *testing.T) {
	hs := func(f lab.Family, nat lab.NAT, w string, reset int) lab.Result {
		r := result(f, lab.Handshake, w, true, reset == 0)
		r.Topology = nat
		r.Handshake = &lab.HandshakeResult{Injected: 40}
		r.Handshake.Conns, r.Handshake.Reset = 40, reset
		return r
	}
	rep := lab.Report{Results: []lab.Result{
		hs(lab.IPv4, lab.SNAT, lab.Baseline, 40), hs(lab.IPv6, lab.SNAT, lab.Baseline, 40),
		hs(lab.IPv4, lab.DNAT, lab.Baseline, 39), hs(lab.IPv4, lab.DNAT, "dropInvalid", 0),
	}}
	rows, _, cells := labRows(rep)
	if !slices.Equal(rows, []string{"handshake (snat)", "handshake (dnat)"}) {
		t.Fatalf("rows %v", rows)
	}
	for k, want := range map[string]string{
		"handshake (snat)\x00none":        "40/40 reset (IPv4, IPv6)",
		"handshake (dnat)\x00none":        "39/40 reset (IPv4)",
		"handshake (dnat)\x00dropInvalid": "protected, 0/40 reset (IPv4)",
	} {
		if cells[k] != want {
			t.Errorf("%q: %q, want %q", k, cells[k], want)
		}
	}
	if p := judgeLab("6.1", lab.Report{Error: "interrupted", Results: rep.Results}); !strings.Contains(strings.Join(p, "\n"), "the lab stopped: interrupted") {
		t.Errorf("a stopped lab: %q", p)
	}
}
