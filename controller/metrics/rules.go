package metrics

import (
	"sync"
	"time"

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

// KernelState is what ctguard's metrics read from the kernel at each
// scrape (see ReadKernelAtScrape).
type KernelState struct {
	// Rules are the named nft counters of ctguard's rules.
	Rules []RuleCounter
	// TablePresent: table inet ctguard exists. Drift: it or the sysctl
	// differs from the revision in force.
	TablePresent, Drift bool
	// BeLiberal is net.netfilter.nf_conntrack_tcp_be_liberal.
	BeLiberal int
}

// scrapeReadEvery bounds how often scrapes read the kernel; scrapes within
// it share the last read.
const scrapeReadEvery = time.Second

// ReadKernelAtScrape makes scrapes read the rule counters, the table's
// presence and drift, and the global sysctl from the kernel with read (at
// most once a second), instead of showing the counters of the last
// reconcile (SetRuleCounters). A failed read counts in
// ctguard_kernel_read_errors_total, and the scrape shows the last values.
func (m *Metrics) ReadKernelAtScrape(read func() (KernelState, error)) {
	m.rules.mu.Lock()
	m.rules.read = read
	m.rules.mu.Unlock()
}

type ruleKey struct{ policy, purpose string }

type ruleValue struct{ packets, bytes uint64 }

// ruleCounters is a prometheus.Collector over the last snapshot of the
// rule counters and, once reads at scrape time are set, of the kernel
// state gauges.
type ruleCounters struct {
	packets, bytes                       *prometheus.Desc
	drift, tablePresent, beLiberal, errs *prometheus.Desc

	mu       sync.Mutex
	snap     map[ruleKey]ruleValue
	read     func() (KernelState, error)
	readAt   time.Time
	state    *KernelState // of the last good read
	readErrs uint64
}

func newRuleCounters() *ruleCounters {
	labels := []string{"policy", "purpose"}
	desc := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &ruleCounters{
		packets:      desc("nft_rule_packets_total", "Packets counted by the named nft counter of a ctguard rule.", labels),
		bytes:        desc("nft_rule_bytes_total", "Bytes counted by the named nft counter of a ctguard rule.", labels),
		drift:        desc("drift_present", "1 while table inet ctguard or the global sysctl differs from the revision in force (read at scrape time).", nil),
		tablePresent: desc("table_present", "1 while table inet ctguard exists (read at scrape time).", nil),
		beLiberal:    desc("sysctl_be_liberal", "net.netfilter.nf_conntrack_tcp_be_liberal (read at scrape time).", nil),
		errs:         desc("kernel_read_errors_total", "Scrape-time kernel reads that failed; the scrape showed the last values.", nil),
		snap:         map[ruleKey]ruleValue{},
	}
}

func summed(cs []RuleCounter) map[ruleKey]ruleValue {
	snap := make(map[ruleKey]ruleValue, len(cs))
	for _, c := range cs {
		k := ruleKey{c.Policy, c.Purpose}
		v := snap[k]
		v.packets += c.Packets
		v.bytes += c.Bytes
		snap[k] = v
	}
	return snap
}

func (r *ruleCounters) set(cs []RuleCounter) {
	snap := summed(cs)
	r.mu.Lock()
	r.snap = snap
	r.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (r *ruleCounters) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{r.packets, r.bytes, r.drift, r.tablePresent, r.beLiberal, r.errs} {
		ch <- d
	}
}

// refresh reads the kernel when reads are set and the last one is old.
// The caller holds r.mu.
func (r *ruleCounters) refresh(now time.Time) {
	if r.read == nil || now.Sub(r.readAt) < scrapeReadEvery {
		return
	}
	r.readAt = now
	st, err := r.read()
	if err != nil {
		r.readErrs++
		return
	}
	r.state = &st
	r.snap = summed(st.Rules)
}

// Collect implements prometheus.Collector.
func (r *ruleCounters) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh(time.Now())
	for k, v := range r.snap {
		ch <- prometheus.MustNewConstMetric(r.packets, prometheus.CounterValue, float64(v.packets), k.policy, k.purpose)
		ch <- prometheus.MustNewConstMetric(r.bytes, prometheus.CounterValue, float64(v.bytes), k.policy, k.purpose)
	}
	if r.read == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(r.errs, prometheus.CounterValue, float64(r.readErrs))
	if st := r.state; st != nil {
		ch <- prometheus.MustNewConstMetric(r.drift, prometheus.GaugeValue, boolValue(st.Drift))
		ch <- prometheus.MustNewConstMetric(r.tablePresent, prometheus.GaugeValue, boolValue(st.TablePresent))
		ch <- prometheus.MustNewConstMetric(r.beLiberal, prometheus.GaugeValue, float64(st.BeLiberal))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
