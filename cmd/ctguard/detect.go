package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ctguard/ctguard/controller/detect"
	"github.com/ctguard/ctguard/controller/evidence"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/incident"
	"github.com/ctguard/ctguard/controller/journal"
	"github.com/ctguard/ctguard/controller/nft"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/policy"
	"github.com/spf13/cobra"
)

// DefaultEvidenceGroup is the nfnetlink_log group of the evidence rules
// unless --evidence-group says otherwise.
const DefaultEvidenceGroup uint16 = 7302

func newDetectCommand(g *globals) *cobra.Command {
	var file string
	var output *outputFlag
	cmd := &cobra.Command{
		Use:   "detect [-f PATH] [-o text|json]",
		Short: "Name every connection this box resets on a conntrack-invalid segment, until interrupted",
		Long: `detect prints one line (or JSON object) per connection reset because conntrack
could not track a server's segment: the client behind the NAT, the server, the
box's NAT address and port, the segments' sequence numbers, the flow's conntrack
entry and the policies covering it. It mitigates nothing. It reads the evidence
rules of table inet ctguard when they are in force, else writes them to a table
of its own (inet ` + nft.EvidenceTableName + `), removed when it ends. -f names the policies
whose coverage to report (default: those ctguard applied, if any).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := output.check(); err != nil {
				return err
			}
			if g.evidence == 0 {
				return errors.New("--evidence-group: detect needs a group (1-65535)")
			}
			ps, err := detectPolicies(g, file)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDetect(ctx, g.evidence, ps, output.format, g.out, g.err)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "policy file or directory whose coverage to report")
	output = addOutputFlag(cmd, "json: one object per line", outputText, outputJSON)
	return cmd
}

// detectPolicies reads -f PATH, else the policies of the revision in force
// in --state-dir when there is one (without creating the directory).
func detectPolicies(g *globals, file string) ([]policy.Policy, error) {
	if file != "" {
		return policy.Load(file)
	}
	if _, err := os.Stat(g.stateDir); err != nil {
		return nil, nil
	}
	store, err := journal.Open(g.stateDir)
	if err != nil {
		return nil, err
	}
	j, err := store.Load()
	if err != nil {
		return nil, err
	}
	if r := j.Latest(); r != nil {
		return r.Policies, nil
	}
	return nil, nil
}

// runDetect watches until ctx ends, writing incidents to out and a summary
// to errOut.
func runDetect(ctx context.Context, group uint16, ps []policy.Policy, output string, out, errOut io.Writer) error {
	tables, err := nft.New(-1)
	if err != nil {
		return err
	}
	defer tables.Close()
	conn, err := flows.Open(-1)
	if err != nil {
		return err
	}
	defer conn.Close()
	log, _ := newLogger(errOut, "warn", "warn")
	enc := json.NewEncoder(out)
	w, err := detect.Open(detect.Config{NetNSFd: -1, Group: group, Conn: conn, Policies: ps, Logger: log, OnIncident: func(inc incident.Incident) {
		if output == outputJSON {
			_ = enc.Encode(inc)
		} else {
			fmt.Fprintln(out, incident.Text(inc))
		}
	}})
	if errors.Is(err, evidence.ErrGroupBusy) {
		return fmt.Errorf("%w: a running \"ctguard run\" reads group %d (its last incidents are in \"ctguard status\"); "+
			"to watch anyway, give detect another group: --evidence-group N", err, group)
	}
	if err != nil {
		return err
	}
	own := false
	t, err := tables.Read()
	if err == nil && t.EvidenceGroup() == group {
		own = true
		// A table a killed detect left behind would log every packet twice.
		if err := tables.DeleteEvidenceTable(); err != nil {
			return err
		}
		fmt.Fprintf(errOut, "ctguard detect: reading the evidence rules of table inet ctguard (group %d); Ctrl-C to stop\n", group)
	} else {
		if err := tables.ReplaceEvidenceTable(group); err != nil {
			return err
		}
		defer func() {
			if err := tables.DeleteEvidenceTable(); err != nil {
				fmt.Fprintf(errOut, "ctguard detect: %v\n", err)
			}
		}()
		fmt.Fprintf(errOut, "ctguard detect: evidence rules in table inet %s (group %d); Ctrl-C to stop\n", nft.EvidenceTableName, group)
	}
	runErr := w.Run(ctx)
	st := w.Stats()
	counted, _ := tables.EvidenceCounters(own)
	fmt.Fprintf(errOut, "ctguard detect: %d incidents; %d packets logged (invalid segments seen on input %d, forward %d; invalid RSTs sent %d), "+
		"%d log messages lost, %d buffer overruns, %d invalid segments without a reset\n",
		st.Incidents, st.Logged, counted[ruleset.HookInput].Packets, counted[ruleset.HookForward].Packets, counted[ruleset.HookOutput].Packets,
		st.Lost, st.Overruns, st.Unpaired)
	return runErr
}
