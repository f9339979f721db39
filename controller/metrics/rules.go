package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// RuleCounter is one observation of the named nft counter of a ctguard rule.
// Purpose is the rule's ruleset.Purpose: "drop-invalid" (invalid packets
// dropped), "count-invalid" (invalid packets seen) or "count-invalid-rst"
// (RSTs the box itself sent with ct state invalid: the incident's RST).
type RuleCounter struct {
	Policy  string
	Purpose string
	Packets uint64
	Bytes   uint64
}

// SetRuleCounters replaces the nft counter snapshot exported as
// ctguard_nft_rule_packets_total and ctguard_nft_rule_bytes_total
// {policy,purpose}. Entries with the same policy and purpose (one rule per
// address family) are summed. The values are the kernel's: they restart
// from zero when the table is recreated, which Prometheus reads as a
// counter reset.
func (m *Metrics) SetRuleCounters(cs []RuleCounter) {
	m.rules.set(cs)
}

type ruleKey struct{ policy, purpose string }

type ruleValue struct{ packets, bytes uint64 }

// ruleCounters is a prometheus.Collector over the last snapshot.
type ruleCounters struct {
	packets, bytes *prometheus.Desc

	mu   sync.Mutex
	snap map[ruleKey]ruleValue
}

func newRuleCounters() *ruleCounters {
	labels := []string{"policy", "purpose"}
	return &ruleCounters{
		packets: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "nft_rule", "packets_total"),
			"Packets counted by the named nft counter of a ctguard rule.", labels, nil),
		bytes: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "nft_rule", "bytes_total"),
			"Bytes counted by the named nft counter of a ctguard rule.", labels, nil),
		snap: map[ruleKey]ruleValue{},
	}
}

func (r *ruleCounters) set(cs []RuleCounter) {
	snap := make(map[ruleKey]ruleValue, len(cs))
	for _, c := range cs {
		k := ruleKey{c.Policy, c.Purpose}
		v := snap[k]
		v.packets += c.Packets
		v.bytes += c.Bytes
		snap[k] = v
	}
	r.mu.Lock()
	r.snap = snap
	r.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (r *ruleCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.packets
	ch <- r.bytes
}

// Collect implements prometheus.Collector.
func (r *ruleCounters) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.snap {
		ch <- prometheus.MustNewConstMetric(r.packets, prometheus.CounterValue, float64(v.packets), k.policy, k.purpose)
		ch <- prometheus.MustNewConstMetric(r.bytes, prometheus.CounterValue, float64(v.bytes), k.policy, k.purpose)
	}
}
