package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ctguard/ctguard/controller"
	"github.com/ctguard/ctguard/controller/flows"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/watch"
	"github.com/spf13/cobra"
)

// runFlags are the flags of "ctguard run".
type runFlags struct {
	file          string
	metricsAddr   string
	resync        time.Duration
	cleanupOnExit bool
	eventBuffer   int
}

func newRunCommand(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run [-f PATH] [--metrics-addr ADDR] [--resync 30s]",
		Short: "Keep the kernel in the policies' state (the long-running controller)",
		Long: `Applies the policies, flags the flows perFlow policies select as conntrack
creates them, and repairs drift on every policy change, resync tick and change
to ctguard's nftables table. A bad policy at start exits 1 with nothing
applied; a bad edit later is logged and counted and the last good policy stays
in force. SIGHUP reloads. SIGTERM/SIGINT stop and leave the mitigation in
place (unless --cleanup-on-exit). Without -f the embedded default policy runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runController(cmd.Context(), g, f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "policy file or directory, watched for changes (default: the embedded policy)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9468", "address of /metrics, /healthz and /readyz (empty: off)")
	fl.DurationVar(&f.resync, "resync", 30*time.Second, "period of the drift check")
	fl.BoolVar(&f.cleanupOnExit, "cleanup-on-exit", false, "remove everything ctguard applied when stopped")
	fl.IntVar(&f.eventBuffer, "event-buffer", flows.DefaultEventBuffer, "receive buffer of the conntrack event socket, in bytes")
	return cmd
}

func runController(ctx context.Context, g *globals, f *runFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	s, err := openSession(g, "info")
	if err != nil {
		return err
	}
	defer s.close()
	owned, err := s.FlaggedDirections()
	if err != nil {
		return err
	}
	m := metrics.New()
	var ready, failing atomic.Bool
	engine, err := perflow.New(perflow.Config{
		Conn:        perflow.FromFlows(s.Conntrack),
		MarkBit:     flows.MarkBit(g.markBit),
		EventBuffer: f.eventBuffer,
		// What earlier ctguard processes may have flagged, so a policy
		// change can clear it on flows no policy selects any more.
		OwnedDirections: owned,
		// The same period as the table check: it re-flags flows whose
		// flag something cleared and forgets flows that ended unseen.
		ResyncInterval: f.resync,
		Logger:         s.log,
		Observer:       metricsObserver{m},
		// Ready once the policies are applied (Run starts the engine
		// after its first apply) and the engine listens to events.
		OnReady: func() { ready.Store(true) },
	})
	if err != nil {
		return err
	}
	// The gate listens before the first apply installs its rules and
	// before the engine's first dump (Run starts the engine after the
	// apply). A policy that does not load is reported by Run.
	initial, err := loadPolicies(f.file)
	if err != nil {
		return err // nothing is locked, bound or applied yet
	}
	// Only one ctguard runs in a namespace: hold its locks before binding
	// the queue, which a running ctguard holds.
	release, err := s.HoldForRun()
	if err != nil {
		return err
	}
	gated := startGate(s, g, engine, m, initial.Policies)

	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // before anything can send one
	defer signal.Stop(hup)
	go forwardSignals(ctx, hup, reload)
	if f.file != "" {
		w, err := watch.New(f.file, s.log)
		if err != nil {
			return err
		}
		defer w.Close()
		go forward(ctx, w.Events(), reload)
	}
	changed, err := s.Tables.Watch(ctx)
	if err != nil {
		s.log.Warn("nftables change notifications unavailable; drift is repaired on the resync tick only", "err", err)
	}

	if f.metricsAddr != "" {
		h := m.Handler(func() error {
			switch {
			case !ready.Load():
				return errors.New("first apply not done yet")
			case failing.Load():
				return errors.New("the last reconcile failed: see the logs or ctguard status")
			}
			return nil
		})
		go func() {
			if err := metrics.Serve(ctx, f.metricsAddr, h); err != nil {
				s.log.Error("metrics endpoint stopped", "addr", f.metricsAddr, "err", err)
			}
		}()
	}
	return s.Run(ctx, controller.RunConfig{
		Load:         func() (controller.PolicySet, error) { return loadPolicies(f.file) },
		Reload:       reload,
		TableChanged: changed,
		Resync:       f.resync,
		Engine:       gated,
		Metrics:      m,
		Gate:         func() *controller.GateStatus { return gateStatus(gated, s.Tables) },
		Publish: func(st controller.LiveStatus) {
			failing.Store(st.ReconcileFailing)
			s.publishLive(st)
		},
		CleanupOnExit: f.cleanupOnExit,
		Held:          release,
	})
}

// Bounds of the run flags.
const (
	// minResync keeps the drift check from spinning: each one reads the
	// whole table.
	minResync = time.Second
	// maxEventBuffer bounds the conntrack event socket's receive buffer.
	maxEventBuffer = 1 << 30
)

// validate checks the flags before anything is opened.
func (f *runFlags) validate() error {
	if f.resync < minResync {
		return fmt.Errorf("--resync: %s is below the minimum %s (each check reads the whole table)", f.resync, minResync)
	}
	if f.eventBuffer <= 0 || f.eventBuffer > maxEventBuffer {
		return fmt.Errorf("--event-buffer: %d bytes is not between 1 and %d", f.eventBuffer, maxEventBuffer)
	}
	return nil
}

// forwardSignals turns SIGHUP into a reload.
func forwardSignals(ctx context.Context, hup <-chan os.Signal, reload chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			notify(reload)
		}
	}
}

// forward passes events on to a reload channel until ctx ends.
func forward(ctx context.Context, in <-chan struct{}, reload chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-in:
			if !ok {
				return
			}
			notify(reload)
		}
	}
}

// notify sends without blocking: one pending reload is enough.
func notify(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
