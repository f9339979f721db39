package main

import (
	"io"

	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/internal/version"
	"github.com/spf13/cobra"
)

// globals are the flags every subcommand shares, and the streams every
// command writes to (never os.Stdout or os.Stderr directly).
type globals struct {
	out, err io.Writer // results; messages and logs

	stateDir string
	logLevel string
	markBit  uint32
	queue    uint16
	evidence uint16
}

// newRootCommand returns the ctguard command writing results to out and
// messages, logs and help to errOut (cobra's own output follows its
// convention: help to out, errors to errOut).
func newRootCommand(out, errOut io.Writer) *cobra.Command {
	g := &globals{out: out, err: errOut}
	root := &cobra.Command{
		Use:   "ctguard",
		Short: "Stop a NAT box from resetting healthy TCP connections on conntrack-invalid packets",
		Long: `ctguard applies the two known workarounds for conntrack-invalid TCP segments on
NAT boxes (per-flow or global "be liberal", and a scoped ct state invalid drop)
from declarative policies, proves their effect with counters, and rolls them back.
It acts on the network namespace it runs in.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetOut(out)
	root.SetErr(errOut)
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", journal.DefaultDir, "directory of the rollback journal")
	root.PersistentFlags().Uint32Var(&g.markBit, "mark-bit", uint32(flows.DefaultMarkBit), "conntrack mark bit ctguard owns: set on the flows it flags, used by rollback to find them (use the same value for every command)")
	root.PersistentFlags().Uint16Var(&g.queue, "gate-queue", ruleset.DefaultQueue, "NFQUEUE number of the handshake gate (perFlow policies with handshake gate; use the same value for every command)")
	root.PersistentFlags().Uint16Var(&g.evidence, "evidence-group", DefaultEvidenceGroup, "nfnetlink_log group of the evidence rules (what detect and run's incident ring read; 0: no evidence rules; use the same value for every command)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default: info for run and lab, warn otherwise)")
	root.AddCommand(
		newPlanCommand(g),
		newApplyCommand(g),
		newStatusCommand(g),
		newRollbackCommand(g),
		newRunCommand(g),
		newLabCommand(g),
		newVersionCommand(g),
		newDetectCommand(g),
		newPolicyCommand(g),
	)
	return root
}
