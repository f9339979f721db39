package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/spf13/cobra"
)

func newStatusCommand(g *globals) *cobra.Command {
	var output *outputFlag
	cmd := &cobra.Command{
		Use:   "status [-o text|json|yaml]",
		Short: "Show what is applied and what its counters prove",
		Long: `Shows what is applied and what its counters prove. Exit status: 0 in force
(or nothing applied), 3 drifted (the table or sysctl differs from the revision
in force), 4 failing (an interrupted apply, or the running controller's
reconcile fails, its policy is rejected, or it is stuck), 1 error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			s, err := openSession(g, "warn")
			if err != nil {
				return err
			}
			defer s.close()
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			if err := writeView(g.out, output.format, statusView(st, time.Now())); err != nil {
				return err
			}
			return statusExit(st.State)
		},
	}
	output = addOutputFlag(cmd, "", outputText, outputJSON, outputYAML)
	return cmd
}

// statusView is a Status in every -o format; now dates the controller's
// last update.
func statusView(st controller.Status, now time.Time) view {
	return view{value: st, text: func(w io.Writer) error { return writeStatus(w, st, now) }}
}

// writeStatus renders a Status for people.
func writeStatus(w io.Writer, st controller.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "State:\t%s\n", st.State)
	for _, p := range st.Problems {
		fmt.Fprintf(tw, "\t- %s\n", p)
	}
	fmt.Fprintf(tw, "Kernel:\t%s\n", st.Kernel)
	for _, note := range st.KernelNotes {
		fmt.Fprintf(tw, "\t- %s\n", note)
	}
	fmt.Fprintf(tw, "Namespace:\t%s\n", st.NetNS)
	if st.JournalError != "" {
		fmt.Fprintf(tw, "Journal:\t%s\n", st.JournalError)
	}
	if r := st.Revision; r != nil {
		fmt.Fprintf(tw, "Revision:\t%d, applied %s from %s\n", r.Number, r.AppliedAt.Format(time.RFC3339), r.Source)
		fmt.Fprintf(tw, "Policies:\t%s\n", strings.Join(r.Policies, ", "))
	} else {
		fmt.Fprintf(tw, "Revision:\tnone (nothing applied)\n")
	}
	if st.Interrupted {
		fmt.Fprintf(tw, "Warning:\tthe last apply or rollback was interrupted; run it again\n")
	}
	fmt.Fprintf(tw, "Table inet ctguard:\t%s\n", tableState(st))
	if st.ForeignTable != "" {
		fmt.Fprintf(tw, "\t%s\n", st.ForeignTable)
	}
	liberal := strconv.Itoa(st.BeLiberal)
	if st.BeLiberalBaseline != nil {
		liberal += " (before ctguard: " + strconv.Itoa(*st.BeLiberalBaseline) + ")"
	}
	fmt.Fprintf(tw, "Sysctl %s:\t%s\n", sysctl.BeLiberal, liberal)
	fmt.Fprintf(tw, "Conntrack invalid (all CPUs):\t%d\n", st.ConntrackInvalid)
	fmt.Fprintf(tw, "Controller (ctguard run):\t%s\n", controllerState(st, now))
	if st.GateFallback {
		fmt.Fprintf(tw, "Handshake gate:\tFALLEN BACK to guard rules (the kernel or the queue refused the gate)\n")
	}
	if st.Live != nil && st.Live.Gate != nil {
		fmt.Fprintf(tw, "Handshake gate:\t%s\n", gateState(st.Live.Gate))
	}
	if st.Live != nil && st.Live.Incidents != nil {
		in := st.Live.Incidents
		fmt.Fprintf(tw, "Incidents (connections reset):\t%d since the controller started; evidence log group %d %s: %d packets read, %d messages lost, %d overruns\n",
			in.Total, in.Group, in.State, in.Logged, in.Lost, in.Overruns)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Live != nil && st.Live.Incidents != nil && len(st.Live.Incidents.Last) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "LAST %d INCIDENTS (oldest first)\n", len(st.Live.Incidents.Last))
		for _, inc := range st.Live.Incidents.Last {
			fmt.Fprintln(w, incident.Text(inc))
		}
	}
	if len(st.Rules) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "POLICY\tCHAIN\tCOUNTS\tFAMILY\tPACKETS\tBYTES")
		for _, r := range st.Rules {
			family := r.Family
			if family == "" {
				family = "any"
			}
			pol := r.Policy
			if pol == "" {
				pol = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", pol, r.Chain, describePurpose(r.Purpose), family, r.Packets, r.Bytes)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if st.Live == nil || len(st.Live.Engine.Policies) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// The columns: the per-policy counters of perflow.Counters.
	fmt.Fprint(tw, "PER-FLOW POLICY")
	for _, c := range perflow.Counters {
		if c.PerPolicy {
			fmt.Fprint(tw, "\t", c.Column)
		}
	}
	fmt.Fprintln(tw)
	for _, name := range slices.Sorted(maps.Keys(st.Live.Engine.Policies)) {
		p := st.Live.Engine.Policies[name]
		fmt.Fprint(tw, name)
		for i, c := range perflow.Counters {
			if c.PerPolicy {
				fmt.Fprint(tw, "\t", p.Get(perflow.Counter(i)))
			}
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// tableState describes the table's presence and drift.
func tableState(st controller.Status) string {
	state := "absent"
	if st.TablePresent {
		state = "present"
	}
	if st.Drift {
		return state + ", DRIFTED from the applied policies (apply again, or let ctguard run repair it)"
	}
	if st.TablePresent {
		state += ", in sync"
	}
	return state
}

// controllerState describes the last status a "ctguard run" published.
func controllerState(st controller.Status, now time.Time) string {
	live := st.Live
	if live == nil {
		return "never ran with this state directory"
	}
	state := fmt.Sprintf("last update %s ago", now.Sub(live.UpdatedAt).Round(time.Second))
	if st.ControllerRunning {
		state = fmt.Sprintf("running (pid %d in its namespace, policy generation %d), %s", live.PID, live.Generation, state)
	} else {
		state = "not running, " + state
	}
	state += fmt.Sprintf("; flows seen %d, events lost %d, resyncs %d", live.Engine.FlowsSeen, live.Engine.EventsLost, live.Engine.Resyncs)
	if live.LastError != "" {
		state += "; last error: " + live.LastError
	}
	return state
}

// gateState describes the handshake gate of a live status.
func gateState(g *controller.GateStatus) string {
	state := g.State
	if g.Encoding != "" {
		state += " (" + g.Encoding + ")"
	}
	if g.Reason != "" {
		state += ": " + g.Reason
	}
	c := g.Counters
	return state + fmt.Sprintf("; queue %d: queued %d, flagged %d, already liberal %d, not selected %d, gone %d, errors %d, overflows %d",
		c.Queue, c.Queued, c.Flagged, c.AlreadyLiberal, c.NotSelected, c.Gone, c.Errors, c.ReceiveErrors)
}

// describePurpose names what a rule's counter counts.
func describePurpose(purpose string) string {
	switch purpose {
	case string(ruleset.PurposeDropInvalid):
		return "invalid TCP dropped"
	case string(ruleset.PurposeCountInvalid):
		return "invalid TCP reaching the box (missed)"
	case string(ruleset.PurposeCountInvalidRST):
		return "RSTs this box sent for invalid packets"
	case string(ruleset.PurposeGate):
		return "SYN-ACKs held by the gate until flagged"
	case string(ruleset.PurposeGuard):
		return "invalid TCP dropped (handshake guard)"
	case string(ruleset.PurposeEvidence):
		return "evidence: invalid TCP (output: RSTs) seen, sampled to the log"
	}
	return purpose
}

// statusExit turns a state into the exit status (nil for 0).
func statusExit(s controller.State) error {
	switch s {
	case controller.StateFailing:
		return exitCodeError(exitFailing)
	case controller.StateDrifted:
		return exitCodeError(exitDrifted)
	}
	return nil
}
