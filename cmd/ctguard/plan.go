package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ctguard/ctguard/controller/plan"
	"github.com/spf13/cobra"
)

func newPlanCommand(g *globals) *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "plan [-f PATH] [-o text|json|yaml]",
		Short: "Show what apply would change; change nothing",
		Long: `Reads the kernel and prints what apply would change, changing nothing.
Exit status: 0 no changes, 2 changes pending, 1 error.
Without -f the embedded default policy is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "yaml"); err != nil {
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
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

// checkOutput validates -o before anything is read: text and json, and
// the formats in more.
func checkOutput(output string, more ...string) error {
	formats := append([]string{"text", "json"}, more...)
	if !slices.Contains(formats, output) {
		return errOutput(output, formats...)
	}
	return nil
}

// errOutput is the error for an -o that is not one of formats.
func errOutput(output string, formats ...string) error {
	return fmt.Errorf("-o: %q is not one of %s", output, strings.Join(formats, ", "))
}

func writePlan(output string, p plan.Plan) error {
	switch output {
	case "json":
		return plan.WriteJSON(os.Stdout, p)
	case "yaml":
		return plan.WriteYAML(os.Stdout, p)
	}
	return plan.WriteText(os.Stdout, p)
}
