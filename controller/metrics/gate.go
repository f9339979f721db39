package metrics

import "github.com/prometheus/client_golang/prometheus"

// Gate states, the values of GateState.
const (
	GateOff       = 0 // no gated policy, or not started
	GateListening = 1 // the gate listens on its queue
	GateFallback  = 2 // the gate cannot run: gate policies run guard rules
)

// GateMetrics are the handshake gate's metrics.
type GateMetrics struct {
	// State is GateOff, GateListening or GateFallback (ctguard_gate_state).
	State prometheus.Gauge
	// Packets counts queued SYN-ACKs by what the gate did with them
	// (ctguard_gate_packets_total{result}): result is "queued" for every
	// packet, then one of flagged, already_liberal, not_selected, gone,
	// errors (accepted unflagged); receive_errors counts queue overflows.
	Packets *prometheus.CounterVec
	// BatchSize observes how many packets the gate handled together
	// (ctguard_gate_batch_size).
	BatchSize prometheus.Histogram
	// Latency observes, per packet, the time from the gate reading it to
	// its accept verdict: what the gate adds to connection setup, besides
	// the wait of a SYN-ACK that arrived during a hold
	// (ctguard_gate_latency_seconds).
	Latency prometheus.Histogram
	// Hold observes each hold of the gate under load (--gate-hold), as
	// long as it lasted: the most a SYN-ACK arriving meanwhile waited
	// before the gate read it (ctguard_gate_hold_seconds).
	Hold prometheus.Histogram
}

func newGateMetrics() GateMetrics {
	return GateMetrics{
		State: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "gate_state",
			Help: "Handshake gate: 0 off, 1 listening, 2 fallen back to guard rules (no NFQUEUE)."}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "gate_packets_total",
			Help: "SYN-ACKs the handshake gate handled, by result (every packet is accepted)."}, []string{"result"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "gate_batch_size",
			Help: "Packets the handshake gate handled in one batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}), // 1 .. 128
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "gate_latency_seconds",
			Help:    "Time from the gate reading a SYN-ACK to accepting it.",
			Buckets: prometheus.ExponentialBucketsRange(5e-6, 0.1, 15)}), // 5µs .. 100ms
		Hold: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "gate_hold_seconds",
			Help:    "How long the handshake gate held its queue under load before reading it again.",
			Buckets: prometheus.ExponentialBucketsRange(25e-6, 0.02, 11)}), // 25µs .. 20ms
	}
}

func (g GateMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.State, g.Packets, g.BatchSize, g.Latency, g.Hold}
}
