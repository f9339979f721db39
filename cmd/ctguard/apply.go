package main

import (
	"fmt"
	"io"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/plan"
	"github.com/spf13/cobra"
)

func newApplyCommand(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply [-f PATH]",
		Short: "Validate the policies, then apply all changes atomically",
		Long: `Validates every policy first; then journals the current state and applies the
nftables changes in one atomic batch, the sysctl, and the per-flow flags of
existing flows. Applying the same policies twice changes nothing.
perFlow policies flag NEW flows only while "ctguard run" is running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, s, err := openWithPolicies(g, file)
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.Apply(cmd.Context(), set)
			if err != nil {
				return err
			}
			return writeApplied(g.out, set, res)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory (default: the embedded policy)")
	return cmd
}

// writeApplied reports what apply did.
func writeApplied(w io.Writer, set controller.PolicySet, res controller.ApplyResult) error {
	if err := plan.WriteText(w, res.Plan); err != nil {
		return err
	}
	line := fmt.Sprintf("Applied revision %d from %s", res.Revision, set.Source)
	if res.FlaggedExisting > 0 {
		line += fmt.Sprintf("; flagged %d existing flows", res.FlaggedExisting)
	}
	if res.ClearedStale > 0 {
		line += fmt.Sprintf("; cleared ctguard's flag on %d flows no policy wants any more", res.ClearedStale)
	}
	if _, err := fmt.Fprintln(w, line+"."); err != nil {
		return err
	}
	for _, p := range set.Policies {
		if p.IsPerFlow() {
			_, err := fmt.Fprintln(w, `Note: perFlow policies flag new flows only while "ctguard run" is running.`)
			return err
		}
	}
	return nil
}
