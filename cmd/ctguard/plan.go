package main

import (
	"fmt"
	"os"

	"github.com/ctguard/ctguard/controller/plan"
	"github.com/spf13/cobra"
)

func newPlanCommand(g *globals) *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "plan [-f PATH] [-o text|json]",
		Short: "Show what apply would change; change nothing",
		Long: `Reads the kernel and prints what apply would change, changing nothing.
Exit status: 0 no changes, 2 changes pending, 1 error.
Without -f the embedded default policy is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			set, s, err := openWithPolicies(g, file)
			if err != nil {
				return err
			}
			defer s.close()
			p, err := s.Plan(cmd.Context(), set)
			if err != nil {
				return err
			}
			if err := writePlan(output, p); err != nil {
				return err
			}
			if !p.Empty() {
				return exitCodeError(exitChanges)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory (default: the embedded policy)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// checkOutput validates -o before anything is read.
func checkOutput(output string) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("-o: %q is not one of text, json", output)
	}
	return nil
}

func writePlan(output string, p plan.Plan) error {
	if output == "json" {
		return plan.WriteJSON(os.Stdout, p)
	}
	return plan.WriteText(os.Stdout, p)
}
