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
	"github.com/ctguard/ctguard/controller/gate"
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
	gateHold      time.Duration
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
	fl.DurationVar(&f.gateHold, "gate-hold", gate.DefaultHold, "under load, the longest the handshake gate holds a SYN-ACK to handle it with the next ones (fewer wake-ups, less CPU per connection; 0: never hold)")
	fl.DurationVar(&f.stuckAfter, "stuck-after", time.Minute, "/healthz fails when the reconcile loop or the per-flow engine has been busy with one piece of work this long")
	return cmd
}

// runController is "ctguard run": each step below does one thing, in the
// order the kernel needs them.
func runController(ctx context.Context, g *globals, f *runFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	// A bad policy ends the process before anything is bound, opened,
	// locked or applied. Run reads the file again at its start.
	initial, err := loadPolicies(f.file)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Probes that can never answer end the process at once, before
	// anything is applied.
	metricsLn, err := listenMetrics(f)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	// A metrics server that fails later ends the controller too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	s, err := openSession(g, "info")
	if err != nil {
		return err
	}
	defer s.close()
	r, err := newControllerRun(g, f, s)
	if err != nil {
		return err
	}
	// Only one ctguard runs in a namespace: hold its locks before binding
	// the queue, which a running ctguard holds.
	release, err := s.HoldForRun()
	if err != nil {
		return err
	}
	// The gate listens before the first apply installs its rules and
	// before the engine's first dump (Run starts the engine after the
	// apply); the evidence group is bound before the first apply writes
	// rules logging to it.
	gated := startGate(s, g, f.gateHold, r.engine, r.m, initial.Policies)
	ring := startIncidents(ctx, s, g.evidence, r.m, initial.Policies)
	stopped := r.notifyLifecycle(ctx)
	defer func() { cancel(); stopped() }()
	reload, stopReloads, err := r.reloads(ctx)
	if err != nil {
		return err
	}
	defer stopReloads()
	changed, err := s.Tables.Watch(ctx)
	if err != nil {
		s.log.Warn("nftables change notifications unavailable; drift is repaired on the resync tick only", "err", err)
	}
	serveErr := r.serveMetrics(ctx, cancel, metricsLn)
	err = s.Run(ctx, r.runConfig(reload, changed, gated, ring, release))
	return withServeError(err, f.metricsAddr, serveErr)
}

// listenMetrics checks --web-config-file and binds --metrics-addr (nil
// when empty).
func listenMetrics(f *runFlags) (net.Listener, error) {
	if f.webConfig != "" {
		if f.metricsAddr == "" {
			return nil, errors.New("--web-config-file: needs --metrics-addr")
		}
		if err := metrics.CheckWebConfig(f.webConfig); err != nil {
			return nil, fmt.Errorf("--web-config-file: %w", err)
		}
	}
	if f.metricsAddr == "" {
		return nil, nil
	}
	ln, err := metrics.Listen(f.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return ln, nil
}

// controllerRun is the state the steps of one "ctguard run" share.
type controllerRun struct {
	g      *globals
	f      *runFlags
	s      *session
	m      *metrics.Metrics
	sd     *sdnotify.Notifier
	engine *perflow.Engine
	// ready: the first apply is done and the engine listens; failing: the
	// last reconcile failed; loopBeat: when the reconcile loop last
	// waited for work (Unix ns).
	ready, failing atomic.Bool
	loopBeat       atomic.Int64
	// lastGeneration is the policy generation systemd last heard of.
	lastGeneration int
}

// newControllerRun creates the metrics, the systemd notifier and the
// per-flow engine (not started: Run starts it after its first apply).
func newControllerRun(g *globals, f *runFlags, s *session) (*controllerRun, error) {
	// What earlier ctguard processes may have flagged, so a policy change
	// can clear it on flows no policy selects any more.
	owned, err := s.FlaggedDirections()
	if err != nil {
		return nil, err
	}
	r := &controllerRun{g: g, f: f, s: s, m: metrics.New(), lastGeneration: -1}
	// Rule counters, drift and the sysctl are read from the kernel at each
	// scrape, not only at reconcile time.
	r.m.ReadKernelAtScrape(s.KernelState)
	if r.sd, err = sdnotify.FromEnv(); err != nil {
		s.log.Warn("systemd notifications off", "err", err)
	}
	r.engine, err = perflow.New(r.engineConfig(owned))
	if err != nil {
		return nil, err
	}
	return r, nil
}

// engineConfig configures the per-flow engine.
func (r *controllerRun) engineConfig(owned flows.Directions) perflow.Config {
	return perflow.Config{
		Conn:            perflow.FromFlows(r.s.Conntrack),
		MarkBit:         flows.MarkBit(r.g.markBit),
		EventBuffer:     r.f.eventBuffer,
		OwnedDirections: owned,
		// The same period as the table check: it re-flags flows whose
		// flag something cleared and forgets flows that ended unseen.
		ResyncInterval: r.f.resync,
		Logger:         r.s.log,
		Observer:       metricsObserver{r.m},
		// Ready once the policies are applied (Run starts the engine
		// after its first apply) and the engine listens to events.
		OnReady: func() {
			r.ready.Store(true)
			notifySystemd(r.sd, r.s.log, sdnotify.Ready, sdnotify.Status("policies applied; per-flow engine listening"))
		},
	}
}

// health fails when the reconcile loop or the engine is stuck.
func (r *controllerRun) health() error {
	return stuck(time.Now(), r.f.stuckAfter, r.loopBeat.Load(), r.engine.Heartbeat())
}

// readiness answers /readyz.
func (r *controllerRun) readiness() error {
	switch {
	case !r.ready.Load():
		return errors.New("first apply not done yet")
	case r.failing.Load():
		return errors.New("the last reconcile failed: see the logs or ctguard status")
	}
	return nil
}

// notifyLifecycle feeds systemd's watchdog while healthy and says
// STOPPING=1 when ctx ends. The function it returns waits until that is
// said: the process must not exit before (under QEMU it once did).
func (r *controllerRun) notifyLifecycle(ctx context.Context) (stopped func()) {
	go feedWatchdog(ctx, r.sd, &r.ready, r.health, r.s.log)
	said := make(chan struct{})
	go func() {
		<-ctx.Done()
		notifySystemd(r.sd, r.s.log, sdnotify.Stopping)
		close(said)
	}()
	return func() { <-said }
}

// reloads returns the channel Run reloads on: SIGHUP, and changes to -f's
// path when one is watched. stop ends both.
func (r *controllerRun) reloads(ctx context.Context) (reload chan struct{}, stop func(), err error) {
	reload = make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // before anything can send one
	go forwardSignals(ctx, hup, reload)
	if r.f.file == "" {
		return reload, func() { signal.Stop(hup) }, nil
	}
	w, err := watch.New(r.f.file, r.s.log)
	if err != nil {
		signal.Stop(hup)
		return nil, nil, err
	}
	go forward(ctx, w.Events(), reload)
	return reload, func() { w.Close(); signal.Stop(hup) }, nil
}

// serveMetrics serves /metrics, /healthz and /readyz on ln (when bound)
// until ctx ends; a server that fails cancels the run and its error
// arrives on the channel returned.
func (r *controllerRun) serveMetrics(ctx context.Context, cancel context.CancelFunc, ln net.Listener) <-chan error {
	serveErr := make(chan error, 1)
	if ln == nil {
		return serveErr
	}
	h := r.m.ProbeHandler(metrics.Probes{Ready: r.readiness, Live: r.health})
	go func() {
		if err := metrics.ServeListener(ctx, ln, h, r.f.webConfig, r.s.log); err != nil {
			serveErr <- err
			cancel()
		}
	}()
	return serveErr
}

// runConfig wires the reconcile loop.
func (r *controllerRun) runConfig(reload, changed <-chan struct{}, gated *gate.Runner, ring *incidentRing, release func()) controller.RunConfig {
	return controller.RunConfig{
		Load:         func() (controller.PolicySet, error) { return loadPolicies(r.f.file) },
		Reload:       reload,
		TableChanged: changed,
		Resync:       r.f.resync,
		Engine:       ringEngine{Engine: gated, ring: ring},
		Metrics:      r.m,
		Gate:         func() *controller.GateStatus { return gateStatus(gated, r.s.Tables) },
		Publish: func(st controller.LiveStatus) {
			if r.statusChanged(st) {
				notifySystemd(r.sd, r.s.log, sdnotify.Status(liveLine(st)))
			}
			ring.publish(st)
		},
		Beat:          func() { r.loopBeat.Store(time.Now().UnixNano()) },
		CleanupOnExit: r.f.cleanupOnExit,
		Held:          release,
	}
}

// statusChanged records st's failing state and generation and tells
// whether either changed since the last published status (systemd hears
// only of changes).
func (r *controllerRun) statusChanged(st controller.LiveStatus) bool {
	was := r.failing.Swap(st.ReconcileFailing)
	if was == st.ReconcileFailing && st.Generation == r.lastGeneration {
		return false
	}
	r.lastGeneration = st.Generation
	return true
}

// withServeError adds a metrics server's failure, if any, to Run's error.
func withServeError(err error, addr string, serveErr <-chan error) error {
	select {
	case e := <-serveErr:
		return errors.Join(err, fmt.Errorf("--metrics-addr %s: %w", addr, e))
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
	// maxGateHold bounds --gate-hold: a longer hold would delay handshakes
	// noticeably (and the queue fails open when it fills meanwhile).
	maxGateHold = 10 * time.Millisecond
)

// validate checks the flags before anything is opened.
func (f *runFlags) validate() error {
	if f.resync < minResync {
		return fmt.Errorf("--resync: %s is below the minimum %s (each check reads the whole table)", f.resync, minResync)
	}
	if f.eventBuffer <= 0 || f.eventBuffer > maxEventBuffer {
		return fmt.Errorf("--event-buffer: %d bytes is not between 1 and %d", f.eventBuffer, maxEventBuffer)
	}
	if f.gateHold < 0 || f.gateHold > maxGateHold {
		return fmt.Errorf("--gate-hold: %s is not between 0 and %s", f.gateHold, maxGateHold)
	}
	if f.stuckAfter <= 0 {
		return fmt.Errorf("--stuck-after: must be positive, got %s", f.stuckAfter)
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
