package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/lab/handshake"
)

// Result is what one run observed: one family, one case, one workaround.
type Result struct {
	Family     Family `json:"family"`
	Case       Case   `json:"case"`
	Topology   NAT    `json:"topology"`   // the NAT box's translation
	Workaround string `json:"workaround"` // "none" for the baseline

	Injected      bool   `json:"injected"`          // the crafted segment was sent mid-transfer
	Segment       string `json:"segment,omitempty"` // what was sent
	RSTFromNAT    bool   `json:"rstFromNAT"`        // the NAT box sent its own RST to the server
	InvalidDelta  uint64 `json:"invalidDelta"`      // growth of conntrack's invalid statistic in the NAT namespace
	DownloadOK    bool   `json:"downloadOK"`        // the download completed with the right size and sha256
	DownloadBytes int64  `json:"downloadBytes"`
	DownloadError string `json:"downloadError,omitempty"`
	Tool          string `json:"tool,omitempty"` // "wget" or "go"
	// Handshake is the handshake case's count of connections reset.
	Handshake *HandshakeResult `json:"handshake,omitempty"`
	// Incidents are what "ctguard detect" printed on the NAT box during
	// the run: the connections reset, naming client and server.
	Incidents []incident.Incident `json:"incidents"`

	Reproducible bool    `json:"reproducible"` // the baseline of this family and case got the NAT's RST
	Protected    bool    `json:"protected"`    // a mitigation run: no RST from the NAT and the download survived
	Skipped      bool    `json:"skipped"`      // a mitigation not run because the baseline did not reproduce
	Verdict      string  `json:"verdict"`
	Note         string  `json:"note,omitempty"`
	Error        string  `json:"error,omitempty"` // the run could not complete (mitigation failed to apply, no injection)
	Seconds      float64 `json:"seconds"`
}

// HandshakeResult is what the handshake case's client and server saw.
type HandshakeResult struct {
	handshake.Outcome
	Injected     int64 `json:"injected"`     // crafted segments the server sent
	ServerResets int64 `json:"serverResets"` // connections whose server end was reset
}

// Report is the outcome of Run.
type Report struct {
	Kernel  string   `json:"kernel"` // release of the kernel the lab ran on
	Results []Result `json:"results"`
	Seconds float64  `json:"seconds"`
	// Error is why the lab stopped before it ran everything; a report with
	// one is never OK.
	Error string `json:"error,omitempty"`
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
// returns it judged. A baseline proves a kernel verdict only when its
// control run worked: the segment was sent and the connection otherwise
// behaved; anything else is an error, never "not reproducible".
func (rep *Report) add(r Result) Result {
	if r.Workaround == Baseline {
		if r.Error == "" {
			r.Error = controlFailure(r)
		}
		r.Reproducible = r.Injected && r.Error == "" && wasReset(r)
	} else {
		for _, b := range rep.Results {
			if b.Workaround == Baseline && b.Family == r.Family && b.Case == r.Case && b.Topology == r.Topology {
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
		r.Protected = protected(r)
		r.Verdict = VerdictNotProtected
		if r.Protected {
			r.Verdict = VerdictProtected
		}
	}
	rep.Results = append(rep.Results, r)
	return r
}

// controlFailure explains why a baseline run proves nothing about the
// kernel, or returns "" when it does.
func controlFailure(r Result) string {
	switch {
	case r.Handshake != nil:
		if r.Handshake.Injected == 0 {
			return "control run: the server sent no crafted segment"
		}
		return ""
	case !r.Injected:
		return "control run: no segment was injected"
	case !r.RSTFromNAT && !r.DownloadOK:
		return fmt.Sprintf("control run: the download failed without a RST from the NAT: %s", r.DownloadError)
	}
	return ""
}

// wasReset reports whether the run's connection(s) were reset.
func wasReset(r Result) bool {
	if r.Handshake != nil {
		return r.Handshake.Reset > 0
	}
	return r.RSTFromNAT
}

// protected reports whether a mitigation run kept every connection alive.
func protected(r Result) bool {
	if h := r.Handshake; h != nil {
		return h.Reset == 0 && h.ConnectFailed == 0 && h.OK == h.Conns && h.Injected == int64(h.Conns)
	}
	return r.Injected && !r.RSTFromNAT && r.DownloadOK
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
	if rep.Error != "" || len(rep.Results) == 0 {
		return false
	}
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
	fmt.Fprintln(tw, "FAMILY\tTOPOLOGY\tCASE\tWORKAROUND\tRESET\tRST FROM NAT\tINVALID\tDOWNLOAD\tSETUP P50/P99\tTIME\tVERDICT")
	for _, r := range rep.Results {
		if r.Skipped {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", r.Family, r.Topology, r.Case, r.Workaround, r.Verdict)
			continue
		}
		resets, rst, dl, setup := "-", yesNo(r.RSTFromNAT), download(r), "-"
		if h := r.Handshake; h != nil {
			resets = fmt.Sprintf("%d/%d", h.Reset, h.Conns)
			rst, dl = "-", "-"
			setup = fmt.Sprintf("%s/%s", ms(h.SetupP50), ms(h.SetupP99))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t+%d\t%s\t%s\t%.1fs\t%s\n", r.Family, r.Topology, r.Case, r.Workaround,
			resets, rst, r.InvalidDelta, dl, setup, r.Seconds, r.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		for _, d := range []struct{ label, text string }{
			{"injected", r.Segment}, {"note", r.Note}, {"download", r.DownloadError}, {"error", r.Error}, {"ctguard detect", detected(r)},
		} {
			if d.text != "" {
				fmt.Fprintf(w, "%s/%s/%s/%s %s: %s\n", r.Family, r.Topology, r.Case, r.Workaround, d.label, d.text)
			}
		}
	}
	verdict := "OK"
	if !rep.OK() {
		verdict = "FAILED"
	}
	if rep.Error != "" {
		verdict = "FAILED: " + rep.Error
	}
	_, err := fmt.Fprintf(w, "kernel %s, %d runs in %.1fs: %s\n", rep.Kernel, len(rep.Results), rep.Seconds, verdict)
	return err
}

// detected summarises the incidents of a run that ran: none, or how many
// and the first.
func detected(r Result) string {
	switch {
	case r.Skipped:
		return ""
	case len(r.Incidents) == 0:
		return "no incident"
	case len(r.Incidents) == 1:
		return "1 incident: " + incident.Text(r.Incidents[0])
	}
	return fmt.Sprintf("%d incidents; first: %s", len(r.Incidents), incident.Text(r.Incidents[0]))
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

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
