package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ctguard/ctguard/controller/gate"
	"github.com/ctguard/ctguard/controller/metrics"
	"github.com/ctguard/ctguard/controller/nslock"
	"github.com/ctguard/ctguard/controller/perflow"
	"github.com/ctguard/ctguard/controller/ruleset"
	"github.com/ctguard/ctguard/controller/sysctl"
	"github.com/ctguard/ctguard/policy"
)

// Engine is the per-flow liberal engine the Run loop drives.
type Engine interface {
	Run(ctx context.Context) error
	SetPolicies(ps []policy.Policy) error
	Stats() perflow.Snapshot
}

// RunConfig configures Run.
type RunConfig struct {
	// Load reads the policies; it is called at start and on every reload.
	Load func() (PolicySet, error)
	// Reload fires when the policy path changed or SIGHUP arrived.
	Reload <-chan struct{}
	// TableChanged fires on nftables changes to ctguard's table (optional);
	// once it is closed, drift is checked on the Resync tick only.
	TableChanged <-chan struct{}
	// Resync is the period of the drift check.
	Resync time.Duration
	// Engine runs the perFlow policies.
	Engine Engine
	// Metrics receives the loop's metrics.
	Metrics *metrics.Metrics
	// Publish receives a live status after every reconcile and every
	// PublishEvery (optional).
	Publish func(LiveStatus)
	// PublishEvery is the period of the live status (DefaultPublishEvery
	// when 0): "ctguard status" shows the per-flow counters that old.
	PublishEvery time.Duration
	// Beat is called each time the loop waits for work, at least every
	// PublishEvery (optional): a beat that stops means the loop is stuck
	// in a reconcile.
	Beat func()
	// CleanupOnExit removes everything ctguard applied when ctx ends;
	// otherwise the mitigation stays in force while ctguard is down.
	CleanupOnExit bool
	// Gate reports the handshake gate's state for the live status
	// (optional; nil when there is no gate).
	Gate func() *GateStatus
	// Held, when set, is the release function of locks the caller took
	// with HoldForRun before Run (to bind the gate's queue only once no
	// other ctguard runs in the namespace); Run calls it when it returns.
	// Nil: Run takes the locks itself.
	Held func()
}

// GateStatus is the handshake gate's state in a live status.
type GateStatus struct {
	// State is "listening", "fallback" (gate policies run guard rules:
	// the kernel or the queue refused) or "stopped" (the gate failed; the
	// event engine flags new flows again).
	State string `json:"state"`
	// Encoding is how the kernel took the gate rules' queue verdict.
	Encoding string `json:"encoding,omitempty"`
	// Reason says why the gate is not listening.
	Reason   string        `json:"reason,omitempty"`
	Counters gate.Snapshot `json:"counters"`
}

// DefaultPublishEvery is RunConfig.PublishEvery's default.
const DefaultPublishEvery = 2 * time.Second

// LiveStatus is what a running controller publishes for "ctguard status".
type LiveStatus struct {
	UpdatedAt  time.Time `json:"updatedAt"`
	PID        int       `json:"pid"`
	Revision   int       `json:"revision"`
	Generation int       `json:"generation"`
	LastError  string    `json:"lastError,omitempty"`
	// ReconcileFailing is set while the last reconcile failed: the kernel
	// may not match the policy in force.
	ReconcileFailing bool             `json:"reconcileFailing,omitempty"`
	Engine           perflow.Snapshot `json:"engine"`
	Gate             *GateStatus      `json:"gate,omitempty"`
	// Incidents are the connections reset lately (nil when the incident
	// ring does not run).
	Incidents *IncidentStatus `json:"incidents,omitempty"`
}

// HoldForRun takes the namespace and state-directory locks a controller
// holds for its lifetime: it fails, naming the holder, while another
// ctguard runs in this network namespace or manages this state directory.
func (c *Controller) HoldForRun() (release func(), err error) { return c.hold(nslock.RoleRun) }

// Run is the long-running controller: it applies the policies, runs the
// per-flow engine, and reconciles on every reload, resync tick and table
// change until ctx ends. A policy that fails to load at start is returned
// and nothing is applied; later, a bad policy is logged and counted and the
// last good one stays in force.
func (c *Controller) Run(ctx context.Context, cfg RunConfig) error {
	set, err := cfg.Load()
	if err != nil {
		cfg.Metrics.PolicyLoadErrors.Inc()
		return err
	}
	release := cfg.Held
	if release == nil {
		if release, err = c.HoldForRun(); err != nil {
			return err
		}
	}
	defer release()
	if err := c.store.RemoveTemps(); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	l := &loop{c: c, cfg: cfg, good: set}
	if err := l.reconcile(ctx, "start"); err != nil {
		return err
	}
	c.clearStaleAtStart(ctx, set.Policies)
	if err := cfg.Engine.SetPolicies(set.Policies); err != nil {
		return err
	}
	engineCtx, cancelEngine := context.WithCancel(context.WithoutCancel(ctx))
	engineDone := make(chan error, 1)
	go func() { engineDone <- cfg.Engine.Run(engineCtx) }()
	stopEngine := sync.OnceValue(func() error {
		cancelEngine()
		return <-engineDone
	})
	defer stopEngine()
	l.generation = 1
	cfg.Metrics.PolicyGeneration.Set(1)
	cfg.Metrics.LastReloadSuccess.SetToCurrentTime()
	setPolicyMetrics(cfg.Metrics, set.Policies)
	l.publish()

	tick := time.NewTicker(cfg.Resync)
	defer tick.Stop()
	every := cfg.PublishEvery
	if every <= 0 {
		every = DefaultPublishEvery
	}
	pub := time.NewTicker(every)
	defer pub.Stop()
	tableChanged := cfg.TableChanged
	for {
		if cfg.Beat != nil {
			cfg.Beat()
		}
		select {
		case <-pub.C:
		case <-ctx.Done():
			stopEngine() // before a cleanup, so nothing flags flows again
			return l.shutdown()
		case err := <-engineDone:
			engineDone <- err // for stopEngine
			if err == nil {
				err = errors.New("returned without error")
			}
			return fmt.Errorf("per-flow engine stopped: %w", err)
		case <-cfg.Reload:
			l.reload(ctx)
		case <-tick.C:
			l.check(ctx, "resync")
		case _, ok := <-tableChanged:
			if !ok {
				// The notifications ended (nft.Client.Watch closes its
				// channel when it gives up). A closed channel is always
				// ready: selecting it again would reconcile in a busy loop.
				tableChanged = nil
				l.c.log.Warn("nftables change notifications stopped; drift is repaired on the resync tick only")
			}
			l.check(ctx, "table-event")
		}
		l.publish()
	}
}

// clearStaleAtStart clears the flags an earlier ctguard process set that
// the policies in force no longer want: the policies may have changed
// across a restart or a kill -9, and the engine clears such flags only on
// a change it makes itself. A failure is logged; the engine still starts.
func (c *Controller) clearStaleAtStart(ctx context.Context, policies []policy.Policy) {
	j, err := c.store.Load()
	if err != nil {
		c.log.Warn("cannot check for per-flow flags no policy wants", "err", err)
		return
	}
	owned := ownedDirections(j)
	if owned == 0 {
		return
	}
	if _, err := c.flows.ClearUnwanted(ctx, policies, owned); err != nil {
		c.log.Warn("clearing per-flow flags no policy wants failed", "err", err)
	}
}

// loop is the state of one Run.
type loop struct {
	c          *Controller
	cfg        RunConfig
	good       PolicySet
	revision   int
	generation int
	lastErr    error // of the last reconcile
	// engineBehind is set while the engine lacks the policies in force:
	// a reload it must adopt after the next successful reconcile.
	engineBehind bool
	// loadErr is why the policy source was last rejected, nil once it
	// loads again. It is kept apart from lastErr: a later successful
	// reconcile of the last good policy must not hide that the source on
	// disk is still rejected.
	loadErr error
}

// reconcile applies the last good policy set and records the outcome.
func (l *loop) reconcile(ctx context.Context, why string) error {
	start := time.Now()
	res, err := l.c.apply(ctx, l.good, applyOptions{})
	l.cfg.Metrics.ObserveReconcile(time.Since(start), err)
	l.lastErr = err
	if err != nil {
		l.c.log.Error("reconcile failed", "trigger", why, "err", err)
		return err
	}
	l.revision = res.Revision
	for _, kind := range res.Drift {
		l.cfg.Metrics.DriftRepairs.WithLabelValues(kind).Inc()
		l.c.log.Warn("repaired drift", "kind", kind, "trigger", why, "revision", res.Revision)
	}
	if res.Observed != nil {
		l.cfg.Metrics.SetRuleCounters(ruleCounters(*res.Observed))
	}
	if l.engineBehind {
		l.adopt()
	}
	return nil
}

// check is a reconcile whose failure the loop survives.
func (l *loop) check(ctx context.Context, why string) { _ = l.reconcile(ctx, why) }

// reload reads the policies again; a bad set keeps the last good one.
func (l *loop) reload(ctx context.Context) {
	set, err := l.cfg.Load()
	if err != nil {
		l.cfg.Metrics.PolicyLoadErrors.Inc()
		l.cfg.Metrics.PolicySourceRejected.Set(1)
		l.loadErr = err
		l.c.log.Error("policy rejected; the last good policy stays in force", "err", err)
		return
	}
	l.loadErr = nil
	l.cfg.Metrics.PolicySourceRejected.Set(0)
	l.good = set
	l.engineBehind = true
	if err := l.reconcile(ctx, "reload"); err != nil {
		// The policy is valid; the kernel refused it for now (nftables
		// batches are atomic: the previous table stays). Every resync
		// tries again, and the engine gets the policies only then.
		l.c.log.Warn("new policy not applied yet; retrying at every resync", "err", err)
	}
}

// adopt hands the policies in force to the per-flow engine once a
// reconcile journaled them (so rollback knows every direction the engine
// may flag), and counts the new generation.
func (l *loop) adopt() {
	set := l.good
	if err := l.cfg.Engine.SetPolicies(set.Policies); err != nil {
		l.c.log.Error("per-flow engine rejected the policies", "err", err)
		return
	}
	l.engineBehind = false
	l.generation++
	l.cfg.Metrics.PolicyGeneration.Set(float64(l.generation))
	l.cfg.Metrics.LastReloadSuccess.SetToCurrentTime()
	setPolicyMetrics(l.cfg.Metrics, set.Policies)
	l.c.log.Info("policy reloaded", "source", set.Source, "generation", l.generation, "revision", l.revision)
}

// shutdown leaves the mitigation in place, or removes it when asked.
func (l *loop) shutdown() error {
	if !l.cfg.CleanupOnExit {
		l.c.log.Info("stopping; the mitigation stays in force")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := l.c.rollback(ctx, true)
	if errors.Is(err, ErrNothingToRollBack) {
		err = nil
	}
	l.c.log.Info("stopping; removed everything ctguard applied", "err", err)
	return err
}

// publish hands the live status to cfg.Publish.
func (l *loop) publish() {
	if l.cfg.Publish == nil {
		return
	}
	st := LiveStatus{
		UpdatedAt:  time.Now().UTC(),
		PID:        os.Getpid(),
		Revision:   l.revision,
		Generation: l.generation,
		Engine:     l.cfg.Engine.Stats(),
	}
	if l.cfg.Gate != nil {
		st.Gate = l.cfg.Gate()
	}
	if err := errors.Join(l.loadErr, l.lastErr); err != nil {
		st.LastError = err.Error()
	}
	st.ReconcileFailing = l.lastErr != nil
	l.cfg.Publish(st)
}

// setPolicyMetrics exports the policies in force: ctguard_policy_info for
// each, and the per-flow series for the perFlow ones only (the others flag
// no flow).
func setPolicyMetrics(m *metrics.Metrics, ps []policy.Policy) {
	var perFlow []string
	info := make([]metrics.PolicyInForce, 0, len(ps))
	for _, p := range ps {
		info = append(info, metrics.PolicyInForce{Name: p.Name(), Workaround: string(p.Workaround()), Scope: string(p.Scope())})
		if p.IsPerFlow() {
			perFlow = append(perFlow, p.Name())
		}
	}
	m.SetPolicies(perFlow)
	m.SetPoliciesInForce(info)
}

// KernelState reads what the metrics show at scrape time: the rule
// counters, whether the table exists and has drifted from the revision in
// force, and the global sysctl (metrics.Metrics.ReadKernelAtScrape). It
// takes no lock and changes nothing.
func (c *Controller) KernelState() (metrics.KernelState, error) {
	var ks metrics.KernelState
	j, err := c.readJournal(false)
	if err != nil {
		return ks, err
	}
	table, err := c.readTable(j)
	if err != nil {
		return ks, err
	}
	liberal, err := c.sysctls.Get(sysctl.BeLiberal)
	if err != nil {
		return ks, wrap("read sysctl", err)
	}
	if ks.BeLiberal, err = strconv.Atoi(liberal); err != nil {
		return ks, wrap("read sysctl "+sysctl.BeLiberal, err)
	}
	ks.TablePresent = table != nil
	ks.Drift, _ = c.drifted(j.Latest(), table, liberal)
	if table != nil {
		ks.Rules = ruleCounters(*table)
	}
	return ks, nil
}

// ruleCounters turns the table's rules and counters into metric samples.
func ruleCounters(t ruleset.Table) []metrics.RuleCounter {
	var out []metrics.RuleCounter
	eachCountedRule(t, func(_ ruleset.Chain, r ruleset.Rule, v ruleset.Counter) {
		out = append(out, metrics.RuleCounter{Policy: r.Policy, Purpose: string(r.Purpose), Packets: v.Packets, Bytes: v.Bytes})
	})
	return out
}
