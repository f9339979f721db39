package main

import (
	"io"

	"github.com/ctguard/ctguard/controller/plan"
	"github.com/spf13/cobra"
)

func newPlanCommand(g *globals) *cobra.Command {
	var file string
	var output *outputFlag
	cmd := &cobra.Command{
		Use:   "plan [-f PATH] [-o text|json|yaml]",
		Short: "Show what apply would change; change nothing",
		Long: `Reads the kernel and prints what apply would change, changing nothing.
Exit status: 0 no changes, 2 changes pending, 1 error.
Without -f the embedded default policy is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
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
			if err := writePlan(g.out, output.format, p); err != nil {
				return err
			}
			if !p.Empty() {
				return exitCodeError(exitChanges)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory (default: the embedded policy)")
	output = addOutputFlag(cmd, "", outputText, outputJSON, outputYAML)
	return cmd
}

// writePlan renders a plan in the -o format.
func writePlan(w io.Writer, output string, p plan.Plan) error {
	return writeView(w, output, view{
		text: func(w io.Writer) error { return plan.WriteText(w, p) },
		json: func(w io.Writer) error { return plan.WriteJSON(w, p) },
	})
}
