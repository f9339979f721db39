package main

import (
	"fmt"
	"io"

	"github.com/ctguard/ctguard/internal/version"
	"github.com/spf13/cobra"
)

func newVersionCommand(g *globals) *cobra.Command {
	var output *outputFlag
	cmd := &cobra.Command{
		Use:   "version [-o text|json]",
		Short: "Print ctguard's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := output.check(); err != nil {
				return err
			}
			v := version.Get()
			return writeView(g.out, output.format, view{value: v, text: func(w io.Writer) error {
				_, err := fmt.Fprintln(w, v)
				return err
			}})
		},
	}
	output = addOutputFlag(cmd, "", outputText, outputJSON)
	return cmd
}
