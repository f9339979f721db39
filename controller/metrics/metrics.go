// Package metrics defines ctguard's Prometheus metrics on a private registry
// and serves them, with liveness and readiness endpoints, over HTTP.
package metrics

import (
	"sync"
	"time"

	"github.com/ctguard/ctguard/controller/perflow"
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

	// Flows holds the per-flow engine's counters, indexed by
	// perflow.Counter and derived from perflow.Counters: each is
	// ctguard_<Metric>, with a "policy" label when PerPolicy (e.g.
	// ctguard_flows_flagged_total{policy}); see Flow.
	Flows [perflow.NumCounters]*prometheus.CounterVec
	// FlagLatency observes the time from a flow's event to its flag update
	// being acknowledged, 50µs to 1s (ctguard_flag_latency_seconds).
	FlagLatency prometheus.Histogram

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

		FlagLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "flag_latency_seconds",
			Help:    "Time from a flow's conntrack event to its acknowledged flag update.",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 1, 15), // 50µs .. 1s, ~x2
		}),

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
	for i, c := range perflow.Counters {
		var labels []string
		if c.PerPolicy {
			labels = []string{"policy"}
		}
		m.Flows[i] = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: c.Metric, Help: c.Help}, labels)
		if !c.PerPolicy {
			m.Flows[i].WithLabelValues() // exported from the start
		}
		m.Registry.MustRegister(m.Flows[i])
	}
	m.Registry.MustRegister(
		m.ReconcileRuns, m.ReconcileErrors, m.ReconcileDuration, m.DriftRepairs,
		m.PolicyGeneration, m.PolicyLoadErrors, m.LastReloadSuccess,
		m.FlagLatency,
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
	var vs []*prometheus.CounterVec
	for i, c := range perflow.Counters {
		if c.PerPolicy {
			vs = append(vs, m.Flows[i])
		}
	}
	return vs
}

// Flow returns the series of engine counter c: the policy's for a
// per-policy counter, the engine-wide one (policy ignored) otherwise.
func (m *Metrics) Flow(c perflow.Counter, policy string) prometheus.Counter {
	if perflow.Counters[c].PerPolicy {
		return m.Flows[c].WithLabelValues(policy)
	}
	return m.Flows[c].WithLabelValues()
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
