package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/spf13/cobra"
)

func newStatusCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [-o text|json]",
		Short: "Show what is applied and what its counters prove",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			s, err := openSession(g)
			if err != nil {
				return err
			}
			defer s.close()
			st, err := s.Status(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return writeStatus(os.Stdout, st)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// writeStatus renders a Status for people.
func writeStatus(w io.Writer, st controller.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Kernel:\t%s\n", st.Kernel)
	fmt.Fprintf(tw, "Namespace:\t%s\n", st.NetNS)
	if r := st.Revision; r != nil {
		fmt.Fprintf(tw, "Revision:\t%d, applied %s from %s\n", r.Number, r.AppliedAt.Format(time.RFC3339), r.Source)
		fmt.Fprintf(tw, "Policies:\t%s\n", strings.Join(r.Policies, ", "))
	} else {
		fmt.Fprintf(tw, "Revision:\tnone (nothing applied)\n")
	}
	if st.Interrupted {
		fmt.Fprintf(tw, "Warning:\tthe last apply or rollback was interrupted; run it again\n")
	}
	table := "absent"
	if st.TablePresent {
		table = "present"
	}
	if st.Drift {
		table += ", DRIFTED from the applied policies (apply again, or let ctguard run repair it)"
	} else if st.TablePresent {
		table += ", in sync"
	}
	fmt.Fprintf(tw, "Table inet ctguard:\t%s\n", table)
	liberal := st.BeLiberal
	if st.BeLiberalBaseline != "" {
		liberal += " (before ctguard: " + st.BeLiberalBaseline + ")"
	}
	fmt.Fprintf(tw, "Sysctl %s:\t%s\n", sysctl.BeLiberal, liberal)
	fmt.Fprintf(tw, "Conntrack invalid (all CPUs):\t%d\n", st.ConntrackInvalid)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Rules) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tCHAIN\tRULE\tFAMILY\tPACKETS\tBYTES")
	for _, r := range st.Rules {
		family := r.Family
		if family == "" {
			family = "any"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", r.Policy, r.Chain, describePurpose(r.Purpose), family, r.Packets, r.Bytes)
	}
	return tw.Flush()
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
	}
	return purpose
}
