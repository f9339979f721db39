package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ctguard/ctguard/controller/perflow"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics from h and parses the text exposition.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// value returns the counter or gauge value of the series of family name
// whose labels include want; ok is false if there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	for _, m := range fams[name].GetMetric() {
		got := labelsOf(m)
		match := true
		for k, wv := range want {
			if got[k] != wv {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestFamilies(t *testing.T) {
	m := New()
	m.SetPolicies([]string{"node-masquerade"})
	m.SetRuleCounters([]RuleCounter{{Policy: "edge", Purpose: "drop-invalid", Packets: 1, Bytes: 60}})
	m.FlagLatency.Observe(0.0001)
	m.ReconcileDuration.Observe(0.01)
	m.SetPoliciesInForce([]PolicyInForce{{Name: "edge", Workaround: "dropInvalid"}})
	m.ReadKernelAtScrape(func() (KernelState, error) {
		return KernelState{Rules: []RuleCounter{{Policy: "edge", Purpose: "drop-invalid", Packets: 1, Bytes: 60}}, TablePresent: true}, nil
	})
	fams := scrape(t, m.Handler(nil))

	tests := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"ctguard_reconcile_runs_total", dto.MetricType_COUNTER, nil},
		{"ctguard_reconcile_errors_total", dto.MetricType_COUNTER, nil},
		{"ctguard_reconcile_duration_seconds", dto.MetricType_HISTOGRAM, nil},
		{"ctguard_drift_repairs_total", dto.MetricType_COUNTER, []string{"kind"}},
		{"ctguard_policy_generation", dto.MetricType_GAUGE, nil},
		{"ctguard_policy_load_errors_total", dto.MetricType_COUNTER, nil},
		{"ctguard_policy_last_reload_success_timestamp_seconds", dto.MetricType_GAUGE, nil},
		{"ctguard_flows_seen_total", dto.MetricType_COUNTER, nil},
		{"ctguard_flows_matched_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_flagged_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_confirmed_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_failed_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_gone_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_reflagged_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flag_latency_seconds", dto.MetricType_HISTOGRAM, nil},
		{"ctguard_events_lost_total", dto.MetricType_COUNTER, nil},
		{"ctguard_resyncs_total", dto.MetricType_COUNTER, nil},
		{"ctguard_flows_ended_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_flows_ended_by_reset_total", dto.MetricType_COUNTER, []string{"policy"}},
		{"ctguard_nft_rule_packets_total", dto.MetricType_COUNTER, []string{"policy", "purpose"}},
		{"ctguard_nft_rule_bytes_total", dto.MetricType_COUNTER, []string{"policy", "purpose"}},
		{"ctguard_build_info", dto.MetricType_GAUGE, []string{"goversion", "revision", "version"}},
		{"ctguard_reconcile_failing", dto.MetricType_GAUGE, nil},
		{"ctguard_policy_source_rejected", dto.MetricType_GAUGE, nil},
		{"ctguard_policy_info", dto.MetricType_GAUGE, []string{"policy", "scope", "workaround"}},
		{"ctguard_drift_present", dto.MetricType_GAUGE, nil},
		{"ctguard_table_present", dto.MetricType_GAUGE, nil},
		{"ctguard_sysctl_be_liberal", dto.MetricType_GAUGE, nil},
		{"ctguard_kernel_read_errors_total", dto.MetricType_COUNTER, nil},
		{"go_goroutines", dto.MetricType_GAUGE, nil},
		{"process_start_time_seconds", dto.MetricType_GAUGE, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := fams[tt.name]
			if !ok {
				t.Fatalf("family missing")
			}
			if f.GetType() != tt.typ {
				t.Errorf("type = %v, want %v", f.GetType(), tt.typ)
			}
			if f.GetHelp() == "" {
				t.Errorf("no help text")
			}
			for _, m := range f.GetMetric() {
				var names []string
				for k := range labelsOf(m) {
					names = append(names, k)
				}
				slices.Sort(names)
				if !slices.Equal(names, tt.labels) {
					t.Errorf("labels = %v, want %v", names, tt.labels)
				}
			}
		})
	}
}

func TestDriftKindsStartAtZero(t *testing.T) {
	fams := scrape(t, New().Handler(nil))
	for _, kind := range []string{DriftTableMissing, DriftTableChanged, DriftSysctl} {
		if v, ok := value(fams, "ctguard_drift_repairs_total", map[string]string{"kind": kind}); !ok || v != 0 {
			t.Errorf("drift_repairs_total{kind=%q} = %v, %v; want 0, true", kind, v, ok)
		}
	}
}

func TestFlagLatencyBuckets(t *testing.T) {
	m := New()
	m.FlagLatency.Observe(0.0001)
	b := scrape(t, m.Handler(nil))["ctguard_flag_latency_seconds"].GetMetric()[0].GetHistogram().GetBucket()
	first, last := b[0].GetUpperBound(), b[len(b)-2].GetUpperBound() // b[len(b)-1] is +Inf
	if first != 50e-6 || last < 0.999 || last > 1.001 {
		t.Errorf("buckets span %g..%g, want 5e-05..1", first, last)
	}
}

func TestSetPolicies(t *testing.T) {
	m := New()
	m.SetPolicies([]string{"a", "b"})
	m.Flow(perflow.Flagged, "a").Add(3)
	m.SetPolicies([]string{"b", "c"})
	fams := scrape(t, m.Handler(nil))

	tests := []struct {
		policy string
		want   bool
	}{{"a", false}, {"b", true}, {"c", true}}
	for _, tt := range tests {
		for _, name := range []string{"ctguard_flows_flagged_total", "ctguard_flows_ended_by_reset_total"} {
			_, ok := value(fams, name, map[string]string{"policy": tt.policy})
			if ok != tt.want {
				t.Errorf("%s{policy=%q} present = %v, want %v", name, tt.policy, ok, tt.want)
			}
		}
	}
}

func TestRuleCounters(t *testing.T) {
	m := New()
	m.SetRuleCounters([]RuleCounter{
		{Policy: "old", Purpose: "count-invalid", Packets: 9, Bytes: 900},
	})
	m.SetRuleCounters([]RuleCounter{
		{Policy: "edge", Purpose: "drop-invalid", Packets: 2, Bytes: 120},
		{Policy: "edge", Purpose: "drop-invalid", Packets: 3, Bytes: 180}, // the IPv6 rule
		{Policy: "nat", Purpose: "count-invalid-rst", Packets: 1, Bytes: 40},
	})
	fams := scrape(t, m.Handler(nil))

	tests := []struct {
		name, policy, purpose string
		want                  float64
		present               bool
	}{
		{"ctguard_nft_rule_packets_total", "edge", "drop-invalid", 5, true},
		{"ctguard_nft_rule_bytes_total", "edge", "drop-invalid", 300, true},
		{"ctguard_nft_rule_packets_total", "nat", "count-invalid-rst", 1, true},
		{"ctguard_nft_rule_packets_total", "old", "count-invalid", 0, false},
	}
	for _, tt := range tests {
		v, ok := value(fams, tt.name, map[string]string{"policy": tt.policy, "purpose": tt.purpose})
		if ok != tt.present || v != tt.want {
			t.Errorf("%s{%s,%s} = %v, %v; want %v, %v", tt.name, tt.policy, tt.purpose, v, ok, tt.want, tt.present)
		}
	}
}

func TestObserveReconcile(t *testing.T) {
	m := New()
	m.ObserveReconcile(10*time.Millisecond, nil)
	m.ObserveReconcile(20*time.Millisecond, errors.New("boom"))
	fams := scrape(t, m.Handler(nil))
	if v, _ := value(fams, "ctguard_reconcile_runs_total", nil); v != 2 {
		t.Errorf("runs = %v, want 2", v)
	}
	if v, _ := value(fams, "ctguard_reconcile_errors_total", nil); v != 1 {
		t.Errorf("errors = %v, want 1", v)
	}
	if n := fams["ctguard_reconcile_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 2 {
		t.Errorf("duration samples = %d, want 2", n)
	}
}

func TestRegistriesArePrivate(t *testing.T) {
	a, b := New(), New()
	a.Flow(perflow.EventsLost, "").Inc()
	if v, _ := value(scrape(t, b.Handler(nil)), "ctguard_events_lost_total", nil); v != 0 {
		t.Errorf("second registry sees first's counter: %v", v)
	}
}

// TestKernelReadAtScrape: scrapes read the kernel (at most once a second),
// a failed read keeps the last values and is counted, and the reconcile
// snapshot gives way to the scrape-time read.
func TestKernelReadAtScrape(t *testing.T) {
	m := New()
	m.SetRuleCounters([]RuleCounter{{Policy: "edge", Purpose: "count-invalid-rst", Packets: 1}})
	reads, fail := 0, false
	m.ReadKernelAtScrape(func() (KernelState, error) {
		reads++
		if fail {
			return KernelState{}, errors.New("netlink: EBUSY")
		}
		return KernelState{Rules: []RuleCounter{
			{Policy: "edge", Purpose: "count-invalid-rst", Packets: 5},
			{Policy: "edge", Purpose: "count-invalid-rst", Packets: 2}, // the IPv6 rule
		}, TablePresent: true, Drift: true, BeLiberal: 1}, nil
	})
	fams := scrape(t, m.Handler(nil))
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if v, ok := value(fams, name, labels); !ok || v != want {
			t.Errorf("%s%v = %v, %v; want %v", name, labels, v, ok, want)
		}
	}
	rst := map[string]string{"policy": "edge", "purpose": "count-invalid-rst"}
	check("ctguard_nft_rule_packets_total", rst, 7)
	check("ctguard_drift_present", nil, 1)
	check("ctguard_table_present", nil, 1)
	check("ctguard_sysctl_be_liberal", nil, 1)
	check("ctguard_kernel_read_errors_total", nil, 0)
	fams = scrape(t, m.Handler(nil)) // within a second: no second read
	if reads != 1 {
		t.Fatalf("%d reads for two scrapes within a second", reads)
	}
	m.rules.readAt = time.Time{}
	fail = true
	fams = scrape(t, m.Handler(nil))
	check("ctguard_nft_rule_packets_total", rst, 7)
	check("ctguard_drift_present", nil, 1)
	check("ctguard_kernel_read_errors_total", nil, 1)
}
