package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/ctguard/ctguard/controller"
	"github.com/spf13/cobra"
)

func newRollbackCommand(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "rollback [--all]",
		Short: "Restore the state before the last apply (--all: before the first)",
		Long: `Restores the state before the last apply. With --all, removes everything
ctguard ever applied in this namespace (its table, its sysctl changes, the
per-flow flags it set) and leaves the box exactly as before the first apply.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := openSession(g, "warn")
			if err != nil {
				return err
			}
			defer s.close()
			res, err := s.Rollback(cmd.Context(), all)
			if err != nil {
				return err
			}
			return writeRolledBack(g.out, res)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove everything ctguard ever applied")
	return cmd
}

// writeRolledBack reports what rollback did.
func writeRolledBack(w io.Writer, res controller.RollbackResult) error {
	var b strings.Builder
	if res.ForeignTableKept {
		b.WriteString("Left table inet ctguard alone: ctguard did not create it (see ctguard status).\n")
	}
	if res.ToRevision == 0 {
		fmt.Fprintf(&b, "Removed everything ctguard applied; cleared the flag on %d flows.\n", res.ClearedFlows)
	} else {
		fmt.Fprintf(&b, "Rolled back: the previous policies are in force again as revision %d", res.ToRevision)
		if res.ClearedFlows > 0 {
			fmt.Fprintf(&b, "; cleared the flag on %d flows", res.ClearedFlows)
		}
		b.WriteString(".\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
