package lab

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestReportJudges(t *testing.T) {
	reproduced := Result{Family: IPv4, Case: BeyondWindow, Workaround: Baseline, Injected: true, RSTFromNAT: true, InvalidDelta: 2}
	ignored := Result{Family: IPv4, Case: OldRetransmission, Workaround: Baseline, Injected: true, DownloadOK: true}
	protected := Result{Family: IPv4, Case: BeyondWindow, Workaround: "dropInvalid", Injected: true, DownloadOK: true, InvalidDelta: 1}
	leaked := Result{Family: IPv4, Case: BeyondWindow, Workaround: "liberal", Injected: true, RSTFromNAT: true}
	broken := Result{Family: IPv4, Case: BeyondWindow, Workaround: "liberal", Error: "apply liberal: boom"}
	notRun := Result{Family: IPv4, Case: OldRetransmission, Workaround: "liberal"}
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
		{"download lost without RST", []Result{reproduced, {Family: IPv4, Case: BeyondWindow, Workaround: "x", Injected: true}}, []string{VerdictReproduced, VerdictNotProtected}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Report{Kernel: "6.18.0"}
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
	rep.add(Result{Family: IPv6, Case: BeyondWindow, Workaround: Baseline, Injected: true, RSTFromNAT: true, InvalidDelta: 2,
		DownloadBytes: 1024, DownloadError: "download stalled", Note: "NAT RST seq 5 (injected ACK 5), TTL 64", Seconds: 2.8})
	rep.add(Result{Family: IPv6, Case: BeyondWindow, Workaround: "dropInvalid", Injected: true, DownloadOK: true, InvalidDelta: 1, Seconds: 2.2})
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"FAMILY  CASE           WORKAROUND   RST FROM NAT  INVALID  DOWNLOAD             TIME  VERDICT\n",
		"ipv6    beyond-window  none         yes           +2       failed (1024 bytes)  2.8s  reproduced\n",
		"ipv6    beyond-window  dropInvalid  no            +1       ok                   2.2s  protected\n",
		"ipv6/beyond-window/none note: NAT RST seq 5 (injected ACK 5), TTL 64\n",
		"ipv6/beyond-window/none download: download stalled\n",
		"kernel 6.18.0, 2 runs in 9.2s: OK\n",
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
	if got.Kernel != "6.18.0" || !got.OK || len(got.Results) != 2 || got.Results[1]["protected"] != true || got.Results[0]["rstFromNAT"] != true {
		t.Errorf("JSON report: %s", b)
	}
}
