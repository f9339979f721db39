package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Result is what one run observed: one family, one case, one workaround.
type Result struct {
	Family     Family `json:"family"`
	Case       Case   `json:"case"`
	Workaround string `json:"workaround"` // "none" for the baseline

	Injected      bool   `json:"injected"`          // the crafted segment was sent mid-transfer
	Segment       string `json:"segment,omitempty"` // what was sent
	RSTFromNAT    bool   `json:"rstFromNAT"`        // the NAT box sent its own RST to the server
	InvalidDelta  uint64 `json:"invalidDelta"`      // growth of conntrack's invalid statistic in the NAT namespace
	DownloadOK    bool   `json:"downloadOK"`        // the download completed with the right size and sha256
	DownloadBytes int64  `json:"downloadBytes"`
	DownloadError string `json:"downloadError,omitempty"`
	Tool          string `json:"tool,omitempty"` // "wget" or "go"

	Reproducible bool    `json:"reproducible"` // the baseline of this family and case got the NAT's RST
	Protected    bool    `json:"protected"`    // a mitigation run: no RST from the NAT and the download survived
	Skipped      bool    `json:"skipped"`      // a mitigation not run because the baseline did not reproduce
	Verdict      string  `json:"verdict"`
	Note         string  `json:"note,omitempty"`
	Error        string  `json:"error,omitempty"` // the run could not complete (mitigation failed to apply, no injection)
	Seconds      float64 `json:"seconds"`
}

// Report is the outcome of Run.
type Report struct {
	Kernel  string   `json:"kernel"` // release of the kernel the lab ran on
	Results []Result `json:"results"`
	Seconds float64  `json:"seconds"`
}

// Verdicts.
const (
	VerdictReproduced   = "reproduced"
	VerdictProtected    = "protected"
	VerdictNotProtected = "NOT protected"
	VerdictSkipped      = "skipped"
	VerdictError        = "error"
)

// add judges r (against its baseline, which precedes it), appends it and
// returns it judged.
func (rep *Report) add(r Result) Result {
	if r.Workaround == Baseline {
		r.Reproducible = r.Injected && r.RSTFromNAT && r.Error == ""
	} else {
		for _, b := range rep.Results {
			if b.Workaround == Baseline && b.Family == r.Family && b.Case == r.Case {
				r.Reproducible = b.Reproducible
			}
		}
	}
	switch {
	case r.Error != "":
		r.Verdict = VerdictError
	case r.Workaround == Baseline && r.Reproducible:
		r.Verdict = VerdictReproduced
	case r.Workaround == Baseline:
		r.Verdict = fmt.Sprintf("not reproducible on this kernel (%s)", rep.Kernel)
		if r.Case == OldRetransmission && r.Note == "" {
			r.Note = "conntrack ignores overly delayed segments since Linux 6.1; older kernels mark this one invalid"
		}
	case !r.Reproducible:
		r.Skipped = true
		r.Verdict = VerdictSkipped
	default:
		r.Protected = r.Injected && !r.RSTFromNAT && r.DownloadOK
		r.Verdict = VerdictNotProtected
		if r.Protected {
			r.Verdict = VerdictProtected
		}
	}
	rep.Results = append(rep.Results, r)
	return r
}

// finish stamps the total duration.
func (rep Report) finish(start time.Time) Report {
	rep.Seconds = time.Since(start).Seconds()
	return rep
}

// OK reports whether every run completed and every mitigation protected
// every case its baseline reproduced. A case the kernel does not reproduce
// is not a failure.
func (rep Report) OK() bool {
	for _, r := range rep.Results {
		if r.Error != "" || (r.Workaround != Baseline && !r.Skipped && !r.Protected) {
			return false
		}
	}
	return true
}

// MarshalJSON encodes the report with its OK verdict as "ok".
func (rep Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		plain
		OK bool `json:"ok"`
	}{plain(rep), rep.OK()})
}

// WriteText writes the report as a table, the runs' details and a summary
// line.
func (rep Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tCASE\tWORKAROUND\tRST FROM NAT\tINVALID\tDOWNLOAD\tTIME\tVERDICT")
	for _, r := range rep.Results {
		if r.Skipped {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\n", r.Family, r.Case, r.Workaround, r.Verdict)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t+%d\t%s\t%.1fs\t%s\n", r.Family, r.Case, r.Workaround,
			yesNo(r.RSTFromNAT), r.InvalidDelta, download(r), r.Seconds, r.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		for _, d := range []struct{ label, text string }{
			{"injected", r.Segment}, {"note", r.Note}, {"download", r.DownloadError}, {"error", r.Error},
		} {
			if d.text != "" {
				fmt.Fprintf(w, "%s/%s/%s %s: %s\n", r.Family, r.Case, r.Workaround, d.label, d.text)
			}
		}
	}
	verdict := "OK"
	if !rep.OK() {
		verdict = "FAILED"
	}
	_, err := fmt.Fprintf(w, "kernel %s, %d runs in %.1fs: %s\n", rep.Kernel, len(rep.Results), rep.Seconds, verdict)
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// download summarises a run's download for the table.
func download(r Result) string {
	if r.DownloadOK {
		return "ok"
	}
	return fmt.Sprintf("failed (%d bytes)", r.DownloadBytes)
}
