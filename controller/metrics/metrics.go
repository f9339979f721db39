// Package metrics defines ctguard's Prometheus metrics on a private registry
// and serves them, with liveness and readiness endpoints, over HTTP.
package metrics

import (
	"sync"
	"time"

	"github.com/ctguard/ctguard/internal/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every ctguard metric name.
const Namespace = "ctguard"

// Drift kinds, the values of the "kind" label of DriftRepairs.
const (
	DriftTableMissing = "table_missing" // inet ctguard was gone
	DriftTableChanged = "table_changed" // inet ctguard differed from the plan
	DriftSysctl       = "sysctl"        // a sysctl ctguard manages was changed
)

// Metrics holds every ctguard metric. All fields are registered on Registry
// by New and safe for concurrent use.
type Metrics struct {
	// Registry is the private registry the fields are registered on; it
	// also holds the Go runtime and process collectors.
	Registry *prometheus.Registry

	// ReconcileRuns counts reconcile passes (ctguard_reconcile_runs_total).
	ReconcileRuns prometheus.Counter
	// ReconcileErrors counts failed reconcile passes
	// (ctguard_reconcile_errors_total).
	ReconcileErrors prometheus.Counter
	// ReconcileDuration observes how long a reconcile pass took
	// (ctguard_reconcile_duration_seconds).
	ReconcileDuration prometheus.Histogram
	// DriftRepairs counts repairs of state changed behind ctguard's back, by
	// kind: DriftTableMissing, DriftTableChanged, DriftSysctl
	// (ctguard_drift_repairs_total{kind}).
	DriftRepairs *prometheus.CounterVec

	// PolicyGeneration is the generation of the policy set in force; it
	// grows by one per successful load (ctguard_policy_generation).
	PolicyGeneration prometheus.Gauge
	// PolicyLoadErrors counts policy loads that failed and left the previous
	// policy set in force (ctguard_policy_load_errors_total).
	PolicyLoadErrors prometheus.Counter
	// LastReloadSuccess is the Unix time of the last successful policy load
	// (ctguard_policy_last_reload_success_timestamp_seconds).
	LastReloadSuccess prometheus.Gauge

	// FlowsSeen counts TCP flows the per-flow engine examined, before any
	// matching (ctguard_flows_seen_total).
	FlowsSeen prometheus.Counter
	// FlowsMatched counts flows a perFlow policy selected
	// (ctguard_flows_matched_total{policy}).
	FlowsMatched *prometheus.CounterVec
	// FlowsFlagged counts liberal flag updates sent
	// (ctguard_flows_flagged_total{policy}).
	FlowsFlagged *prometheus.CounterVec
	// FlowsConfirmed counts flags seen set on the kernel's entry
	// (ctguard_flows_confirmed_total{policy}).
	FlowsConfirmed *prometheus.CounterVec
	// FlowsFailed counts flag updates the kernel refused
	// (ctguard_flows_failed_total{policy}).
	FlowsFailed *prometheus.CounterVec
	// FlowsGone counts flows that vanished before their flag landed
	// (ctguard_flows_gone_total{policy}).
	FlowsGone *prometheus.CounterVec
	// FlowsReflagged counts flows flagged again after the kernel cleared
	// the flag (ctguard_flows_reflagged_total{policy}).
	FlowsReflagged *prometheus.CounterVec
	// FlagLatency observes the time from a flow's event to its flag update
	// being acknowledged, 50µs to 1s (ctguard_flag_latency_seconds).
	FlagLatency prometheus.Histogram
	// EventsLost counts conntrack event losses (ENOBUFS and the like)
	// (ctguard_events_lost_total).
	EventsLost prometheus.Counter
	// Resyncs counts full conntrack dumps done to recover from event loss
	// or on the resync timer (ctguard_resyncs_total).
	Resyncs prometheus.Counter
	// FlowsEnded counts matched flows that ended
	// (ctguard_flows_ended_total{policy}).
	FlowsEnded *prometheus.CounterVec
	// FlowsEndedByReset counts matched flows that ended with a TCP reset
	// (ctguard_flows_ended_by_reset_total{policy}).
	FlowsEndedByReset *prometheus.CounterVec

	// Gate holds the handshake gate's metrics.
	Gate GateMetrics
	// ReconcileFailing is 1 while the last reconcile failed
	// (ctguard_reconcile_failing).
	ReconcileFailing prometheus.Gauge
	// PolicySourceRejected is 1 while the policy file or directory on
	// disk is rejected and the last good policies stay in force
	// (ctguard_policy_source_rejected).
	PolicySourceRejected prometheus.Gauge
	// PolicyInfo is 1 for each policy in force, labelled with its
	// workaround and scope (ctguard_policy_info{policy,workaround,scope});
	// set by SetPoliciesInForce.
	PolicyInfo *prometheus.GaugeVec

	rules *ruleCounters

	mu       sync.Mutex
	policies map[string]bool // policy label values currently exported
}

// New builds the metrics on a fresh private registry.
func New() *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help})
	}
	perPolicy := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, []string{"policy"})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help})
	}

	m := &Metrics{
		Registry: prometheus.NewRegistry(),

		ReconcileRuns:   counter("reconcile_runs_total", "Reconcile passes run."),
		ReconcileErrors: counter("reconcile_errors_total", "Reconcile passes that failed."),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "reconcile_duration_seconds",
			Help:    "Duration of reconcile passes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1ms .. ~8s
		}),
		DriftRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "drift_repairs_total",
			Help: "Repairs of kernel state changed behind ctguard's back, by kind.",
		}, []string{"kind"}),

		PolicyGeneration:  gauge("policy_generation", "Generation of the policy set in force."),
		PolicyLoadErrors:  counter("policy_load_errors_total", "Policy loads that failed; the previous policies stay in force."),
		LastReloadSuccess: gauge("policy_last_reload_success_timestamp_seconds", "Unix time of the last successful policy load."),

		FlowsSeen:      counter("flows_seen_total", "TCP flows examined by the per-flow engine."),
		FlowsMatched:   perPolicy("flows_matched_total", "Flows selected by a perFlow policy."),
		FlowsFlagged:   perPolicy("flows_flagged_total", "Liberal flag updates sent."),
		FlowsConfirmed: perPolicy("flows_confirmed_total", "Liberal flags confirmed set on the conntrack entry."),
		FlowsFailed:    perPolicy("flows_failed_total", "Liberal flag updates that failed."),
		FlowsGone:      perPolicy("flows_gone_total", "Flows that vanished before their flag landed."),
		FlowsReflagged: perPolicy("flows_reflagged_total", "Flows flagged again after the kernel cleared the flag."),
		FlagLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "flag_latency_seconds",
			Help:    "Time from a flow's conntrack event to its acknowledged flag update.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 1, 15), // 50µs .. 1s, ~x2
		}),
		EventsLost:        counter("events_lost_total", "Conntrack event losses (e.g. ENOBUFS)."),
		Resyncs:           counter("resyncs_total", "Full conntrack dumps done to resynchronise."),
		FlowsEnded:        perPolicy("flows_ended_total", "Matched flows that ended."),
		FlowsEndedByReset: perPolicy("flows_ended_by_reset_total", "Matched flows that ended with a TCP reset."),

		Gate:                 newGateMetrics(),
		ReconcileFailing:     gauge("reconcile_failing", "1 while the last reconcile failed: the kernel may not match the policies in force."),
		PolicySourceRejected: gauge("policy_source_rejected", "1 while the policy source on disk is rejected; the last good policies stay in force."),
		PolicyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "policy_info",
			Help: "1 for each policy in force, with its workaround and scope.",
		}, []string{"policy", "workaround", "scope"}),

		rules:    newRuleCounters(),
		policies: map[string]bool{},
	}
	for _, kind := range []string{DriftTableMissing, DriftTableChanged, DriftSysctl} {
		m.DriftRepairs.WithLabelValues(kind)
	}
	m.Registry.MustRegister(
		m.ReconcileRuns, m.ReconcileErrors, m.ReconcileDuration, m.DriftRepairs,
		m.PolicyGeneration, m.PolicyLoadErrors, m.LastReloadSuccess,
		m.FlowsSeen, m.FlowsMatched, m.FlowsFlagged, m.FlowsConfirmed, m.FlowsFailed,
		m.FlowsGone, m.FlowsReflagged, m.FlagLatency, m.EventsLost, m.Resyncs,
		m.FlowsEnded, m.FlowsEndedByReset,
		m.ReconcileFailing, m.PolicySourceRejected, m.PolicyInfo,
		m.rules, buildInfo(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.Registry.MustRegister(m.Gate.collectors()...)
	return m
}

// ObserveReconcile records one reconcile pass that took d and ended with
// err (nil on success).
func (m *Metrics) ObserveReconcile(d time.Duration, err error) {
	m.ReconcileRuns.Inc()
	m.ReconcileDuration.Observe(d.Seconds())
	if err != nil {
		m.ReconcileErrors.Inc()
		m.ReconcileFailing.Set(1)
	} else {
		m.ReconcileFailing.Set(0)
	}
}

// PolicyInForce describes one policy in force for ctguard_policy_info.
type PolicyInForce struct {
	Name, Workaround, Scope string
}

// SetPoliciesInForce replaces the ctguard_policy_info series.
func (m *Metrics) SetPoliciesInForce(ps []PolicyInForce) {
	m.PolicyInfo.Reset()
	for _, p := range ps {
		m.PolicyInfo.WithLabelValues(p.Name, p.Workaround, p.Scope).Set(1)
	}
}

// SetPolicies makes names the policies exported in the per-policy flow
// metrics (the perFlow policies: the others flag no flow): series of new
// names start at zero, series of names no longer present are deleted.
func (m *Metrics) SetPolicies(names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := make(map[string]bool, len(names))
	for _, n := range names {
		keep[n] = true
	}
	for n := range m.policies {
		if !keep[n] {
			for _, v := range m.perPolicy() {
				v.DeleteLabelValues(n)
			}
		}
	}
	for n := range keep {
		for _, v := range m.perPolicy() {
			v.WithLabelValues(n)
		}
	}
	m.policies = keep
}

func (m *Metrics) perPolicy() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{
		m.FlowsMatched, m.FlowsFlagged, m.FlowsConfirmed, m.FlowsFailed,
		m.FlowsGone, m.FlowsReflagged, m.FlowsEnded, m.FlowsEndedByReset,
	}
}

// buildInfo is ctguard_build_info{version,revision,goversion}, always 1:
// the values "ctguard version" prints.
func buildInfo() prometheus.Collector {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Build information of the running ctguard; always 1.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Commit, "goversion": v.GoVersion},
	})
	g.Set(1)
	return g
}
