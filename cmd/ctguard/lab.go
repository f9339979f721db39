package main

import (
	"fmt"
	"log/slog"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ctguard/ctguard/lab"
	"github.com/ctguard/ctguard/lab/mitigate"
	"github.com/spf13/cobra"
)

func newLabCommand(g *globals) *cobra.Command {
	var workaround, family string
	var output *outputFlag
	var cases []string
	cmd := &cobra.Command{
		Use:   "lab [--workaround all|none|liberal|liberal-global|dropInvalid] [--family ipv4|ipv6|both] [-o text|json]",
		Short: "Reproduce the incident on this kernel and prove each workaround",
		Long: `Builds client -- nat -- server network namespaces of its own (nothing outside
them is touched, and they are removed on exit or Ctrl-C), runs a real download
through the NAT, injects crafted server segments mid-transfer, and reports for
each case, family and workaround whether the NAT box sent its RST, how
conntrack's invalid counter moved and whether the download survived.
Exit status 0 when every selected workaround protected every case that
reproduced without one; "not reproducible on this kernel" is a result.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			log, err := newLogger(g.err, g.logLevel, "info")
			if err != nil {
				return err
			}
			opts := lab.Options{Logger: log}
			if opts.Families, err = labFamilies(family); err != nil {
				return err
			}
			if opts.Mitigations, err = labWorkarounds(workaround, log); err != nil {
				return err
			}
			for _, c := range cases {
				opts.Cases = append(opts.Cases, lab.Case(c))
			}
			if path, err := exec.LookPath("wget"); err == nil {
				opts.WgetPath = path
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, runErr := lab.Run(ctx, opts)
			if len(rep.Results) > 0 || runErr == nil {
				// Print what ran, also when the lab stopped half-way.
				if err := writeView(g.out, output.format, view{value: rep, text: rep.WriteText}); err != nil {
					return err
				}
			}
			if runErr != nil {
				return runErr
			}
			if !rep.OK() {
				return exitCodeError(exitError)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&workaround, "workaround", "all", "all, none, liberal, liberal-global or dropInvalid")
	fl.StringVar(&family, "family", "both", "ipv4, ipv6 or both")
	fl.StringSliceVar(&cases, "case", nil, "cases to run: old-retransmission, beyond-window (default: both)")
	output = addOutputFlag(cmd, "", outputText, outputJSON)
	return cmd
}

func labFamilies(family string) ([]lab.Family, error) {
	switch family {
	case "both":
		return []lab.Family{lab.IPv4, lab.IPv6}, nil
	case "ipv4":
		return []lab.Family{lab.IPv4}, nil
	case "ipv6":
		return []lab.Family{lab.IPv6}, nil
	}
	return nil, fmt.Errorf("--family: %q is not one of ipv4, ipv6, both", family)
}

func labWorkarounds(name string, log *slog.Logger) ([]lab.Mitigation, error) {
	switch name {
	case "all":
		return mitigate.All(log), nil
	case lab.Baseline:
		return nil, nil
	}
	if m := mitigate.ByName(name, log); m != nil {
		return []lab.Mitigation{m}, nil
	}
	return nil, fmt.Errorf("--workaround: %q is not one of all, none, %s", name,
		strings.Join([]string{mitigate.Liberal, mitigate.LiberalGlobal, mitigate.DropInvalid}, ", "))
}
