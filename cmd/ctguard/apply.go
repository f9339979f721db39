package main

import (
	"fmt"
	"os"

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
			if err := plan.WriteText(os.Stdout, res.Plan); err != nil {
				return err
			}
			fmt.Printf("Applied revision %d from %s", res.Revision, set.Source)
			if res.FlaggedExisting > 0 {
				fmt.Printf("; flagged %d existing flows", res.FlaggedExisting)
			}
			if res.ClearedStale > 0 {
				fmt.Printf("; cleared ctguard's flag on %d flows no policy wants any more", res.ClearedStale)
			}
			fmt.Println(".")
			for _, p := range set.Policies {
				if p.IsPerFlow() {
					fmt.Println(`Note: perFlow policies flag new flows only while "ctguard run" is running.`)
					break
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory (default: the embedded policy)")
	return cmd
}
