// Package mitigate applies ctguard's workarounds inside a lab's NAT
// namespace with ctguard's own code: either the ctguard binary ("ctguard
// run", exactly what an operator runs) or, in test binaries, the
// controller's Run loop in-process (journal, nftables batch, sysctl,
// per-flow engine). Each has a state directory of its own and is rolled
// back completely when the lab run ends. The policies are YAML documents
// parsed by the policy package, so a workaround exercises whatever that
// package makes of them.
package mitigate

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/lab"
	"github.com/ctguard/ctguard/lab/topo"
	"github.com/ctguard/ctguard/policy"
)

// Names of the workarounds, as "ctguard lab --workaround" takes them.
const (
	// Liberal is the per-flow liberal flag with the policy's default
	// handshake protection.
	Liberal = "liberal"
	// LiberalGate is per-flow liberal with "handshake: gate" (the SYN-ACK
	// waits in an NFQUEUE until the flow is flagged).
	LiberalGate = "liberal-gate"
	// LiberalGuard is per-flow liberal with "handshake: guard" (invalid
	// packets from the policy's servers are dropped, not only counted).
	LiberalGuard = "liberal-guard"
	// LiberalEvents is per-flow liberal with "handshake: none": flags
	// from conntrack events alone, racing the server's first segment.
	LiberalEvents = "liberal-events"
	// LiberalGlobal is the global sysctl.
	LiberalGlobal = "liberal-global"
	// DropInvalid drops invalid packets on the input hook (SNAT) or the
	// forward hook (DNAT).
	DropInvalid = "dropInvalid"
)

// Names lists every workaround name ByName knows.
var Names = []string{Liberal, LiberalGate, LiberalGuard, LiberalEvents, LiberalGlobal, DropInvalid}

// All returns the workarounds "ctguard lab" runs by default, in report
// order. LiberalEvents, which loses the handshake race by design, runs
// only when named: the lab's verdict is about the configurations an
// operator should use.
func All(log *slog.Logger) []lab.Mitigation {
	var out []lab.Mitigation
	for _, n := range []string{Liberal, LiberalGate, LiberalGuard, LiberalGlobal, DropInvalid} {
		out = append(out, ByName(n, log))
	}
	return out
}

// ByName returns the named workaround, or nil for an unknown name. In the
// ctguard binary it runs that binary's "run" command; elsewhere (a test
// binary) the controller in-process.
func ByName(name string, log *slog.Logger) lab.Mitigation {
	return newWorkaround(name, selfBinary(), log)
}

// Binary returns the named workaround run by the ctguard binary at path
// ("ctguard run" in the NAT namespace), or nil for an unknown name.
func Binary(name, path string, log *slog.Logger) lab.Mitigation {
	if path == "" {
		return nil
	}
	return newWorkaround(name, path, log)
}

func newWorkaround(name, binary string, log *slog.Logger) lab.Mitigation {
	known := false
	for _, n := range Names {
		known = known || n == name
	}
	if !known {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return workaround{name: name, binary: binary, log: log}
}

// mainPackage is the import path of ctguard's main package.
const mainPackage = "github.com/ctguard/ctguard/cmd/ctguard"

// selfBinary returns the running executable when it is the ctguard
// binary, "" otherwise.
func selfBinary() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Path != mainPackage {
		return ""
	}
	path, err := os.Executable()
	if err != nil {
		return ""
	}
	return path
}

// perFlowDoc is a per-flow liberal policy on the REPLY direction with an
// optional handshake and extra match lines.
func perFlowDoc(name, handshake, match string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  workaround: liberal\n", policy.APIVersion, policy.Kind, name)
	b.WriteString("  liberal:\n    scope: perFlow\n    directions: [reply]\n")
	if handshake != "" {
		fmt.Fprintf(&b, "    handshake: %s\n", handshake)
	}
	b.WriteString("  match:\n    family: any\n" + match)
	return b.String()
}

// Document returns the policy document of workaround name for a NAT box of
// the given kind.
func Document(name string, kind topo.NAT) (string, error) {
	pname := "lab-" + strings.ToLower(name)
	match := ""
	if kind == topo.DNAT {
		match = "    nat: [dnat]\n" // the destination-NATed flows
	}
	switch name {
	case Liberal:
		return perFlowDoc(pname, "", match), nil
	case LiberalGate:
		return perFlowDoc(pname, "gate", match), nil
	case LiberalGuard:
		return perFlowDoc(pname, "guard", match), nil
	case LiberalEvents:
		return perFlowDoc(pname, "none", match), nil
	case LiberalGlobal:
		return fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  workaround: liberal\n  liberal:\n    scope: global\n",
			policy.APIVersion, policy.Kind, pname), nil
	case DropInvalid:
		hook := policy.HookInput
		if kind == topo.DNAT {
			hook = policy.HookForward
		}
		return fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  workaround: dropInvalid\n  dropInvalid:\n    hooks: [%s]\n",
			policy.APIVersion, policy.Kind, pname, hook), nil
	}
	return "", fmt.Errorf("unknown workaround %q (want one of %s)", name, strings.Join(Names, ", "))
}

// workaround runs ctguard's controller with a fixed policy in the NAT
// namespace for the duration of one lab run.
type workaround struct {
	name   string
	binary string // the ctguard binary; "" runs the controller in-process
	log    *slog.Logger
}

// Name implements lab.Mitigation.
func (w workaround) Name() string { return w.name }

// Apply implements lab.Mitigation for an SNAT box.
func (w workaround) Apply(ctx context.Context, nat lab.Namespace) (func() error, error) {
	return w.ApplyNAT(ctx, nat, topo.SNAT)
}

// ApplyNAT implements lab.NATMitigation: it starts ctguard with the
// workaround's policy for a box of the given kind and returns once the
// policy is applied and the per-flow engine listens; stop ends ctguard,
// which removes everything it applied.
func (w workaround) ApplyNAT(ctx context.Context, nat lab.Namespace, kind topo.NAT) (func() error, error) {
	doc, err := Document(w.name, kind)
	if err != nil {
		return nil, err
	}
	policies, err := policy.Parse("lab-"+w.name+".yaml", []byte(doc))
	if err != nil {
		// A handshake variant on a build whose policy package lacks the
		// field ends here, with the policy package's own message.
		return nil, fmt.Errorf("%s policy: %w", w.name, err)
	}
	if w.binary != "" {
		p, err := StartRun(ctx, w.binary, nat, doc, w.log)
		if err != nil {
			return nil, err
		}
		return p.Stop, nil
	}
	return w.inProcess(ctx, nat, policies)
}

// inProcess runs the controller's Run loop in nat with policies.
func (w workaround) inProcess(ctx context.Context, nat lab.Namespace, policies []policy.Policy) (func() error, error) {
	dir, err := os.MkdirTemp("", "ctguard-lab-state-")
	if err != nil {
		return nil, err
	}
	k, err := controller.Open(nat.Fd(), dir, flows.DefaultMarkBit, w.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ready := make(chan struct{})
	engine, err := perflow.New(perflow.Config{
		Conn:    perflow.FromFlows(k.Conntrack),
		Logger:  w.log,
		OnReady: func() { close(ready) },
	})
	if err != nil {
		k.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() {
		done <- k.Run(runCtx, controller.RunConfig{
			Load: func() (controller.PolicySet, error) {
				return controller.PolicySet{Source: "lab", Policies: policies}, nil
			},
			Resync:        time.Minute,
			Engine:        engine,
			Metrics:       metrics.New(),
			CleanupOnExit: true,
		})
	}()
	stop := func() error {
		cancel()
		err := <-done
		k.Close()
		os.RemoveAll(dir)
		return err
	}
	select {
	case <-ready:
		return stop, nil
	case err := <-done:
		done <- err
		stop()
		return nil, fmt.Errorf("%s: %w", w.name, err)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}
