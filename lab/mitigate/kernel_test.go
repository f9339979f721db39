package mitigate

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctguard/ctguard/internal/netnstest"
	"github.com/ctguard/ctguard/lab"
)

// TestPrivilegedLabProvesEveryWorkaround is "ctguard lab" as CI runs it:
// the beyond-window segment reproduces the NAT's RST without a workaround,
// and each of ctguard's workarounds, applied with its own controller,
// prevents it, on IPv4 and IPv6. (lab's own tests check its namespaces
// are removed.)
func TestPrivilegedLabProvesEveryWorkaround(t *testing.T) {
	netnstest.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := lab.Options{
		Families:    []lab.Family{lab.IPv4, lab.IPv6},
		Cases:       []lab.Case{lab.BeyondWindow},
		Mitigations: All(nil),
		BodySize:    2 << 20,
	}
	if path, err := exec.LookPath("wget"); err == nil {
		opts.WgetPath = path
	}
	rep, err := lab.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	seen := map[string]int{}
	for _, r := range rep.Results {
		key := string(r.Family) + "/" + r.Workaround
		seen[key]++
		if r.Workaround == lab.Baseline {
			if !r.Reproducible || !r.RSTFromNAT || r.DownloadOK {
				t.Errorf("%s: baseline did not reproduce the RST: %+v", key, r)
			}
			continue
		}
		if !r.Protected || r.RSTFromNAT || !r.DownloadOK {
			t.Errorf("%s: not protected: %+v", key, r)
		}
	}
	for _, f := range []string{"ipv4", "ipv6"} {
		for _, w := range []string{lab.Baseline, Liberal, LiberalGlobal, DropInvalid} {
			if seen[f+"/"+w] != 1 {
				t.Errorf("%s/%s ran %d times, want once", f, w, seen[f+"/"+w])
			}
		}
	}
	if !rep.OK() {
		t.Error("report not OK")
	}
}
