package metrics

import "github.com/prometheus/client_golang/prometheus"

// Incidents are the metrics of the incident ring of "ctguard run".
type Incidents struct {
	// Total counts incidents by each policy whose scope covers the flow
	// and its workaround; an incident no policy covers counts once with
	// policy "" and workaround "none" (ctguard_incidents_total{policy,
	// workaround}). No per-connection labels: the connections are in
	// "ctguard status".
	Total *prometheus.CounterVec
}

// EvidenceStats reads the evidence log's delivery counters.
type EvidenceStats func() (logged, lost, overruns uint64)

// NewIncidents registers the incident metrics on m's registry, and the
// evidence log's counters read from stats: ctguard_evidence_logged_total
// and ctguard_evidence_lost_total{reason="sequence_gap"|"overrun"}.
func (m *Metrics) NewIncidents(stats EvidenceStats) *Incidents {
	in := &Incidents{Total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "incidents_total",
		Help: "Connections reset because conntrack could not track a server's segment, by covering policy and its workaround (none: no policy covers the flow).",
	}, []string{"policy", "workaround"})}
	logged := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace, Name: "evidence_logged_total",
		Help: "Packets the evidence rules logged and ctguard read (a sample: the rules log at most 100 a second per hook).",
	}, func() float64 { l, _, _ := stats(); return float64(l) })
	gaps := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace, Name: "evidence_lost_total", ConstLabels: prometheus.Labels{"reason": "sequence_gap"},
		Help: "Evidence log messages lost: sequence_gap counts messages the kernel could not deliver, overrun receive buffer overruns.",
	}, func() float64 { _, l, _ := stats(); return float64(l) })
	overruns := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: Namespace, Name: "evidence_lost_total", ConstLabels: prometheus.Labels{"reason": "overrun"},
		Help: "Evidence log messages lost: sequence_gap counts messages the kernel could not deliver, overrun receive buffer overruns.",
	}, func() float64 { _, _, o := stats(); return float64(o) })
	m.Registry.MustRegister(in.Total, logged, gaps, overruns)
	return in
}
