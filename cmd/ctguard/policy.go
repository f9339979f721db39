package main

import (
	"encoding/json"
	"io"

	"github.com/ctguard/ctguard/policy"
	"github.com/spf13/cobra"
)

func newPolicyCommand(g *globals) *cobra.Command {
	var file string
	var output *outputFlag
	cmd := &cobra.Command{
		Use:   "policy [-f PATH] [-o yaml|json]",
		Short: "Validate policies and print them with every default filled in",
		Long: `Reads the policies as plan, apply and run read them, validates them and prints
the effective policies: every field the policies leave out filled in with its
default, as ctguard enforces them. It reads no kernel state and changes
nothing; it needs no privileges. -o yaml (the default) prints YAML documents
separated by "---" that -f reads back to the same policies; -o json prints a
JSON array of them. Exit status: 0 valid, 1 invalid (every problem is printed
with its file, line, policy and field path).
Without -f the embedded default policy is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			set, err := loadPolicies(file)
			if err != nil {
				return err
			}
			return writePolicies(g.out, output.format, set.Policies)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory (default: the embedded policy)")
	output = addOutputFlag(cmd, "", outputYAML, outputJSON)
	return cmd
}

// writePolicies renders the effective policies as YAML documents or a JSON
// array.
func writePolicies(w io.Writer, output string, ps []policy.Policy) error {
	var out []byte
	var err error
	if output == outputJSON {
		if ps == nil {
			ps = []policy.Policy{}
		}
		out, err = json.MarshalIndent(ps, "", "  ")
		out = append(out, '\n')
	} else {
		out, err = policy.Marshal(ps)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
