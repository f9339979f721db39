package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"github.com/ctguard/ctguard/internal/sdnotify"
	"github.com/spf13/cobra"
)

// runFlags are the flags of "ctguard run".
type runFlags struct {
	file          string
	metricsAddr   string
	resync        time.Duration
	cleanupOnExit bool
	eventBuffer   int
	stuckAfter    time.Duration
	webConfig     string
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
	fl.StringVar(&f.webConfig, "web-config-file", "", "TLS and basic auth for --metrics-addr: a Prometheus exporter-toolkit web configuration file (empty: plain HTTP)")
	fl.DurationVar(&f.stuckAfter, "stuck-after", time.Minute, "/healthz fails when the reconcile loop or the per-flow engine has been busy with one piece of work this long")
	return cmd
}

func runController(ctx context.Context, g *globals, f *runFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	if f.stuckAfter <= 0 {
		return fmt.Errorf("--stuck-after: must be positive, got %s", f.stuckAfter)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Bind the metrics address first: probes that can never answer must
	// end the process at once, before anything is applied.
	var metricsLn net.Listener
	if f.webConfig != "" {
		if f.metricsAddr == "" {
			return errors.New("--web-config-file: needs --metrics-addr")
		}
		if err := metrics.CheckWebConfig(f.webConfig); err != nil {
			return fmt.Errorf("--web-config-file: %w", err)
		}
	}
	if f.metricsAddr != "" {
		ln, err := metrics.Listen(f.metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		metricsLn = ln
		defer ln.Close()
	}
	// A metrics server that fails later ends the controller too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)

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
	// Rule counters, drift and the sysctl are read from the kernel at each
	// scrape, not only at reconcile time.
	m.ReadKernelAtScrape(s.KernelState)
	var ready, failing atomic.Bool
	var loopBeat atomic.Int64
	sd, err := sdnotify.FromEnv()
	if err != nil {
		s.log.Warn("systemd notifications off", "err", err)
	}
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
		OnReady: func() {
			ready.Store(true)
			notifySystemd(sd, s.log, sdnotify.Ready, sdnotify.Status("policies applied; per-flow engine listening"))
		},
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
	// The evidence group is bound before the first apply writes rules
	// logging to it.
	ring := startIncidents(ctx, s, g.evidence, m, initial.Policies)
	health := func() error { return stuck(time.Now(), f.stuckAfter, loopBeat.Load(), engine.Heartbeat()) }
	go feedWatchdog(ctx, sd, &ready, health, s.log)
	go func() {
		<-ctx.Done()
		notifySystemd(sd, s.log, sdnotify.Stopping)
	}()

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

	if metricsLn != nil {
		h := m.ProbeHandler(metrics.Probes{
			Ready: func() error {
				switch {
				case !ready.Load():
					return errors.New("first apply not done yet")
				case failing.Load():
					return errors.New("the last reconcile failed: see the logs or ctguard status")
				}
				return nil
			},
			Live: health,
		})
		go func() {
			if err := metrics.ServeListener(ctx, metricsLn, h, f.webConfig, s.log); err != nil {
				serveErr <- err
				cancel()
			}
		}()
	}
	lastGeneration := -1
	err = s.Run(ctx, controller.RunConfig{
		Load:         func() (controller.PolicySet, error) { return loadPolicies(f.file) },
		Reload:       reload,
		TableChanged: changed,
		Resync:       f.resync,
		Engine:       ringEngine{Engine: gated, ring: ring},
		Metrics:      m,
		Gate:         func() *controller.GateStatus { return gateStatus(gated, s.Tables) },
		Publish: func(st controller.LiveStatus) {
			if was := failing.Swap(st.ReconcileFailing); was != st.ReconcileFailing || st.Generation != lastGeneration {
				lastGeneration = st.Generation
				notifySystemd(sd, s.log, sdnotify.Status(liveLine(st)))
			}
			ring.publish(st)
		},
		Beat:          func() { loopBeat.Store(time.Now().UnixNano()) },
		CleanupOnExit: f.cleanupOnExit,
		Held:          release,
	})
	select {
	case e := <-serveErr:
		return errors.Join(err, fmt.Errorf("--metrics-addr %s: %w", f.metricsAddr, e))
	default:
		return err
	}
}

// stuck fails when the reconcile loop (last beat at loopBeat, Unix ns) or
// the per-flow engine (last beat engineBeat) has not waited for work for
// longer than after. A loop or engine that never beat yet is starting.
func stuck(now time.Time, after time.Duration, loopBeat int64, engineBeat time.Time) error {
	if loopBeat != 0 {
		if idle := now.Sub(time.Unix(0, loopBeat)); idle > after {
			return fmt.Errorf("the reconcile loop has been busy for %s (--stuck-after %s)", idle.Round(time.Second), after)
		}
	}
	if !engineBeat.IsZero() {
		if idle := now.Sub(engineBeat); idle > after {
			return fmt.Errorf("the per-flow engine has been busy for %s (--stuck-after %s)", idle.Round(time.Second), after)
		}
	}
	return nil
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

// notifySystemd sends systemd notifications, logging a failure.
func notifySystemd(sd *sdnotify.Notifier, log *slog.Logger, assignments ...string) {
	if err := sd.Send(assignments...); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}
}

// feedWatchdog sends WATCHDOG=1 twice per systemd's watchdog interval
// once the controller is ready, as long as health passes: a stuck reconcile
// loop or engine stops the feed and systemd restarts the service.
func feedWatchdog(ctx context.Context, sd *sdnotify.Notifier, ready *atomic.Bool, health func() error, log *slog.Logger) {
	every := sd.WatchdogInterval() / 2
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !ready.Load() {
			continue // systemd's watchdog starts once READY=1 is sent
		}
		if err := health(); err != nil {
			log.Error("not feeding the systemd watchdog", "err", err)
			continue
		}
		notifySystemd(sd, log, sdnotify.Watchdog)
	}
}

// liveLine is the one-line state "systemctl status" shows.
func liveLine(st controller.LiveStatus) string {
	line := fmt.Sprintf("revision %d, policy generation %d", st.Revision, st.Generation)
	if st.ReconcileFailing {
		line += "; reconcile FAILING: " + st.LastError
	}
	return line
}
