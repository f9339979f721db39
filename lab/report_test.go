package lab

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/lab/handshake"
)

func TestReportJudges(t *testing.T) {
	reproduced := Result{Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: Baseline, Injected: true, RSTFromNAT: true, InvalidDelta: 2}
	ignored := Result{Family: IPv4, Case: OldRetransmission, Topology: SNAT, Workaround: Baseline, Injected: true, DownloadOK: true}
	protected := Result{Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: "dropInvalid", Injected: true, DownloadOK: true, InvalidDelta: 1}
	leaked := Result{Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: "liberal", Injected: true, RSTFromNAT: true}
	broken := Result{Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: "liberal", Error: "apply liberal: boom"}
	notRun := Result{Family: IPv4, Case: OldRetransmission, Topology: SNAT, Workaround: "liberal"}
	// The control run failed: a namespace could not be built, the client
	// could not download: an error, never a kernel verdict (issue 10).
	noNamespaces := Result{Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: Baseline,
		Error: "build the lab's namespaces: netlink handle in ctglab-x-nat: protocol not supported"}
	badClient := Result{Family: IPv4, Case: OldRetransmission, Topology: SNAT, Workaround: Baseline, Injected: true,
		DownloadError: "wget: exit status 1: wget: unrecognized option '--progress=dot:giga'"}
	hs := func(workaround string, reset, conns int) Result {
		return Result{Family: IPv6, Case: Handshake, Topology: DNAT, Workaround: workaround, Injected: true,
			Handshake: &HandshakeResult{Outcome: handshake.Outcome{Conns: conns, OK: conns - reset, Reset: reset}, Injected: int64(conns)}}
	}
	hsNoSegment := hs(Baseline, 0, 40)
	hsNoSegment.Handshake.Injected = 0
	for _, tc := range []struct {
		name     string
		results  []Result
		verdicts []string
		ok       bool
	}{
		{"baseline only", []Result{reproduced}, []string{VerdictReproduced}, true},
		{"protected", []Result{reproduced, protected}, []string{VerdictReproduced, VerdictProtected}, true},
		{"not protected", []Result{reproduced, leaked}, []string{VerdictReproduced, VerdictNotProtected}, false},
		{"mitigation error", []Result{reproduced, broken}, []string{VerdictReproduced, VerdictError}, false},
		{"kernel does not reproduce", []Result{ignored, notRun}, []string{"not reproducible on this kernel (6.18.0)", VerdictSkipped}, true},
		{"namespaces not built", []Result{noNamespaces}, []string{VerdictError}, false},
		{"control download failed", []Result{badClient}, []string{VerdictError}, false},
		{"handshake protected", []Result{hs(Baseline, 40, 40), hs("liberal-gate", 0, 40)}, []string{VerdictReproduced, VerdictProtected}, true},
		{"handshake race", []Result{hs(Baseline, 40, 40), hs("liberal", 22, 40)}, []string{VerdictReproduced, VerdictNotProtected}, false},
		{"handshake without segments", []Result{hsNoSegment}, []string{VerdictError}, false},
		{"download lost without RST", []Result{reproduced, {Family: IPv4, Case: BeyondWindow, Topology: SNAT, Workaround: "x", Injected: true}}, []string{VerdictReproduced, VerdictNotProtected}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Report{Kernel: "6.18.0"}
			if tc.name == "baseline only" {
				t.Run("with a lab error", func(t *testing.T) {
					failed := Report{Kernel: "6.18.0", Error: "context canceled"}
					failed.add(reproduced)
					if failed.OK() {
						t.Error("a report with an error is OK")
					}
				})
			}
			for _, r := range tc.results {
				rep.add(r)
			}
			for i, r := range rep.Results {
				if r.Verdict != tc.verdicts[i] {
					t.Errorf("result %d (%s): verdict %q, want %q", i, r.Workaround, r.Verdict, tc.verdicts[i])
				}
			}
			if rep.OK() != tc.ok {
				t.Errorf("OK() = %v, want %v", rep.OK(), tc.ok)
			}
		})
	}
}

func TestReportOutput(t *testing.T) {
	rep := Report{Kernel: "6.18.0", Seconds: 9.25}
	rep.add(Result{Family: IPv6, Case: BeyondWindow, Topology: SNAT, Workaround: Baseline, Injected: true, RSTFromNAT: true, InvalidDelta: 2,
		DownloadBytes: 1024, DownloadError: "download stalled", Note: "NAT RST seq 5 (injected ACK 5), TTL 64", Seconds: 2.8})
	rep.add(Result{Family: IPv6, Case: BeyondWindow, Topology: SNAT, Workaround: "dropInvalid", Injected: true, DownloadOK: true, InvalidDelta: 1, Seconds: 2.2})
	rep.add(Result{Family: IPv6, Case: Handshake, Topology: DNAT, Workaround: Baseline, Injected: true, InvalidDelta: 80, Seconds: 1.3,
		Handshake: &HandshakeResult{Outcome: handshake.Outcome{Conns: 40, Reset: 40}, Injected: 40}})
	rep.add(Result{Family: IPv6, Case: Handshake, Topology: DNAT, Workaround: "liberal", Injected: true, InvalidDelta: 6, Seconds: 1.1,
		Handshake: &HandshakeResult{Outcome: handshake.Outcome{Conns: 40, OK: 37, Reset: 3, SetupP50: 250 * time.Microsecond, SetupP99: 1500 * time.Microsecond}, Injected: 40}})
	rep.Results = append(rep.Results[:2], rep.Results[3])
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"FAMILY  TOPOLOGY  CASE           WORKAROUND   RESET  RST FROM NAT  INVALID  DOWNLOAD             SETUP P50/P99  TIME  VERDICT\n",
		"ipv6    snat      beyond-window  none         -      yes           +2       failed (1024 bytes)  -              2.8s  reproduced\n",
		"ipv6    snat      beyond-window  dropInvalid  -      no            +1       ok                   -              2.2s  protected\n",
		"ipv6    dnat      handshake      liberal      3/40   -             +6       -                    0.25ms/1.50ms  1.1s  NOT protected\n",
		"ipv6/snat/beyond-window/none note: NAT RST seq 5 (injected ACK 5), TTL 64\n",
		"ipv6/snat/beyond-window/none download: download stalled\n",
		"kernel 6.18.0, 3 runs in 9.2s: FAILED\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, &text)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Kernel  string
		OK      bool
		Results []map[string]any
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	hsJSON, _ := got.Results[2]["handshake"].(map[string]any)
	if got.Kernel != "6.18.0" || got.OK || len(got.Results) != 3 || got.Results[1]["protected"] != true || got.Results[0]["rstFromNAT"] != true ||
		got.Results[2]["topology"] != "dnat" || hsJSON["reset"] != 3.0 || hsJSON["connections"] != 40.0 || hsJSON["injected"] != 40.0 {
		t.Errorf("JSON report: %s", b)
	}
}
